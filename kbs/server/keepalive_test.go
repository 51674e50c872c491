package server

import (
	"context"
	"net/http/httptrace"
	"sync"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
)

// TestTwoRequestsOneConnection checks that the client's default transport (client.New with
// a CA, as the agent's unseal step uses it) sends a pod's auth and attest over one TLS
// connection: the second request reuses the first one's connection instead of paying a
// second TCP and TLS handshake on the broker.
func TestTwoRequestsOneConnection(t *testing.T) {
	e := newEnv(t, envOptions{})
	var mu sync.Mutex
	var reused []bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		mu.Lock()
		defer mu.Unlock()
		reused = append(reused, i.Reused)
	}})
	s, err := e.client.Auth(ctx, api.TEESim, e.workload.ID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := benchCSR(flowTwo, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AttestRelease(ctx, e.evidence(t, s, nil), csr); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reused) != 2 || reused[0] || !reused[1] {
		t.Fatalf("connections reused per request (auth, attest) = %v, want [false true]", reused)
	}
}
