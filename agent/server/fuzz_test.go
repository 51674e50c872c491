package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type failingAttester struct{}

func (failingAttester) TEE() string { return "sim" }
func (failingAttester) Evidence(context.Context, [64]byte) (*unseal.Evidence, error) {
	return nil, errors.New("no TEE in fuzzing")
}

// fuzzServer returns an unsealed server over the fake backend whose containers run `true`.
func fuzzServer(f *testing.F) *Server {
	srv, err := New(Config{Attester: failingAttester{}, Backend: &fakeBackend{}, TLSDir: f.TempDir(), Logger: quiet,
		SysBlock: f.TempDir(), DevDir: f.TempDir(), DeviceWait: time.Millisecond, // no disk: AttachVolume waits briefly
		OpenVolume: func(context.Context, VolumeRequest) (*OpenedVolume, error) {
			return nil, errors.New("fuzz: no volumes")
		},
		Generations: func(*unseal.VolumeAccess) (Generations, error) { return fakeGenerations{}, nil }})
	if err != nil {
		f.Fatal(err)
	}
	sp := &spec.Spec{
		Version: spec.Version, Workload: "w",
		Containers: []spec.Container{
			{Name: "app", Image: "r/app@sha256:" + strings.Repeat("a", 64), Command: []string{"true"}},
			{Name: "in", Image: "r/in@sha256:" + strings.Repeat("b", 64), Command: []string{"true"}, Stdin: true},
		},
		Volumes: []spec.Volume{{Name: "data", Kind: spec.VolumeEncrypted, Claim: &spec.Claim{Namespace: "ns",
			Template: "data", StatefulSet: "web", Mode: spec.VolumeModeFilesystem, SizeBytes: spec.MinVolumeBytes}}},
		Policy: spec.Policy{Logs: spec.LogsAllow, Exec: []spec.ExecRule{{Container: "app", Argv: []string{"true"}}}},
	}
	pod, _ := srv.cfg.Backend.StartPod(context.Background(), sp, PodOptions{})
	srv.res = &unseal.Result{Spec: sp, Volumes: &unseal.VolumeAccess{Secret: make([]byte, 32), Token: "t"}}
	srv.podName = "web-0"
	srv.pod = pod
	return srv
}

// fuzzRequest decodes data as a request of type T (the ttrpc decoder: proto.Unmarshal) and
// hands it to the server method; nothing may panic or hang.
func fuzzRequest[T proto.Message](f *testing.F, newReq func() T, seeds []T, call func(*Server, context.Context, T) error) {
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x03, 'a', 'p', 'p'})
	f.Add([]byte{0xff, 0xff})
	srv := fuzzServer(f)
	sealedSrv, _ := New(Config{Attester: failingAttester{}, Backend: &fakeBackend{}, TLSDir: f.TempDir(), Logger: quiet})
	f.Fuzz(func(t *testing.T, data []byte) {
		req := newReq()
		if err := proto.Unmarshal(data, req); err != nil {
			return
		}
		for _, s := range []*Server{srv, sealedSrv} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			_ = call(s, ctx, req)
			cancel()
		}
	})
}

func FuzzUnsealRequest(f *testing.F) {
	fuzzRequest(f, func() *api.UnsealRequest { return &api.UnsealRequest{} },
		[]*api.UnsealRequest{{Envelope: []byte(`{"header":{"version":1}}`), HostValues: map[string]string{"a": "b"}, Network: &api.NetworkConfig{Hostname: "h"}}},
		func(s *Server, ctx context.Context, r *api.UnsealRequest) error {
			_, err := s.Unseal(ctx, r)
			return err
		})
}

func FuzzCreateContainerRequest(f *testing.F) {
	fuzzRequest(f, func() *api.CreateContainerRequest { return &api.CreateContainerRequest{} },
		[]*api.CreateContainerRequest{{Name: "app"}, {Name: "in", Stdin: true}, {Name: "app", Tty: true}},
		func(s *Server, ctx context.Context, r *api.CreateContainerRequest) error {
			_, err := s.CreateContainer(ctx, r)
			return err
		})
}

func FuzzContainerRequest(f *testing.F) {
	fuzzRequest(f, func() *api.ContainerRequest { return &api.ContainerRequest{} },
		[]*api.ContainerRequest{{Name: "app"}, {Name: "x"}},
		func(s *Server, ctx context.Context, r *api.ContainerRequest) error {
			if _, err := s.StartContainer(ctx, r); err != nil {
				return err
			}
			if _, err := s.StatsContainer(ctx, r); err != nil {
				return err
			}
			_, err := s.RemoveContainer(ctx, r)
			return err
		})
}

func FuzzProcessRequest(f *testing.F) {
	fuzzRequest(f, func() *api.ProcessRequest { return &api.ProcessRequest{} },
		[]*api.ProcessRequest{{Name: "app"}, {Name: "app", ExecId: "e1"}},
		func(s *Server, ctx context.Context, r *api.ProcessRequest) error {
			_, _ = s.CloseStdin(ctx, r)
			_, err := s.WaitProcess(ctx, r)
			return err
		})
}

