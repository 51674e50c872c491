package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// UpdateHostFiles and CreateContainer's host_env: host input, bounded and checked by syntax
// before the backend sees it; nothing before Unseal.
func TestHostProvidedRequests(t *testing.T) {
	b := brokertest.Start(t)
	sp := sealedSpec(spec.LogsAllow)
	sp.Volumes = append(sp.Volumes, spec.Volume{Name: "creds", Kind: spec.VolumeHostObject, Objects: []spec.ObjectRef{{Kind: "Secret", Name: "db"}}})
	sealed := b.Seal(t, sp, []string{"web.default.svc"})
	h := start(t, b, launchFor(b, sealed.Envelope))
	ctx := context.Background()
	okReq := &api.UpdateHostFilesRequest{Volume: "creds", Files: []*api.HostFile{{Path: "password", Mode: 0o400, Data: []byte("p")}}}
	_, err := h.agent.UpdateHostFiles(ctx, okReq)
	wantCode(t, err, codes.FailedPrecondition, "Unseal first")
	if _, err := h.agent.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{"fieldRef:metadata.name": "web"}}); err != nil {
		t.Fatal(err)
	}
	many := make([]*api.HostFile, api.MaxHostFiles+1)
	for i := range many {
		many[i] = &api.HostFile{Path: fmt.Sprint(i)}
	}
	for _, tc := range []struct {
		name string
		req  *api.UpdateHostFilesRequest
		msg  string
	}{
		{"volume name", &api.UpdateHostFilesRequest{Volume: "../creds"}, "not a DNS-1123 label"},
		{"too many files", &api.UpdateHostFilesRequest{Volume: "creds", Files: many}, "files (max"},
		{"too many bytes", &api.UpdateHostFilesRequest{Volume: "creds", Files: []*api.HostFile{{Path: "a", Data: make([]byte, api.MaxHostFilesBytes+1)}}}, "bytes"},
		{"long path", &api.UpdateHostFilesRequest{Volume: "creds", Files: []*api.HostFile{{Path: strings.Repeat("a", api.MaxHostFilePath+1)}}}, "path longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.agent.UpdateHostFiles(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	if _, err := h.agent.UpdateHostFiles(ctx, okReq); err != nil {
		t.Fatal(err)
	}
	pod := h.backend.lastPod
	if got := pod.hostFiles["creds"]; len(got) != 1 || got[0].Path != "password" || got[0].Mode != 0o400 || string(got[0].Data) != "p" {
		t.Fatalf("backend got %+v", got)
	}

	for _, tc := range []struct {
		name string
		env  []string
		msg  string
	}{
		{"no =", []string{"A"}, "host_env[0]"},
		{"empty name", []string{"=v"}, "host_env[0]"},
		{"NUL", []string{"A=1", "B=\x00"}, "host_env[1]"},
		{"too many", make([]string, api.MaxHostEnv+1), "entries"},
		{"too big", []string{"A=" + strings.Repeat("x", api.MaxHostEnvBytes)}, "bytes"},
	} {
		t.Run("host_env "+tc.name, func(t *testing.T) {
			_, err := h.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: "sleeper", HostEnv: tc.env})
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	if _, err := h.agent.CreateContainer(ctx, &api.CreateContainerRequest{Name: "sleeper", HostEnv: []string{"TOKEN=a=b", "TOKEN=c=d", "PATH=/x"}}); err != nil {
		t.Fatal(err)
	}
	if got := pod.hostEnv["sleeper"]; len(got) != 2 || got["TOKEN"] != "c=d" || got["PATH"] != "/x" {
		t.Fatalf("backend got host env %q", got)
	}
}
