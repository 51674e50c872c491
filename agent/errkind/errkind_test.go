package errkind

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestOfAndWithhold(t *testing.T) {
	pull := New("registry unreachable")
	digest := New("digest mismatch")
	secret := "r.example/secret@sha256:00"
	for _, tc := range []struct {
		name string
		err  error
		want *Kind
	}{
		{"nil", nil, nil},
		{"plain", errors.New(secret), Unknown},
		{"wrapped", fmt.Errorf("pull %s: %w", secret, pull), pull},
		{"outermost wins", fmt.Errorf("%w: %w", digest, fmt.Errorf("x: %w", pull)), digest},
		{"joined", errors.Join(errors.New(secret), fmt.Errorf("b: %w", digest)), digest},
		{"context", fmt.Errorf("pull %s: %w", secret, context.DeadlineExceeded), DeadlineExceeded},
		{"canceled", context.Canceled, Canceled},
		{"withheld", Withhold(pull, fmt.Errorf("%s: %w", secret, digest)), pull},
	} {
		if got := Of(tc.err); got != tc.want {
			t.Errorf("%s: Of = %v, want %v", tc.name, got, tc.want)
		}
	}
	w := Withhold(pull, fmt.Errorf("pull %s: %w", secret, digest))
	if strings.Contains(w.Error(), "secret") || !strings.HasPrefix(w.Error(), pull.Error()) {
		t.Errorf("Withhold text %q", w)
	}
	if !errors.Is(w, digest) || !errors.Is(w, pull) {
		t.Error("Withhold lost the wrapped errors")
	}
	if Withhold(pull, nil) != nil || Text(nil) != "" {
		t.Error("nil handling")
	}
}
