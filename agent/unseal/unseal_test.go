package unseal_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/simtee/spserver"
)

// socketpair returns the two ends of a unix stream socketpair as files (the shape of a
// virtio-serial port on each side).
func socketpair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func testSpec(workload string) *spec.Spec {
	return &spec.Spec{
		Version: spec.Version, Workload: workload, Pod: "default/web",
		Containers: []spec.Container{{Name: "app", Image: "127.0.0.1:5000/app@sha256:" + strings.Repeat("a", 64), Args: []string{"serve"}}},
		Identity:   spec.Identity{SANs: []string{"web.default.svc", "10.0.0.9"}, TLSDir: spec.DefaultTLSDir},
		Policy:     spec.Policy{Logs: spec.LogsAllow},
	}
}

func digestBytes(env []byte) [32]byte { return envelope.Sum(env) }

// tamper flips one base64 character in the middle of the envelope body, keeping the
// encoding canonical.
func tamper(t *testing.T, env []byte) []byte {
	t.Helper()
	i := strings.Index(string(env), `"body":"`) + len(`"body":"`) + 10
	out := slices.Clone(env)
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	if _, err := envelope.ParseHeader(out); err != nil {
		t.Fatalf("tampered envelope no longer parses: %v", err)
	}
	return out
}

func TestUnseal(t *testing.T) {
	b := brokertest.Start(t)
	sans := []string{"web.default.svc", "10.0.0.9"}
	sealed := b.Seal(t, testSpec("web"), sans)
	good := spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(sealed.Envelope)}
	bad := tamper(t, sealed.Envelope)
	otherMeas := b.Measurement
	otherMeas[47] ^= 1
	otherHost := good.HostData
	otherHost[0] ^= 1

	tests := []struct {
		name    string
		env     []byte
		launch  spserver.Launch
		wantErr error
		reason  string // broker reason (APIError) when the broker refuses
		inMsg   string
	}{
		{name: "ok", env: sealed.Envelope, launch: good},
		{name: "envelope changed", env: bad, launch: good, wantErr: unseal.ErrHostData},
		{name: "HOST_DATA changed", env: sealed.Envelope, launch: spserver.Launch{Measurement: b.Measurement, HostData: otherHost}, wantErr: unseal.ErrHostData},
		{name: "envelope and HOST_DATA changed", env: bad, launch: spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(bad)}, reason: "evidence", inMsg: "host_data"},
		{name: "measurement changed", env: sealed.Envelope, launch: spserver.Launch{Measurement: otherMeas, HostData: good.HostData}, reason: "evidence", inMsg: "measurement"},
		{name: "malformed envelope", env: append(slices.Clone(sealed.Envelope), ' '), launch: good, wantErr: envelope.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			guest, host := socketpair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- spserver.Serve(ctx, host, b.Signer, tc.launch, nil) }()
			res, err := unseal.Unseal(ctx, tc.env, unseal.NewSimAttester(guest), unseal.Options{})
			checkUnseal(t, b, res, err, sealed, sans, tc.wantErr, tc.reason, tc.inMsg)
			cancel()
			guest.Close()
			if err := <-served; err != nil {
				t.Fatalf("spserver.Serve: %v", err)
			}
		})
	}
}

// checkUnseal checks Unseal's answer (res, err): with wantErr, an error that is wantErr; with
// reason, the broker's refusal for reason whose message or field mentions inMsg (lower case);
// otherwise success with the result of sealed (checkResult).
func checkUnseal(t *testing.T, b *brokertest.Broker, res *unseal.Result, err error, sealed *brokertest.Sealed, sans []string, wantErr error, reason, inMsg string) {
	t.Helper()
	switch {
	case wantErr != nil:
		if !errors.Is(err, wantErr) {
			t.Fatalf("Unseal: %v, want %v", err, wantErr)
		}
	case reason != "":
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Body.Reason != reason || !strings.Contains(strings.ToLower(ae.Error()+ae.Body.Field), inMsg) {
			t.Fatalf("Unseal: %v, want a broker refusal %q mentioning %q", err, reason, inMsg)
		}
	default:
		if err != nil {
			t.Fatalf("Unseal: %v", err)
		}
		checkResult(t, b, res, sealed, sans)
	}
}

func checkResult(t *testing.T, b *brokertest.Broker, res *unseal.Result, sealed *brokertest.Sealed, sans []string) {
	t.Helper()
	if res.Spec.Workload != "web" || len(res.Spec.Containers) != 1 || res.Spec.Containers[0].Args[0] != "serve" {
		t.Fatalf("opened spec %+v", res.Spec)
	}
	if res.Digest != envelope.Sum(sealed.Envelope) {
		t.Fatal("result digest is not the envelope digest")
	}
	dir := filepath.Join(t.TempDir(), "tls")
	if err := unseal.WriteIdentity(dir, res.Identity); err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, unseal.CertFile))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, unseal.KeyFile))
	var certs []*x509.Certificate
	for rest := certPEM; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) < 2 {
		t.Fatalf("cert.pem holds %d certificates, want leaf and intermediate", len(certs))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(b.State.MeshCA.RootPEM())
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("workload certificate does not verify against the broker's mesh root: %v", err)
	}
	got := append([]string(nil), certs[0].DNSNames...)
	for _, ip := range certs[0].IPAddresses {
		got = append(got, ip.String())
	}
	if !slices.Equal(got, sans) {
		t.Fatalf("certificate SANs %v, want exactly %v", got, sans)
	}
	blk, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !k.(*ecdsa.PrivateKey).PublicKey.Equal(certs[0].PublicKey) {
		t.Fatal("key.pem is not the certificate's key")
	}
}

func TestUnsealWrongTEE(t *testing.T) {
	b := brokertest.Start(t)
	sealed := b.Seal(t, testSpec("web"), []string{"web.default.svc"})
	_, err := unseal.Unseal(context.Background(), sealed.Envelope, unseal.SNPAttester{}, unseal.Options{})
	if !errors.Is(err, unseal.ErrTEE) {
		t.Fatalf("Unseal with an snp attester for a sim envelope: %v, want ErrTEE", err)
	}
}

// BenchmarkUnseal measures the whole guest-side flow (auth, sim evidence over a socketpair,
// attest, key, open, certificate) against a real in-process broker on loopback; sealing
// (attest + unseal + certificate) is to be a small part of pod start (docs/design.md#targets).
func BenchmarkUnseal(b *testing.B) {
	br := brokertest.Start(b)
	sealed := br.Seal(b, testSpec("bench"), []string{"bench.default.svc"})
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	guest, host := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	defer guest.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go spserver.Serve(ctx, host, br.Signer, spserver.Launch{Measurement: br.Measurement, HostData: digestBytes(sealed.Envelope)}, nil)
	att := unseal.NewSimAttester(guest)
	b.ResetTimer()
	for b.Loop() {
		if _, err := unseal.Unseal(ctx, sealed.Envelope, att, unseal.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
