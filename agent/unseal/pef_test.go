package unseal_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/internal/brokertest"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/simtee/pefuv/pefuvtest"
)

// TestUnsealSimPEF: a sim-pef guest reads the data key and the broker credential from the
// node's simulated ultravisor, gets its certificate from the broker by signing the challenge
// with the credential, and opens its envelope with the sealed data key. Refused: a broker
// registration with another credential, an envelope sealed under another data key, a pef
// registration (the guest is sim-pef).
func TestUnsealSimPEF(t *testing.T) {
	b := brokertest.Start(t)
	host, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sans := []string{"web.default.svc", "10.0.0.9"}
	newKey := func() []byte {
		k, err := envelope.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	tests := []struct {
		name     string
		register func(t *testing.T, dataKey []byte, s *pefseal.Sealed) *brokertest.Sealed
		wantErr  error
		reason   string
	}{
		{name: "ok", register: func(t *testing.T, k []byte, s *pefseal.Sealed) *brokertest.Sealed {
			return b.SealPEF(t, testSpec("web"), sans, api.TEESimPEF, k, s.Credential)
		}},
		{name: "another credential registered", register: func(t *testing.T, k []byte, _ *pefseal.Sealed) *brokertest.Sealed {
			_, other := pefuvtest.SealBoot(t, &host.PublicKey, "", k)
			return b.SealPEF(t, testSpec("web"), sans, api.TEESimPEF, k, other.Credential)
		}, reason: api.ReasonEvidence},
		{name: "envelope under another data key", register: func(t *testing.T, _ []byte, s *pefseal.Sealed) *brokertest.Sealed {
			return b.SealPEF(t, testSpec("web"), sans, api.TEESimPEF, newKey(), s.Credential)
		}, wantErr: envelope.ErrAuthentication},
		{name: "registered for pef", register: func(t *testing.T, k []byte, s *pefseal.Sealed) *brokertest.Sealed {
			return b.SealPEF(t, testSpec("web"), sans, api.TEEPEF, k, s.Credential)
		}, wantErr: unseal.ErrTEE},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dataKey := newKey()
			boot, s := pefuvtest.SealBoot(t, &host.PublicKey, "", dataKey)
			sealed := tc.register(t, dataKey, s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			g, _ := pefuvtest.ServePipe(t, ctx, host, boot)
			att, err := unseal.OpenSim(ctx, g)
			if err != nil {
				t.Fatal(err)
			}
			if att.TEE() != string(tee.SimPEF) {
				t.Fatalf("attester TEE %q, want sim-pef", att.TEE())
			}
			res, err := unseal.Unseal(ctx, sealed.Envelope, att, unseal.Options{RetryFor: time.Millisecond})
			checkUnseal(t, b, res, err, sealed, sans, tc.wantErr, tc.reason, "")
		})
	}
}

// TestOpenSimPEFAttachments: the guest refuses a sim-pef host that does not hand out a
// 32-byte data key and a well-formed credential.
func TestOpenSimPEFAttachments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name  string
		files map[string][]byte
	}{
		{"no data key", map[string][]byte{}},
		{"short data key", map[string][]byte{tee.PEFAttachDataKey: make([]byte, 31)}},
		{"no credential", map[string][]byte{tee.PEFAttachDataKey: make([]byte, 32)}},
		{"credential without its prefix", map[string][]byte{tee.PEFAttachDataKey: make([]byte, 32), tee.PEFAttachBrokerCredential: make([]byte, api.PEFCredentialSize)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, h := net.Pipe()
			defer g.Close()
			go func() {
				defer h.Close()
				for {
					var req simsp.Request
					if err := simsp.ReadFrame(h, &req); err != nil {
						return
					}
					resp := simsp.Response{TEE: "sim-pef"}
					if req.Kind == simsp.KindESMFile {
						resp = simsp.Response{File: tc.files[req.Name], Error: map[bool]string{true: "no such file"}[tc.files[req.Name] == nil]}
					}
					_ = simsp.WriteFrame(h, resp)
				}
			}()
			if _, err := unseal.OpenSim(ctx, g); !errors.Is(err, unseal.ErrPEFAttachment) {
				t.Fatalf("OpenSim: %v, want ErrPEFAttachment", err)
			}
		})
	}
}
