package server

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/syncbuf"
	"github.com/sealpod/sealpod/kbs/api"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer = syncbuf.Buffer

// goneWriter is a client that went away: every body write fails.
type goneWriter struct{ *httptest.ResponseRecorder }

func (goneWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// A response body that cannot be delivered is logged with its endpoint, not dropped silently.
func TestUndeliveredResponseIsLogged(t *testing.T) {
	logs := &lockedBuffer{}
	e := newEnv(t, envOptions{logger: slog.New(slog.NewTextHandler(logs, nil))})
	for _, tc := range []struct {
		name, method, path, body, endpoint string
	}{
		{"healthz", http.MethodGet, "/healthz", "", "healthz"},
		{"readyz", http.MethodGet, "/readyz", "", "readyz"},
		{"success body", http.MethodGet, api.PathCA, "", "ca"},
		{"refusal body", http.MethodPost, api.PathAuth, "{not json", "auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(logs.String())
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			e.srv.Handler().ServeHTTP(goneWriter{httptest.NewRecorder()}, req)
			got := logs.String()[before:]
			if !strings.Contains(got, "response not delivered") || !strings.Contains(got, "endpoint="+tc.endpoint) ||
				!strings.Contains(got, "connection reset by peer") {
				t.Fatalf("%s %s: no undelivered-response log for endpoint %s; log:\n%s", tc.method, tc.path, tc.endpoint, got)
			}
		})
	}
}
