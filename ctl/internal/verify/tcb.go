package verify

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/kbs/api"
)

// CheckMinTCB: the registered policy's minimum TCB is at or above the one the verifier
// requires (Options.MinTCB) or the sealed manifest declares (AnnotationMinTCB).
const CheckMinTCB = "workload.min-tcb"

// AnnotationMinTCB on a sealed pod template declares the minimum TCB its owner requires of
// the broker's policy (written by `sealctl image create --snp-min-tcb/--tdx-min-tcb`).
const AnnotationMinTCB = manifests.AnnotationMinTCB

// FormatMinTCB writes t in the AnnotationMinTCB syntax that ParseMinTCB reads ("" when t sets
// no minimum).
func FormatMinTCB(t api.TCB) string {
	var parts []string
	if m := t.SNP; m != nil {
		parts = append(parts, fmt.Sprintf("snp=%d,%d,%d,%d", m.Bootloader, m.TEE, m.SNP, m.Microcode))
	}
	if t.TDXTeeTCBSVN != "" {
		parts = append(parts, "tdx="+t.TDXTeeTCBSVN)
	}
	return strings.Join(parts, ";")
}

// ParseMinTCB parses the AnnotationMinTCB syntax.
func ParseMinTCB(s string) (*api.TCB, error) {
	var t api.TCB
	for _, part := range strings.Split(s, ";") {
		tee, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("min TCB %q: want snp=B,T,S,M and/or tdx=HEX separated by ';'", s)
		case tee == "snp" && t.SNP == nil:
			snp, err := ParseSNPTCB(v)
			if err != nil {
				return nil, fmt.Errorf("min TCB %q: %w", s, err)
			}
			t.SNP = snp
		case tee == "tdx" && t.TDXTeeTCBSVN == "":
			if err := ValidTDXTCB(v); err != nil {
				return nil, fmt.Errorf("min TCB %q: %w", s, err)
			}
			t.TDXTeeTCBSVN = v
		default:
			return nil, fmt.Errorf("min TCB %q: %q is unknown or given twice (want snp and/or tdx once)", s, tee)
		}
	}
	return &t, nil
}

// ParseSNPTCB parses "bootloader,tee,snp,microcode" (each 0-255).
func ParseSNPTCB(s string) (*api.SNPTCB, error) {
	f := strings.Split(s, ",")
	if len(f) != 4 {
		return nil, fmt.Errorf("snp %q: want bootloader,tee,snp,microcode", s)
	}
	var n [4]uint8
	for i, x := range f {
		v, err := strconv.ParseUint(strings.TrimSpace(x), 10, 8)
		if err != nil {
			return nil, fmt.Errorf("snp %q: component %d: want 0-255", s, i)
		}
		n[i] = uint8(v)
	}
	return &api.SNPTCB{Bootloader: n[0], TEE: n[1], SNP: n[2], Microcode: n[3]}, nil
}

// ValidTDXTCB checks a TDX TEE_TCB_SVN: 32 lowercase hex characters.
func ValidTDXTCB(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 16 || strings.ToLower(s) != s {
		return fmt.Errorf("tdx %q: want 32 lowercase hex characters (16-byte TEE_TCB_SVN)", s)
	}
	return nil
}

// checkMinTCB compares the workload's registered minimum with min for every TEE the workload
// allows that has a TCB (snp and sim use the SNP minimum, tdx the TEE_TCB_SVN). A policy
// without a minimum is below any minimum.
func checkMinTCB(r *Report, subj string, w *api.Workload, min *api.TCB, from string) {
	if min == nil {
		return
	}
	if m := min.SNP; m != nil && (slices.Contains(w.TEEs, api.TEESNP) || slices.Contains(w.TEEs, api.TEESim)) {
		want := fmt.Sprintf("%d,%d,%d,%d", m.Bootloader, m.TEE, m.SNP, m.Microcode)
		got := w.MinTCB.SNP
		switch {
		case got == nil:
			r.fail(CheckMinTCB, subj+" snp", want, "none", "the broker's policy sets no minimum SEV-SNP TCB; %s requires %s", from, want)
		default:
			var low []string
			for _, c := range []struct {
				name      string
				have, min uint8
			}{{"bootloader", got.Bootloader, m.Bootloader}, {"tee", got.TEE, m.TEE}, {"snp", got.SNP, m.SNP}, {"microcode", got.Microcode, m.Microcode}} {
				if c.have < c.min {
					low = append(low, fmt.Sprintf("%s %d < %d", c.name, c.have, c.min))
				}
			}
			g := fmt.Sprintf("%d,%d,%d,%d", got.Bootloader, got.TEE, got.SNP, got.Microcode)
			if len(low) > 0 {
				r.fail(CheckMinTCB, subj+" snp", want, g, "the broker's minimum SEV-SNP TCB %s is below the %s required by %s: %s", g, want, from, strings.Join(low, ", "))
			} else {
				r.ok(CheckMinTCB, subj+" snp", "minimum SEV-SNP TCB %s >= %s", g, want)
			}
		}
	}
	if m := min.TDXTeeTCBSVN; m != "" && slices.Contains(w.TEEs, api.TEETDX) {
		got := w.MinTCB.TDXTeeTCBSVN
		gb, err1 := hex.DecodeString(got)
		mb, err2 := hex.DecodeString(m)
		switch {
		case got == "":
			r.fail(CheckMinTCB, subj+" tdx", m, "none", "the broker's policy sets no minimum TDX TEE_TCB_SVN; %s requires %s", from, m)
		case err1 != nil || err2 != nil || len(gb) != 16 || len(mb) != 16:
			r.fail(CheckMinTCB, subj+" tdx", m, got, "TEE_TCB_SVN is not 16 bytes of hex")
		default:
			var low []string
			for i := range mb {
				if gb[i] < mb[i] {
					low = append(low, fmt.Sprintf("component %d: %d < %d", i, gb[i], mb[i]))
				}
			}
			if len(low) > 0 {
				r.fail(CheckMinTCB, subj+" tdx", m, got, "the broker's minimum TDX TEE_TCB_SVN %s is below the %s required by %s: %s", got, m, from, strings.Join(low, ", "))
			} else {
				r.ok(CheckMinTCB, subj+" tdx", "minimum TDX TEE_TCB_SVN %s >= %s", got, m)
			}
		}
	}
}
