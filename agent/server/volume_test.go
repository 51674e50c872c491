package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/boot"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/agent/volume"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/simtee/spserver"
)

// volCanary is in every sealed claim field; it must never reach the host or the console.
const volCanary = "zq7volcanary"

// volumeSpec: "data" a Filesystem PVC, "logs" a read-only Filesystem PVC, "www" a
// StatefulSet template of StatefulSet "web"+canary, "raw" a Block PVC, "cache" a tmpfs.
func volumeSpec() *spec.Spec {
	claim := func(c spec.Claim) *spec.Claim {
		c.Namespace, c.SizeBytes = "db", spec.MinVolumeBytes
		if c.Mode == "" {
			c.Mode = spec.VolumeModeFilesystem
		}
		return &c
	}
	return &spec.Spec{
		Version: spec.Version, Workload: "web", Pod: "db/web",
		Containers: []spec.Container{
			{Name: "app", Image: "r.example/app@sha256:" + strings.Repeat("a", 64), Command: []string{"true"},
				Mounts:  []spec.Mount{{Volume: "data", Path: "/data"}, {Volume: "cache", Path: "/cache"}},
				Devices: []spec.Device{{Volume: "raw", Path: "/dev/xvda"}}},
			{Name: "plain", Image: "r.example/app@sha256:" + strings.Repeat("a", 64), Command: []string{"true"},
				Mounts: []spec.Mount{{Volume: "cache", Path: "/cache"}}},
		},
		Volumes: []spec.Volume{
			{Name: "data", Kind: spec.VolumeEncrypted, Claim: claim(spec.Claim{ClaimName: "data-" + volCanary})},
			{Name: "logs", Kind: spec.VolumeEncrypted, Claim: claim(spec.Claim{ClaimName: "logs", ReadOnly: true})},
			{Name: "www", Kind: spec.VolumeEncrypted, Claim: claim(spec.Claim{Template: "www", StatefulSet: "web" + volCanary})},
			{Name: "raw", Kind: spec.VolumeEncrypted, Claim: claim(spec.Claim{ClaimName: "raw", Mode: spec.VolumeModeBlock})},
			{Name: "cache", Kind: spec.VolumeTmpfs},
		},
		Identity: spec.Identity{SANs: []string{"web.db.svc"}, TLSDir: spec.DefaultTLSDir},
		Policy:   spec.Policy{Logs: spec.LogsAllow},
	}
}

// fakeSys is a sysfs block directory and a /dev for AttachVolume.
type fakeSys struct{ sys, dev string }

func newFakeSys(t *testing.T) *fakeSys {
	t.Helper()
	f := &fakeSys{sys: filepath.Join(t.TempDir(), "block"), dev: t.TempDir()}
	if err := os.Mkdir(f.sys, 0o755); err != nil {
		t.Fatal(err)
	}
	f.plug(t, "loop0", "sealpod-1") // not a virtio disk: never chosen
	return f
}

// plug adds disk name with serial (as the kernel shows a hot-plugged virtio-blk device).
func (f *fakeSys) plug(t *testing.T, name, serial string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(f.sys, name), 0o755); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(filepath.Join(f.dev, name), nil, 0o600); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(filepath.Join(f.sys, name, "serial"), []byte(serial+"\n"), 0o444); err != nil {
		t.Error(err)
	}
}

// fakeOpener records the requests and opens nothing.
type fakeOpener struct {
	mu     sync.Mutex
	reqs   []VolumeRequest
	err    error
	closed []string
}

func (o *fakeOpener) open(_ context.Context, r VolumeRequest) (*OpenedVolume, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.Secret = bytes.Clone(r.Secret)
	o.reqs = append(o.reqs, r)
	if o.err != nil {
		return nil, o.err
	}
	p := r.MountPoint
	if p == "" {
		p = "/dev/dm-" + r.Name
	}
	return &OpenedVolume{Path: p, Close: func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.closed = append(o.closed, r.Name)
		return nil
	}}, nil
}