func FuzzSignalProcessRequest(f *testing.F) {
	fuzzRequest(f, func() *api.SignalProcessRequest { return &api.SignalProcessRequest{} },
		[]*api.SignalProcessRequest{{Name: "app", Signal: 15}, {Name: "app", ExecId: "e", Signal: 200}},
		func(s *Server, ctx context.Context, r *api.SignalProcessRequest) error {
			_, err := s.SignalProcess(ctx, r)
			return err
		})
}

func FuzzResizeProcessRequest(f *testing.F) {
	fuzzRequest(f, func() *api.ResizeProcessRequest { return &api.ResizeProcessRequest{} },
		[]*api.ResizeProcessRequest{{Name: "app", Rows: 24, Cols: 80}, {Name: "app", ExecId: "e1", Rows: 1 << 20}},
		func(s *Server, ctx context.Context, r *api.ResizeProcessRequest) error {
			_, err := s.ResizeProcess(ctx, r)
			return err
		})
}

func FuzzExecProcessRequest(f *testing.F) {
	fuzzRequest(f, func() *api.ExecProcessRequest { return &api.ExecProcessRequest{} },
		[]*api.ExecProcessRequest{{Name: "app", ExecId: "e1", Argv: []string{"true"}}, {Name: "app", ExecId: "e2", Argv: []string{"sh"}}},
		func(s *Server, ctx context.Context, r *api.ExecProcessRequest) error {
			_, err := s.ExecProcess(ctx, r)
			return err
		})
}

func FuzzReadStreamRequest(f *testing.F) {
	fuzzRequest(f, func() *api.ReadStreamRequest { return &api.ReadStreamRequest{} },
		[]*api.ReadStreamRequest{{Name: "app", Len: 10}, {Name: "app", ExecId: "e1", Len: 1 << 30}},
		func(s *Server, ctx context.Context, r *api.ReadStreamRequest) error {
			_, _ = s.ReadStdout(ctx, r)
			_, err := s.ReadStderr(ctx, r)
			return err
		})
}

func FuzzWriteStdinRequest(f *testing.F) {
	fuzzRequest(f, func() *api.WriteStdinRequest { return &api.WriteStdinRequest{} },
		[]*api.WriteStdinRequest{{Name: "in", Data: []byte("x")}, {Name: "app", ExecId: "e1"}},
		func(s *Server, ctx context.Context, r *api.WriteStdinRequest) error {
			_, err := s.WriteStdin(ctx, r)
			return err
		})
}

func FuzzPingShutdownRequest(f *testing.F) {
	fuzzRequest(f, func() *api.PingRequest { return &api.PingRequest{} }, []*api.PingRequest{{}},
		func(s *Server, ctx context.Context, r *api.PingRequest) error {
			_, err := s.Ping(ctx, r)
			var sr api.ShutdownRequest
			b, _ := proto.Marshal(r)
			if proto.Unmarshal(b, &sr) == nil {
				_, _ = (&Server{cfg: s.cfg, log: s.log, ctrs: map[string]*ctr{}}).Shutdown(ctx, &sr)
			}
			return err
		})
}

func FuzzAttachVolumeRequest(f *testing.F) {
	fuzzRequest(f, func() *api.AttachVolumeRequest { return &api.AttachVolumeRequest{} },
		[]*api.AttachVolumeRequest{{Name: "data", Serial: "sealpod-0"}, {Name: "data", Serial: "sealpod-99"}, {Name: "nope", Serial: "sealpod-1"}},
		func(s *Server, ctx context.Context, r *api.AttachVolumeRequest) error {
			_, err := s.AttachVolume(ctx, r)
			return err
		})
}

func FuzzUpdateHostFilesRequest(f *testing.F) {
	fuzzRequest(f, func() *api.UpdateHostFilesRequest { return &api.UpdateHostFilesRequest{} },
		[]*api.UpdateHostFilesRequest{{Volume: "creds", Files: []*api.HostFile{{Path: "token", Mode: 0o644, Data: []byte("t")}}},
			{Volume: "kube-api-access-abcde", Files: []*api.HostFile{{Path: "../x"}}}},
		func(s *Server, ctx context.Context, r *api.UpdateHostFilesRequest) error {
			_, err := s.UpdateHostFiles(ctx, r)
			return err
		})
}

// FuzzParseHostEnv: an accepted host environment has only names without '=' or NUL and
// values without NUL, and keeps the last value of each name.
func FuzzParseHostEnv(f *testing.F) {
	f.Add("A=1", "B==2", "A=3")
	f.Add("=x", "\x00", "noeq")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		m, err := parseHostEnv([]string{a, b, c})
		if err != nil {
			return
		}
		for k, v := range m {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("accepted %q=%q", k, v)
			}
		}
		if k, v, _ := strings.Cut(c, "="); m[k] != v {
			t.Fatalf("%q: %q, want the last entry's %q", k, m[k], v)
		}
	})
}
