package unseal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/kbs/client"
	"github.com/sealpod/sealpod/simtee/spserver"
)

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("kbs POST /kbs/v1/auth: %w", &net.OpError{Op: "read", Err: syscall.ECONNRESET}), true},
		{io.ErrUnexpectedEOF, true},
		{&client.APIError{Status: 503}, true},
		{&client.APIError{Status: 502}, true},
		{&client.APIError{Status: 429}, true},
		{&client.APIError{Status: 403}, false},
		{&client.APIError{Status: 404}, false},
		{&client.APIError{Status: 500}, false},
		{unseal.ErrHostData, false},
		{errors.New("evidence: bad signature"), false},
	} {
		if got := unseal.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// The broker is down when the guest starts: Unseal keeps retrying from auth and succeeds once
// the broker is reachable.
func TestUnsealRetriesUntilTheBrokerIsBack(t *testing.T) {
	b := brokertest.Start(t)
	// The envelope names a port where nothing listens yet; later a relay to the broker opens
	// there (the broker "comes back").
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	backend := strings.TrimPrefix(b.URL, "https://")
	b.URL = "https://" + addr
	sealed := b.Seal(t, testSpec("web"), []string{"web.default.svc"})

	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), nil))
	guest, host := socketpair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		_ = spserver.Serve(ctx, host, b.Signer, spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(sealed.Envelope)}, nil)
	}()

	go func() {
		time.Sleep(1500 * time.Millisecond)
		relay, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("relay: %v", err)
			return
		}
		t.Cleanup(func() { relay.Close() })
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	res, err := unseal.Unseal(ctx, sealed.Envelope, unseal.NewSimAttester(guest), unseal.Options{Logger: log})
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if res.Spec.Workload != "web" {
		t.Fatalf("spec for %q", res.Spec.Workload)
	}
	mu.Lock()
	n := strings.Count(logs.String(), "key broker unavailable: retrying")
	mu.Unlock()
	if n == 0 {
		t.Fatal("Unseal succeeded without a retry: the broker was not down")
	}
	t.Logf("%d retries", n)

	// With retries off the same outage fails at once, naming the broker.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	down := ln2.Addr().String()
	ln2.Close()
	b.URL = "https://" + down
	sealed = b.Seal(t, testSpec("db"), nil)
	guest2, host2 := socketpair(t)
	go func() {
		_ = spserver.Serve(ctx, host2, b.Signer, spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(sealed.Envelope)}, nil)
	}()
	_, err = unseal.Unseal(ctx, sealed.Envelope, unseal.NewSimAttester(guest2), unseal.Options{RetryFor: -1})
	if err == nil || !unseal.Transient(err) || !strings.Contains(err.Error(), down) {
		t.Fatalf("Unseal with the broker down and no retries: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