func (o *fakeOpener) requests() []VolumeRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]VolumeRequest(nil), o.reqs...)
}

type fakeGenerations struct{ token string }

func (fakeGenerations) Begin(context.Context, string) (uint64, uint64, error) { return 0, 1, nil }
func (fakeGenerations) Commit(context.Context, string, uint64) error          { return nil }

type volumeHarness struct {
	srv    *Server
	sys    *fakeSys
	opener *fakeOpener
	pod    *fakePod
	secret []byte
}

// newVolumeServer is a server unsealed (as Unseal leaves it) for sp with a volume secret,
// the host values hv, a fake sysfs, opener and generations.
func newVolumeServer(t *testing.T, sp *spec.Spec, hv map[string]string, log *slog.Logger) *volumeHarness {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &volumeHarness{sys: newFakeSys(t), opener: &fakeOpener{}, secret: bytes.Repeat([]byte{0x5a}, 32)}
	be := &fakeBackend{}
	srv, err := New(Config{
		Attester: unseal.SNPAttester{}, Backend: be, TLSDir: filepath.Join(t.TempDir(), "tls"), Logger: log,
		SysBlock: h.sys.sys, DevDir: h.sys.dev, VolumeDir: "/run/test/volumes", DeviceWait: 300 * time.Millisecond,
		OpenVolume:  h.opener.open,
		Generations: func(a *unseal.VolumeAccess) (Generations, error) { return fakeGenerations{token: a.Token}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	res := &unseal.Result{Spec: sp, Identity: &unseal.Identity{CertPEM: []byte("c"), KeyPEM: []byte("k"), CAPEM: []byte("a")},
		Volumes: &unseal.VolumeAccess{Secret: bytes.Clone(h.secret), Token: "tok"}}
	if err := checkHostValues(hv); err != nil {
		t.Fatal(err)
	}
	if err := srv.startPod(context.Background(), res, hv); err != nil {
		t.Fatal(err)
	}
	h.srv, h.pod = srv, be.lastPod
	return h
}

func attach(h *volumeHarness, name, serial string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := h.srv.AttachVolume(ctx, &api.AttachVolumeRequest{Name: name, Serial: serial})
	return err
}

func TestAttachVolumeValidates(t *testing.T) {
	hv := map[string]string{podNameKey: "web" + volCanary + "-0"}
	for _, tc := range []struct {
		name, vol, serial string
		code              codes.Code
		inMsg             string
	}{
		{name: "name not a label", vol: "Data/../x", serial: "sealpod-0", code: codes.InvalidArgument, inMsg: "not a DNS-1123 label"},
		{name: "empty name", vol: "", serial: "sealpod-0", code: codes.InvalidArgument, inMsg: "name"},
		{name: "serial other prefix", vol: "data", serial: "vdb", code: codes.InvalidArgument, inMsg: "serial"},
		{name: "serial three digits", vol: "data", serial: "sealpod-100", code: codes.InvalidArgument, inMsg: "serial"},
		{name: "serial with newline", vol: "data", serial: "sealpod-1\n", code: codes.InvalidArgument, inMsg: "serial"},
		{name: "serial path", vol: "data", serial: "../../sealpod-1", code: codes.InvalidArgument, inMsg: "serial"},
		{name: "unknown volume", vol: "nope", serial: "sealpod-0", code: codes.NotFound, inMsg: "not an encrypted volume"},
		{name: "tmpfs volume", vol: "cache", serial: "sealpod-0", code: codes.NotFound, inMsg: "not an encrypted volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newVolumeServer(t, volumeSpec(), hv, nil)
			h.sys.plug(t, "vdb", "sealpod-0")
			wantCode(t, attach(h, tc.vol, tc.serial), tc.code, tc.inMsg)
			if n := len(h.opener.requests()); n != 0 {
				t.Fatalf("opener called %d times for a refused request", n)
			}
		})
	}
	t.Run("before unseal", func(t *testing.T) {
		srv, err := New(Config{Attester: unseal.SNPAttester{}, Backend: &fakeBackend{}, TLSDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = srv.AttachVolume(context.Background(), &api.AttachVolumeRequest{Name: "data", Serial: "sealpod-0"})
		wantCode(t, err, codes.FailedPrecondition, "Unseal first")
	})
}

// AttachVolume finds the device by serial (only vd* disks), derives the claim identity from
// the sealed claim and the host's pod name, opens with the volume secret, the broker
// generations and the mount point, hands the volume to the pod, and is idempotent per name.
func TestAttachVolumeOpens(t *testing.T) {
	h := newVolumeServer(t, volumeSpec(), map[string]string{podNameKey: "web" + volCanary + "-3", "fieldRef:metadata.namespace": "db"}, nil)
	h.sys.plug(t, "vdb", "sealpod-0")
	h.sys.plug(t, "vdc", "sealpod-1")
	h.sys.plug(t, "vdd", "sealpod-2")
	h.sys.plug(t, "vde", "sealpod-3")
	for _, a := range []struct{ vol, serial string }{{"data", "sealpod-1"}, {"www", "sealpod-0"}, {"raw", "sealpod-2"}, {"logs", "sealpod-3"}} {
		if err := attach(h, a.vol, a.serial); err != nil {
			t.Fatalf("attach %s: %v", a.vol, err)
		}
	}
	want := []VolumeRequest{
		{Name: "data", Device: filepath.Join(h.sys.dev, "vdc"), Identity: "db/data-" + volCanary, Mode: spec.VolumeModeFilesystem, MountPoint: "/run/test/volumes/data"},
		{Name: "www", Device: filepath.Join(h.sys.dev, "vdb"), Identity: "db/www-web" + volCanary + "-3", Mode: spec.VolumeModeFilesystem, MountPoint: "/run/test/volumes/www"},
		{Name: "raw", Device: filepath.Join(h.sys.dev, "vdd"), Identity: "db/raw", Mode: spec.VolumeModeBlock},
		{Name: "logs", Device: filepath.Join(h.sys.dev, "vde"), Identity: "db/logs", Mode: spec.VolumeModeFilesystem, MountPoint: "/run/test/volumes/logs", ReadOnly: true},
	}
	got := h.opener.requests()
	if len(got) != len(want) {
		t.Fatalf("opener got %d requests, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if !bytes.Equal(g.Secret, h.secret) {
			t.Errorf("%s: secret not the broker's volume secret", w.Name)
		}
		if gen, ok := g.Generations.(fakeGenerations); !ok || gen.token != "tok" {
			t.Errorf("%s: generations %#v, want the broker's with the attest token", w.Name, g.Generations)
		}
		g.Secret, g.Generations = nil, nil
		if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
			t.Errorf("open request\n got %+v\nwant %+v", g, w)
		}
	}
	if v := h.pod.volumes["raw"]; v != (AttachedVolume{Mode: spec.VolumeModeBlock, Path: "/dev/dm-raw"}) {
		t.Errorf("pod got raw as %+v", v)
	}
	if v := h.pod.volumes["logs"]; v != (AttachedVolume{Mode: spec.VolumeModeFilesystem, Path: "/run/test/volumes/logs", ReadOnly: true}) {
		t.Errorf("pod got logs as %+v", v)
	}

	// Idempotent: the same serial again is a no-op; another serial, or a serial another
	// volume has, is refused.
	if err := attach(h, "data", "sealpod-1"); err != nil {
		t.Fatalf("attach data again: %v", err)
	}
	if n := len(h.opener.requests()); n != len(want) {
		t.Fatalf("attach again opened again (%d opens)", n)
	}
	wantCode(t, attach(h, "data", "sealpod-2"), codes.FailedPrecondition, "already attached with serial sealpod-1")

	// Shutdown closes the volumes after the pod.
	if _, err := h.srv.Shutdown(context.Background(), &api.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	if len(h.opener.closed) != len(want) {
		t.Errorf("shutdown closed %v, want all %d volumes", h.opener.closed, len(want))
	}
}

func TestAttachVolumeSerialOfAnotherVolume(t *testing.T) {
	h := newVolumeServer(t, volumeSpec(), nil, nil)
	h.sys.plug(t, "vdb", "sealpod-0")
	if err := attach(h, "data", "sealpod-0"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, attach(h, "raw", "sealpod-0"), codes.FailedPrecondition, "is volume data's")
}

// The device may appear after the call (the hot-plug is asynchronous): AttachVolume waits
// up to DeviceWait, then fails with NotFound.
func TestAttachVolumeWaitsForHotplug(t *testing.T) {
	h := newVolumeServer(t, volumeSpec(), nil, nil)
	go func() {
		time.Sleep(100 * time.Millisecond)
		h.sys.plug(t, "vdb", "sealpod-7")
	}()
	if err := attach(h, "data", "sealpod-7"); err != nil {
		t.Fatalf("attach with a late device: %v", err)
	}
	start := time.Now()
	wantCode(t, attach(h, "raw", "sealpod-8"), codes.NotFound, "no block device with that serial")
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("gave up after %v, before DeviceWait", d)
	}
	// A failed attach can be retried.
	h.sys.plug(t, "vdc", "sealpod-8")
	if err := attach(h, "raw", "sealpod-8"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	// Two disks with one serial: refused.
	h.sys.plug(t, "vdd", "sealpod-9")
	h.sys.plug(t, "vde", "sealpod-9")
	wantCode(t, attach(h, "logs", "sealpod-9"), codes.NotFound, "no block device")
}

// A container that uses an encrypted volume is created only after AttachVolume.
func TestCreateContainerNeedsAttachedVolumes(t *testing.T) {
	h := newVolumeServer(t, volumeSpec(), nil, nil)
	ctx := context.Background()
	if _, err := h.srv.CreateContainer(ctx, &api.CreateContainerRequest{Name: "plain"}); err != nil {
		t.Fatalf("create a container without encrypted volumes: %v", err)
	}
	_, err := h.srv.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
	wantCode(t, err, codes.FailedPrecondition, "encrypted volume not attached data")
	h.sys.plug(t, "vdb", "sealpod-0")
	if err := attach(h, "data", "sealpod-0"); err != nil {
		t.Fatal(err)
	}
	_, err = h.srv.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"})
	wantCode(t, err, codes.FailedPrecondition, "encrypted volume not attached raw")
	h.sys.plug(t, "vdc", "sealpod-1")
	if err := attach(h, "raw", "sealpod-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.srv.CreateContainer(ctx, &api.CreateContainerRequest{Name: "app"}); err != nil {
		t.Fatalf("create after attaching: %v", err)
	}
}

// TestAttachVolumeErrorCanary: every failure reaches the host (status message) and the
// console (the production log handler) as the volume's name and the failure's kind; the
// claim (namespace, claim and StatefulSet names), the identity and the device stay in the
// guest.
func TestAttachVolumeErrorCanary(t *testing.T) {
	detail := func(k error) error {
		return fmt.Errorf("open db/data-%s on /dev/vdb: %w", volCanary, errkind.Withhold(k, errors.New("header generation 3 < 5 "+volCanary)))
	}
	for _, tc := range []struct {
		name    string
		vol     string
		podName string
		openErr error
		code    codes.Code
		kind    string
	}{
		{name: "rollback", vol: "data", openErr: volumeKind(fmt.Errorf("%s: %w", volCanary, volume.ErrRollback)), code: codes.PermissionDenied, kind: "rollback"},
		{name: "wrong identity", vol: "data", openErr: volumeKind(fmt.Errorf("%s: %w", volCanary, volume.ErrWrongIdentity)), code: codes.PermissionDenied, kind: "keys and claim identity"},
		{name: "foreign content", vol: "data", openErr: volumeKind(fmt.Errorf("%s: %w", volCanary, volume.ErrUnknownContent)), code: codes.PermissionDenied, kind: "not a sealed volume"},
		{name: "integrity", vol: "data", openErr: volumeKind(fmt.Errorf("read header %s: %w", volCanary, unix.EILSEQ)), code: codes.PermissionDenied, kind: "integrity check"},
		{name: "read error", vol: "data", openErr: volumeKind(fmt.Errorf("read header %s: %w", volCanary, unix.EIO)), code: codes.PermissionDenied, kind: "integrity check"},
		{name: "broker refuses", vol: "data", openErr: detail(ErrVolumeBroker), code: codes.Unavailable, kind: "key broker"},
		{name: "broker 403", vol: "data", openErr: fmt.Errorf("begin: %w", errkind.Withhold(ErrVolumeBroker, &client.APIError{Status: 403})), code: codes.PermissionDenied, kind: "key broker"},
		{name: "unknown failure", vol: "data", openErr: volumeKind(errors.New("mkfs " + volCanary)), code: codes.Internal, kind: "failed"},
		{name: "pod name not of the StatefulSet", vol: "www", podName: "other-0", code: codes.InvalidArgument, kind: "host pod name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			console := &bytes.Buffer{}
			var mu sync.Mutex
			log := boot.NewConsoleLogger(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return console.Write(p) }), true)
			hv := map[string]string{podNameKey: cmpOr(tc.podName, "web"+volCanary+"-0")}
			h := newVolumeServer(t, volumeSpec(), hv, log)
			h.opener.err = tc.openErr
			h.sys.plug(t, "vdb", "sealpod-0")
			err := attach(h, tc.vol, "sealpod-0")
			wantCode(t, err, tc.code, tc.kind)
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tc.vol) {
				t.Errorf("host sees %q: the volume is not named", msg)
			}
			mu.Lock()
			logs := console.String()
			mu.Unlock()
			for where, text := range map[string]string{"host": msg, "console": logs} {
				for _, bad := range []string{volCanary, "db/", "/dev/vd", "sealpod.io"} {
					if strings.Contains(text, bad) {
						t.Errorf("%s sees %q:\n%s", where, bad, text)
					}
				}
			}
			if !strings.Contains(logs, "attach volume refused") || !strings.Contains(logs, "volume="+tc.vol) || !strings.Contains(logs, tc.kind) {
				t.Errorf("console does not say the attach failed:\n%s", logs)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// fakeVolumeBroker records the broker calls brokerGenerations makes.
type fakeVolumeBroker struct {
	calls []string
	err   error
}

func (b *fakeVolumeBroker) VolumeBegin(_ context.Context, token, v string) (uint64, uint64, error) {
	b.calls = append(b.calls, fmt.Sprintf("begin %s %s", token, v))
	return 4, 5, b.err
}

func (b *fakeVolumeBroker) VolumeCommit(_ context.Context, token, v string, gen uint64) error {
	b.calls = append(b.calls, fmt.Sprintf("commit %s %s %d", token, v, gen))
	return b.err
}

func TestBrokerGenerations(t *testing.T) {
	b := &fakeVolumeBroker{}
	g := brokerGenerations{b: b, token: "tok"}
	ctx := context.Background()
	if c, p, err := g.Begin(ctx, "db/data"); err != nil || c != 4 || p != 5 {
		t.Fatalf("Begin = %d, %d, %v", c, p, err)
	}
	if err := g.Commit(ctx, "db/data", 5); err != nil {
		t.Fatal(err)
	}
	if want := "begin tok db/data|commit tok db/data 5"; strings.Join(b.calls, "|") != want {
		t.Errorf("broker calls %q, want %q", b.calls, want)
	}
	b.err = &client.APIError{Status: 409}
	if _, _, err := g.Begin(ctx, "db/data"); !errors.Is(err, ErrVolumeBroker) || errkind.Text(err) != ErrVolumeBroker.Error() {
		t.Errorf("Begin error %v: want the ErrVolumeBroker kind", err)
	}
	if _, err := BrokerGenerations(&unseal.VolumeAccess{Token: "tok"}); !errors.Is(err, ErrVolumeBroker) {
		t.Errorf("BrokerGenerations without a broker: %v", err)
	}
}

func TestDMName(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, n := range []string{"data", strings.Repeat("b", 40), long, long[:41]} {
		d := dmName(n)
		if len(d) > 40 || (len(n) <= 40 && d != n) {
			t.Errorf("dmName(%q) = %q", n, d)
		}
	}
	if dmName(long) == dmName(long[:41]) {
		t.Error("two long names share a device-mapper name")
	}
}

// TestAttachVolumeWithBroker: after a real Unseal (in-process broker, sim attester), the
// volume opener gets the broker's volume secret and generations that reach the broker with
// the attest token: a second attach of the same claim in a later boot sees the committed
// generation.
func TestAttachVolumeWithBroker(t *testing.T) {
	b := brokertest.Start(t)
	sp := volumeSpec()
	sealed := b.Seal(t, sp, sp.Identity.SANs)
	var gens []string
	opener := func(ctx context.Context, r VolumeRequest) (*OpenedVolume, error) {
		c, p, err := r.Generations.Begin(ctx, r.Identity)
		if err != nil {
			return nil, err
		}
		if err := r.Generations.Commit(ctx, r.Identity, p); err != nil {
			return nil, err
		}
		gens = append(gens, fmt.Sprintf("%s %d->%d secret=%d", r.Identity, c, p, len(r.Secret)))
		return &OpenedVolume{Path: r.MountPoint, Close: func() error { return nil }}, nil
	}
	for i := range 2 {
		guestSP, hostSP := socketpair(t)
		ctx, cancel := context.WithCancel(context.Background())
		go spserver.Serve(ctx, hostSP, b.Signer, launchFor(b, sealed.Envelope), nil)
		sys := newFakeSys(t)
		sys.plug(t, "vdb", "sealpod-0")
		srv, err := New(Config{Attester: unseal.NewSimAttester(guestSP), Backend: &fakeBackend{}, TLSDir: filepath.Join(t.TempDir(), "tls"),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysBlock: sys.sys, DevDir: sys.dev, OpenVolume: opener})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Unseal(ctx, &api.UnsealRequest{Envelope: sealed.Envelope, HostValues: map[string]string{podNameKey: "web-0"}}); err != nil {
			t.Fatalf("boot %d: unseal: %v", i, err)
		}
		if _, err := srv.AttachVolume(ctx, &api.AttachVolumeRequest{Name: "data", Serial: "sealpod-0"}); err != nil {
			t.Fatalf("boot %d: attach: %v", i, err)
		}
		cancel()
	}
	want := []string{"db/data-" + volCanary + " 0->1 secret=32", "db/data-" + volCanary + " 1->2 secret=32"}
	if strings.Join(gens, "|") != strings.Join(want, "|") {
		t.Errorf("generations %q, want %q", gens, want)
	}
}

// Concurrent AttachVolume calls of one volume open it once; the other is told to retry.
func TestAttachVolumeConcurrent(t *testing.T) {
	h := newVolumeServer(t, volumeSpec(), nil, nil)
	h.sys.plug(t, "vdb", "sealpod-0")
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	inner := h.opener.open
	h.srv.cfg.OpenVolume = func(ctx context.Context, r VolumeRequest) (*OpenedVolume, error) {
		entered <- struct{}{}
		<-release
		return inner(ctx, r)
	}
	errs := make(chan error, 2)
	go func() { errs <- attach(h, "data", "sealpod-0") }()
	<-entered
	go func() { errs <- attach(h, "data", "sealpod-0") }()
	second := <-errs
	close(release)
	first := <-errs
	if first != nil {
		t.Fatalf("first attach: %v", first)
	}
	wantCode(t, second, codes.Unavailable, "in progress")
	if n := len(h.opener.requests()); n != 1 {
		t.Fatalf("%d opens, want 1", n)
	}
	if err := attach(h, "data", "sealpod-0"); err != nil {
		t.Fatalf("attach after the first finished: %v", err)
	}
}
