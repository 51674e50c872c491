package unseal_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/simtee/spserver"
)

// brokerRequests returns the broker's count of answered requests per endpoint (its public
// /metrics).
func brokerRequests(t *testing.T, b *brokertest.Broker) map[string]int {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.State.TLSCAPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := hc.Get(b.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	re := regexp.MustCompile(`(?m)^sealpod_kbs_requests_total\{code="(\d+)",endpoint="([a-z]+)"\} (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		n, _ := strconv.Atoi(m[3])
		out[m[2]+" "+m[1]] += n
	}
	return out
}

// TestUnsealTwoRequests: the agent's flow is auth then attest (whose answer carries the key
// and the certificate): the broker sees two requests per pod and no key or certificate
// request.
func TestUnsealTwoRequests(t *testing.T) {
	b := brokertest.Start(t)
	sans := []string{"web.default.svc", "10.0.0.9"}
	sealed := b.Seal(t, testSpec("web"), sans)
	guest, host := socketpair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- spserver.Serve(ctx, host, b.Signer, spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(sealed.Envelope)}, nil)
	}()
	res, err := unseal.Unseal(ctx, sealed.Envelope, unseal.NewSimAttester(guest), unseal.Options{})
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	checkResult(t, b, res, sealed, sans)
	if res.Times.Attest <= 0 || res.Times.Key != 0 || res.Times.Certificate <= 0 {
		t.Fatalf("times %+v: want attest and certificate > 0, key 0 (no request of its own)", res.Times)
	}
	got := brokerRequests(t, b)
	want := map[string]int{"auth 200": 1, "attest 200": 1}
	if len(got) != len(want) || got["auth 200"] != 1 || got["attest 200"] != 1 {
		t.Fatalf("broker requests %v, want %v", got, want)
	}
	cancel()
	guest.Close()
	if err := <-served; err != nil {
		t.Fatalf("spserver.Serve: %v", err)
	}
}
