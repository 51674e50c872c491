package cli

import (
	"errors"
	"fmt"
	"slices"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/internal/tee"
)

// sizedGuest is one workload's guest: its guest.json (the bundle's, resized and measured for
// that size) and the reference measurements the broker gets for it.
type sizedGuest struct {
	config       *bundle.Config
	measurements map[string][]string
}

// guestSizer sizes each workload's guest from its pod's limits (docs/formats.md#guest-size)
// and computes the measurements for that size. vCPUs are part of the SNP (and sim) launch
// digest: one VMSA per vCPU. No pinned measurement depends on the memory size (the TDX
// RTMR[0]/RTMR[1] that do are not pinned), so guests of one vCPU count share measurements.
type guestSizer struct {
	guest *bundle.Bundle
	tees  []string
	dflt  bundle.Size
	// byVCPUs caches the measurements per vCPU count; checked records the TEEs whose
	// bundle measurement was reproduced (true) or not (false).
	byVCPUs map[int]bundle.Measurements
	checked map[tee.TEE]bool
}

func newGuestSizer(g *bundle.Bundle, tees []string, dflt bundle.Size) *guestSizer {
	return &guestSizer{guest: g, tees: tees, dflt: dflt, byVCPUs: map[int]bundle.Measurements{}, checked: map[tee.TEE]bool{}}
}

// size returns the guest of workload w.
func (s *guestSizer) size(w *manifests.Workload) (*sizedGuest, error) {
	sz, err := bundle.SizeFor(w.Limits, s.dflt)
	if err != nil {
		field := w.LimitsField
		if errors.Is(err, bundle.ErrLimitTooSmall) {
			field += ".memory"
		}
		return nil, fmt.Errorf("%s (workload %s): %s: %w", w.Object, w.ID, field, err)
	}
	m, err := s.measure(sz.VCPUs)
	if err != nil {
		return nil, fmt.Errorf("%s (workload %s): guest with %d vCPUs: %w", w.Object, w.ID, sz.VCPUs, err)
	}
	cfg := s.guest.Config
	cfg.VCPUs, cfg.MemoryMiB, cfg.Measurements = sz.VCPUs, sz.MemoryMiB, m
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s (workload %s): %w", w.Object, w.ID, err)
	}
	out := &sizedGuest{config: &cfg, measurements: map[string][]string{}}
	for _, t := range s.tees {
		if pefFamily(t) {
			continue // the broker checks the credential sealed in the ESM blob, not a measurement
		}
		v, err := cfg.Measurement(tee.TEE(t))
		if err != nil {
			return nil, fmt.Errorf("guest bundle %s: %w", s.guest.Dir, err)
		}
		out.measurements[t] = []string{v}
	}
	return out, nil
}

// measure returns the bundle's measurements for a guest of vcpus vCPUs: the bundle's own when
// the count is its guest.json's, else sim and snp recomputed. A value is recomputed only if
// the same code reproduces the bundle's value at the bundle's count (guest.json does not
// record every input, e.g. SNP guest features); one that is not reproduced is dropped, which
// is an error for a TEE being sealed for.
func (s *guestSizer) measure(vcpus int) (bundle.Measurements, error) {
	base := s.guest.Config.Measurements
	if vcpus == s.guest.Config.VCPUs {
		return base, nil
	}
	if m, ok := s.byVCPUs[vcpus]; ok {
		return m, nil
	}
	m := base
	for _, t := range []tee.TEE{tee.Sim, tee.SNP} {
		field := &m.Sim
		if t == tee.SNP {
			field = &m.SNP
		}
		if *field == "" {
			continue
		}
		ok, err := s.reproduces(t, *field)
		if err != nil {
			return m, err
		}
		if !ok {
			if slices.Contains(s.tees, string(t)) {
				return m, fmt.Errorf("guest bundle %s: measurements.%s cannot be recomputed for another vCPU count: sealctl's computation at the bundle's %d vCPUs gives a different value (inputs guest.json does not record, e.g. SNP guest features); seal with a guest measured for %d vCPUs or give the pod a CPU limit of %d",
					s.guest.Dir, t, s.guest.Config.VCPUs, vcpus, s.guest.Config.VCPUs)
			}
			*field = ""
			continue
		}
		v, err := s.compute(t, vcpus)
		if err != nil {
			return m, err
		}
		*field = v
	}
	s.byVCPUs[vcpus] = m
	return m, nil
}

func (s *guestSizer) reproduces(t tee.TEE, want string) (bool, error) {
	if ok, done := s.checked[t]; done {
		return ok, nil
	}
	got, err := s.compute(t, s.guest.Config.VCPUs)
	if err != nil {
		return false, err
	}
	s.checked[t] = got == want
	return got == want, nil
}

func (s *guestSizer) compute(t tee.TEE, vcpus int) (string, error) {
	in := measure.BundleInputs(s.guest, t)
	in.VCPUs = vcpus
	m, err := measure.Compute(in)
	if err != nil {
		return "", fmt.Errorf("guest bundle %s: %w", s.guest.Dir, err)
	}
	if t == tee.SNP {
		return m.SNP, nil
	}
	return m.Sim, nil
}
