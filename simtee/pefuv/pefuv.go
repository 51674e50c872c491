// Package pefuv is the software ultravisor of the sim-pef TEE (the simtee component,
// docs/pef.md): what the protected-execution ultravisor of a Power9/Power10 host does for a
// guest that asks to enter secure mode, played by the node with a software RSA host key.
//
//   - EnterSecureMode finds the ESM blob where the ultravisor looks for it (the cpio archive
//     that `svm-tool svm add` / sealctl prepends to the initrd, opt/ibm/pef/…), opens the
//     lockbox for the host key with imagebuilder/esm's reader, and checks the digests of what
//     is about to boot — the objcopy'd vmlinux and its size, the initrd after the archive, the
//     command line and the RTAS — as the ultravisor's svm/svm-esmb.c does; any difference refuses the boot.
//   - SVM.GetFile hands the guest one attachment (the workload's data key, the broker
//     credential), once per boot. On hardware the guest kernel reads it with the
//     UV_ESMB_GET_FILE ultracall (0xF14C: 64 bytes per call, sequentially, once per boot);
//     under sim-pef the node serves it on the simulated-TEE port instead (Serve, serve.go;
//     the shim launches through Launch: docs/pef.md "sim-pef").
//
// INSECURE BY CONSTRUCTION: the node holds the host private key and can read and write guest
// memory; there is no secure memory and no ultravisor. It exists so CI can run the PEF sealing
// path (blob, lockbox, digests, attachments, broker credential) end to end without Power
// hardware. New logs a warning saying so; nodes and brokers must opt in to sim-pef explicitly.
// The shim links it; the agent never does.
package pefuv

import (
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"

	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
)

// Errors callers may branch on (besides esm's ErrNoLockbox, ErrWrongKey, ErrDecrypt,
// ErrDigest, ErrMalformed and pefseal.ErrNoESM, which EnterSecureMode wraps).
var (
	// ErrNoFile: the blob has no attachment of that name.
	ErrNoFile = errors.New("no such ESM attachment")
	// ErrFileRead: the attachment was already read in this boot (UV_ESMB_GET_FILE is once per
	// boot).
	ErrFileRead = errors.New("ESM attachment already read in this boot")
)

// Ultravisor is the simulated ultravisor of one node: its host key.
type Ultravisor struct {
	key *rsa.PrivateKey
	// rtas is the digest of the RTAS the simulated firmware instantiates: svm-tools' reference
	// value (esm.SVMToolsRTASDigest), which sealctl seals.
	rtas [sha512.Size]byte
}

// New returns the software ultravisor for the host key, warning loudly that it is a
// simulation.
func New(key *rsa.PrivateKey, log *slog.Logger) *Ultravisor {
	if log == nil {
		log = slog.Default()
	}
	log.Warn("sim-pef: the node plays the IBM PEF ultravisor with a software host key; guests get NO confidentiality or integrity from the host (testing only)")
	return &Ultravisor{key: key, rtas: esm.RTASDigestSVMTools()}
}

// LoadHostKey reads the node's simulated host key: a PEM RSA private key (PKCS#8 "PRIVATE
// KEY" or PKCS#1 "RSA PRIVATE KEY", as openssl genpkey / genrsa write). Owners authorise the
// node by its public half (openssl pkey -pubout; sealctl --pef-host-key).
func LoadHostKey(path string) (*rsa.PrivateKey, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- the node's configured key file
	if err != nil {
		return nil, fmt.Errorf("sim-pef host key: %w", err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, fmt.Errorf("sim-pef host key %s: no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("sim-pef host key %s: PEM block %q, want PRIVATE KEY or RSA PRIVATE KEY", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("sim-pef host key %s: %w", path, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("sim-pef host key %s: %T, want an RSA key", path, k)
	}
	return rk, nil
}

// Boot is what the VM is about to boot, as the shim hands it to QEMU.
type Boot struct {
	Kernel  []byte // the vmlinux ELF (guest bundle vmlinuz)
	Initrd  []byte // the ESM cpio followed by the guest's initrd
	Cmdline string
}

// SVM is a guest that entered secure mode: the attachments of its blob.
type SVM struct {
	// Lockbox is the lockbox the host key opened (lockbox-N).
	Lockbox string
	mu      sync.Mutex
	files   map[string][]byte
	read    map[string]bool
}

// EnterSecureMode is the ultravisor's UV_ESM: find the blob, open it with the host key, and
// check every digest against b. Errors name what failed and wrap the esm/pefseal errors.
func (u *Ultravisor) EnterSecureMode(b Boot) (*SVM, error) {
	blob, rest, err := pefseal.SplitInitrd(b.Initrd)
	if err != nil {
		return nil, fmt.Errorf("sim-pef: enter secure mode: initrd: %w", err)
	}
	c, err := esm.Open(blob, u.key)
	if err != nil {
		return nil, fmt.Errorf("sim-pef: enter secure mode: ESM blob: %w", err)
	}
	img, err := esm.KernelImage(b.Kernel)
	if err != nil {
		return nil, fmt.Errorf("sim-pef: enter secure mode: kernel: %w", err)
	}
	d := c.Digests
	var errs []error
	if d.RTAS != u.rtas {
		errs = append(errs, fmt.Errorf("/digests/rtas: the sealed RTAS digest is not the simulated firmware's (svm-tools' reference RTAS): %w", esm.ErrDigest))
	}
	// The simulated firmware has the RTAS digest, not the RTAS bytes: RTAS is checked above,
	// the other components by Verify (RTAS set to the digest of the empty input passed).
	d.RTAS = sha512.Sum512(nil)
	errs = append(errs, d.Verify(esm.Boot{Kernel: img, Initrd: rest, Bootargs: b.Cmdline}))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sim-pef: enter secure mode: %w", err)
	}
	svm := &SVM{Lockbox: c.Lockbox, files: map[string][]byte{}, read: map[string]bool{}}
	for _, a := range c.Attachments {
		svm.files[a.Name] = a.Data
	}
	return svm, nil
}

// Names lists the attachments, sorted.
func (s *SVM) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// GetFile returns the named attachment once per boot (UV_ESMB_GET_FILE) and forgets it.
func (s *SVM) GetFile(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.read[name] {
		return nil, fmt.Errorf("sim-pef: get file %q: %w", name, ErrFileRead)
	}
	data, ok := s.files[name]
	if !ok {
		return nil, fmt.Errorf("sim-pef: get file %q: %w", name, ErrNoFile)
	}
	s.read[name] = true
	delete(s.files, name)
	return data, nil
}
