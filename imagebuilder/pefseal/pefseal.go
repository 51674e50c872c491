// Package pefseal seals a workload for IBM PEF (docs/pef.md): it computes the digests the
// ultravisor checks (svm-tools' definitions), writes the ESM blob (package imagebuilder/esm)
// with the workload's data key and a fresh per-workload broker credential as attachments, and
// wraps the blob in the cpio archive that svm-tools' `svm add` prepends to the initrd.
package pefseal

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/kbs/api"
)

// Measure returns the digests the ultravisor checks for a boot of vmlinux (the ppc64le ELF,
// as svm-tools takes it), initrd (without the ESM cpio) and cmdline; RTAS is svm-tools'
// built-in value (esm.SVMToolsRTASDigest).
func Measure(vmlinux, initrd []byte, cmdline string) (esm.Digests, error) {
	var d esm.Digests
	var err error
	if d.Kernel, d.KernelSize, err = esm.KernelDigestELF(vmlinux); err != nil {
		return d, fmt.Errorf("pef digests: kernel is not a usable vmlinux ELF (PEF boots the ppc64le vmlinux, not a compressed image): %w", err)
	}
	d.Initrd = sha512.Sum512(initrd)
	d.Bootargs = esm.BootargsDigest(cmdline)
	d.RTAS = esm.RTASDigestSVMTools()
	return d, nil
}

// Input is what Seal seals for one workload.
type Input struct {
	// Hosts are the authorised hosts' keys (lockbox-1…N; the ultravisor at HEAD tries only
	// lockbox-1, docs/pef.md).
	Hosts   []esm.HostKey
	Origin  *esm.HostKey // the owner's key; nil = a throw-away key
	Digests esm.Digests
	DataKey []byte // the workload's 32-byte data key
}

// Sealed is one workload's PEF seal.
type Sealed struct {
	Blob []byte // the ESM blob
	CPIO []byte // ESMCpio(Blob): to be prepended to the guest's initrd
	// Credential is the public key of the broker credential sealed in the blob; the broker
	// registers it as the workload's pefCredential. The private key exists only in the blob.
	Credential ed25519.PublicKey
}

// Seal writes the ESM blob of one workload with a fresh broker credential.
func Seal(in Input) (*Sealed, error) {
	if len(in.Hosts) == 0 {
		return nil, errors.New("seal for pef: no host keys (--pef-host-key)")
	}
	if len(in.DataKey) != api.DataKeySize {
		return nil, fmt.Errorf("seal for pef: data key of %d bytes, want %d", len(in.DataKey), api.DataKeySize)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal for pef: broker credential: %w", err)
	}
	cred := api.MarshalPEFCredential(priv)
	defer clear(cred)
	blob, err := esm.Write(esm.Spec{
		Hosts: in.Hosts, Origin: in.Origin, Digests: in.Digests, DigestComment: "sealpod digests",
		Attachments: []esm.Attachment{
			{Name: esm.AttachDataKey, Data: in.DataKey, Comment: "sealpod workload data key"},
			{Name: esm.AttachBrokerCredential, Data: cred, Comment: "sealpod broker credential (Ed25519)"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("seal for pef: %w", err)
	}
	return &Sealed{Blob: blob, CPIO: ESMCpio(blob), Credential: pub}, nil
}

// ReadHostKeys reads PEM "PUBLIC KEY" (PKIX) RSA keys, one file each, as `openssl pkey
// -pubout` writes them (the host TPM keys svm-tools' `esm authorize` takes). The comment of
// each is its file's base name.
func ReadHostKeys(paths []string) ([]esm.HostKey, error) {
	var out []esm.HostKey
	for _, p := range paths {
		raw, err := os.ReadFile(p) // #nosec G304 -- a key file the user names
		if err != nil {
			return nil, fmt.Errorf("pef host key %s: %w", p, err)
		}
		b, _ := pem.Decode(raw)
		if b == nil || b.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("pef host key %s: no PEM \"PUBLIC KEY\" block (want `openssl pkey -pubout` output)", p)
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pef host key %s: %w", p, err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("pef host key %s: a %T, want an RSA key (the host TPM's)", p, k)
		}
		for i, prev := range out {
			if prev.Public.Equal(rk) {
				return nil, fmt.Errorf("pef host key %s: the same key as %s given twice", p, paths[i])
			}
		}
		out = append(out, esm.HostKey{Public: rk, Comment: filepath.Base(p)})
	}
	return out, nil
}
