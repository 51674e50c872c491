package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/esm"
	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/tee"
)

// pefMeasurement converts ESM digests to guest.json's form.
func pefMeasurement(d esm.Digests) *bundle.PEFMeasurement {
	return &bundle.PEFMeasurement{
		Kernel: hex.EncodeToString(d.Kernel[:]), KernelSize: d.KernelSize, Initrd: hex.EncodeToString(d.Initrd[:]),
		Cmdline: hex.EncodeToString(d.Bootargs[:]), RTAS: hex.EncodeToString(d.RTAS[:]),
	}
}

// pefFamily reports whether guests of TEE t are released by the credential sealed in an ESM
// blob: pef, and sim-pef (the node plays the ultravisor with a software host key).
func pefFamily(t string) bool { return tee.TEE(t).Evidence() == tee.EvidencePEFCredential }

// validatePEF checks that --tee pef (or sim-pef) and --pef-host-key come together.
func (f *imageCreateFlags) validatePEF() error {
	pef := slices.ContainsFunc(f.tees, pefFamily)
	switch {
	case pef && len(f.pefHostKeys) == 0:
		return errors.New("--tee pef and sim-pef need --pef-host-key: the public key (PEM) of each host allowed to run the workloads (for sim-pef, the node's simPEFKey)")
	case !pef && len(f.pefHostKeys) > 0:
		return errors.New("--pef-host-key is only for --tee pef or sim-pef")
	}
	return nil
}

// pefSealer seals each workload for pef: an ESM blob to the host keys with the workload's
// data key and a fresh broker credential (docs/pef.md#sealing).
type pefSealer struct {
	hosts []esm.HostKey
	guest *bundle.Bundle
	// cpio and cred are per workload: the ESM cpio for the image and the hex public key of
	// the broker credential for the registration.
	cpio map[string][]byte
	cred map[string]string
}

func newPEFSealer(f *imageCreateFlags, guest *bundle.Bundle, log io.Writer) (*pefSealer, error) {
	if !slices.ContainsFunc(f.tees, pefFamily) {
		return nil, nil
	}
	hosts, err := pefseal.ReadHostKeys(f.pefHostKeys)
	if err != nil {
		return nil, err
	}
	if len(hosts) > 1 {
		fmt.Fprintf(log, "WARNING: %d PEF host keys: the ultravisor at open-power/ultravisor HEAD opens only lockbox-1, so on real hardware the workloads boot only on the host of the first --pef-host-key (%s); seal once per host until the firmware searches the lockboxes\n",
			len(hosts), hosts[0].Comment)
	}
	return &pefSealer{hosts: hosts, guest: guest, cpio: map[string][]byte{}, cred: map[string]string{}}, nil
}

// seal seals workload w, whose guest boots with cfg (its command line), and records the
// digests in cfg.
func (p *pefSealer) seal(w *manifests.Workload, cfg *bundle.Config) error {
	d, err := pefseal.Measure(p.guest.Kernel, p.guest.Initrd, cfg.Cmdline)
	if err != nil {
		return fmt.Errorf("guest bundle %s: %w", p.guest.Dir, err)
	}
	s, err := pefseal.Seal(pefseal.Input{Hosts: p.hosts, Digests: d, DataKey: w.Key})
	if err != nil {
		return fmt.Errorf("%s (workload %s): %w", w.Object, w.ID, err)
	}
	cfg.Measurements.PEF = pefMeasurement(d)
	p.cpio[w.ID], p.cred[w.ID] = s.CPIO, hex.EncodeToString(s.Credential)
	return nil
}
