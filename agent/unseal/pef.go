package unseal

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
)

// ErrPEFAttachment: an ESM attachment is missing or malformed.
var ErrPEFAttachment = errors.New("ESM attachment")

// ESMFiles reads one attachment of the guest's ESM blob, once: under sim-pef from the node's
// simulated ultravisor (simsp.Client.GetESMFile), on PEF hardware through the
// UV_ESMB_GET_FILE ultracall.
type ESMFiles func(ctx context.Context, name string) ([]byte, error)

// PEFAttester is the attester of pef and sim-pef guests. PEF has no attestation report: the
// ultravisor released the blob's attachments only because it opened the blob with an
// authorised host's key and the kernel, initrd and boot arguments matched the sealed digests.
// The guest shows the broker the credential (a signature over the nonce and its TEE key,
// api.PEFChallenge) and opens its envelope with the sealed data key.
type PEFAttester struct {
	tee     tee.TEE
	cred    ed25519.PrivateKey
	dataKey []byte
}

// NewPEFAttester reads the data key and the broker credential with files (each once) for
// TEE t (pef or sim-pef).
func NewPEFAttester(ctx context.Context, t tee.TEE, files ESMFiles) (*PEFAttester, error) {
	if t.Evidence() != tee.EvidencePEFCredential {
		return nil, fmt.Errorf("pef attester: TEE %q: want %s or %s", t, tee.PEF, tee.SimPEF)
	}
	key, err := files(ctx, tee.PEFAttachDataKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w %s: %w", t, ErrPEFAttachment, tee.PEFAttachDataKey, err)
	}
	if len(key) != api.DataKeySize {
		clear(key)
		return nil, fmt.Errorf("%s: %w %s: %d bytes, want %d", t, ErrPEFAttachment, tee.PEFAttachDataKey, len(key), api.DataKeySize)
	}
	raw, err := files(ctx, tee.PEFAttachBrokerCredential)
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("%s: %w %s: %w", t, ErrPEFAttachment, tee.PEFAttachBrokerCredential, err)
	}
	cred, err := api.ParsePEFCredential(raw)
	clear(raw)
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("%s: %w %s: %w", t, ErrPEFAttachment, tee.PEFAttachBrokerCredential, err)
	}
	return &PEFAttester{tee: t, cred: cred, dataKey: key}, nil
}

// OpenSimPEF reads the attachments from the node's simulated ultravisor (tee sim-pef).
func OpenSimPEF(ctx context.Context, c *simsp.Client) (*PEFAttester, error) {
	return NewPEFAttester(ctx, tee.SimPEF, c.GetESMFile)
}

// TEE is "pef" or "sim-pef".
func (a *PEFAttester) TEE() string { return string(a.tee) }

// Evidence signs the broker's challenge for rd with the credential. PEF binds no host data to
// the launch (HostData is nil): the envelope is authenticated by opening it with the sealed
// data key (SealedDataKey).
func (a *PEFAttester) Evidence(_ context.Context, rd [64]byte) (*Evidence, error) {
	sig := ed25519.Sign(a.cred, api.PEFChallenge(rd))
	return &Evidence{Evidence: &api.Evidence{PEF: &api.PEFEvidence{Signature: sig}}}, nil
}

// SealedDataKey returns a copy of the data key from the ESM blob.
func (a *PEFAttester) SealedDataKey() []byte { return append([]byte(nil), a.dataKey...) }

// sealedKeyAttester is an attester whose TEE released the data key itself (pef, sim-pef).
type sealedKeyAttester interface {
	SealedDataKey() []byte
}
