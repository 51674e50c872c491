package backend

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/agent/containers/image"
)

func TestRedact(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	secret := "registry.example/secret-app@sha256:0123"
	tests := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("pull %s: %w", secret, image.ErrDigestMismatch), image.ErrDigestMismatch},
		{fmt.Errorf("exec %q in %s: no such file", "/bin/"+secret, secret), nil},
	}
	for _, tc := range tests {
		got := Redact(log, "create container", "app", tc.err)
		if strings.Contains(got.Error(), "secret") {
			t.Fatalf("redacted error leaks sealed content: %v", got)
		}
		if tc.want != nil && !errors.Is(got, tc.want) {
			t.Fatalf("redacted error %v lost its class %v", got, tc.want)
		}
		if !strings.Contains(got.Error(), "create container app") || !strings.Contains(got.Error(), "withheld") {
			t.Fatalf("redacted error %q", got)
		}
	}
	if Redact(log, "x", "y", nil) != nil {
		t.Fatal("Redact(nil) != nil")
	}
}
