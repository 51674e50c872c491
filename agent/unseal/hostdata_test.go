package unseal_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/simtee/spserver"
)

// reshaped wraps an attester and rewrites the launch data its evidence reports, to show how
// the agent judges HOST_DATA of the wrong width for its TEE.
type reshaped struct {
	unseal.Attester
	host func([]byte) []byte
}

func (r reshaped) Evidence(ctx context.Context, rd [64]byte) (*unseal.Evidence, error) {
	ev, err := r.Attester.Evidence(ctx, rd)
	if err != nil {
		return nil, err
	}
	ev.HostData = r.host(ev.HostData)
	return ev, nil
}

// TestUnsealHostDataWidth: a sim (SNP-format) guest's HOST_DATA is exactly the 32-byte digest;
// launch data of another width (the digest zero-padded as for TDX, truncated, empty) is refused
// by the agent before it attests, even when its first 32 bytes are the digest.
func TestUnsealHostDataWidth(t *testing.T) {
	b := brokertest.Start(t)
	sealed := b.Seal(t, testSpec("web"), []string{"web.default.svc"})
	launch := spserver.Launch{Measurement: b.Measurement, HostData: digestBytes(sealed.Envelope)}
	tests := []struct {
		name    string
		host    func([]byte) []byte
		wantErr error
	}{
		{name: "exact", host: func(h []byte) []byte { return h }},
		{name: "zero-padded to 48", host: func(h []byte) []byte { return append(h, make([]byte, 16)...) }, wantErr: unseal.ErrHostData},
		{name: "zero-padded to 64", host: func(h []byte) []byte { return append(h, make([]byte, 32)...) }, wantErr: unseal.ErrHostData},
		{name: "truncated", host: func(h []byte) []byte { return h[:31] }, wantErr: unseal.ErrHostData},
		{name: "empty", host: func([]byte) []byte { return nil }, wantErr: unseal.ErrHostData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			guest, host := socketpair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go spserver.Serve(ctx, host, b.Signer, launch, nil)
			_, err := unseal.Unseal(ctx, sealed.Envelope, reshaped{unseal.NewSimAttester(guest), tc.host}, unseal.Options{})
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Unseal: %v, want %v", err, tc.wantErr)
			}
		})
	}
}
