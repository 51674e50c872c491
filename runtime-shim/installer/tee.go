package installer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealpod/sealpod/internal/tee"
)

// TEE is the confidential-computing technology a node offers to Sealpod pods: the one TEE
// type of internal/tee, under the installer's name.
type TEE = tee.TEE

// The TEEs of docs/design.md#tee-backends. TEESim is the software simulation: never detected, only given.
const (
	TEESNP = tee.SNP
	TEETDX = tee.TDX
	TEEPEF = tee.PEF
	TEESim = tee.Sim
	// TEESimTDX is the software simulation of TDX (simtee/tdxsim): never detected, only given.
	TEESimTDX = tee.SimTDX
)

// TEELabelPrefix starts the node labels the RuntimeClasses select on: a node ready for TEE t
// carries TEELabelPrefix+t = "true", one label per TEE (a label holds one value, and a node may
// offer several TEEs: each RuntimeClass must match it).
const TEELabelPrefix = "sealpod.io/tee."

// LegacyTEELabel is the single-valued node label of earlier installers (sealpod.io/tee=<tee>):
// no RuntimeClass selects on it; the installer removes it.
const LegacyTEELabel = "sealpod.io/tee"

// TEELabel is the node label of TEE t the RuntimeClass sealpod-<t> selects on (value "true").
func TEELabel(t TEE) string { return TEELabelPrefix + string(t) }

// ErrNoTEE: detection found no hardware TEE; give `--tee sim` explicitly to run simulated.
var ErrNoTEE = errors.New("no hardware TEE detected on this node")

// ParseTEE validates a TEE name (tee.Parse).
func ParseTEE(s string) (TEE, error) {
	t, err := tee.Parse(s)
	if err != nil {
		return "", fmt.Errorf("tee %q: want one of %s: %w", s, tee.KnownList(), tee.ErrUnknown)
	}
	return t, nil
}

// Host files DetectTEE reads, relative to the host root.
var (
	snpHostParam  = "sys/module/kvm_amd/parameters/sev_snp"       // "Y" when KVM runs SNP guests
	tdxHostParam  = "sys/module/kvm_intel/parameters/tdx"         // "Y" when KVM runs TD guests
	pefUltravisor = "sys/firmware/devicetree/base/ibm,ultravisor" // present when the POWER ultravisor runs
)

// DetectTEE looks at the host (under hostRoot, "/" or the DaemonSet's "/host") for a hardware
// TEE the host kernel can launch guests with. It never returns TEESim: simulation is opt-in.
func DetectTEE(hostRoot string) (TEE, error) {
	if hostRoot == "" {
		hostRoot = "/"
	}
	yes := func(rel string) bool {
		b, err := os.ReadFile(filepath.Join(hostRoot, rel))
		if err != nil {
			return false
		}
		v := strings.TrimSpace(string(b))
		return v == "Y" || v == "y" || v == "1"
	}
	switch {
	case yes(snpHostParam):
		return TEESNP, nil
	case yes(tdxHostParam):
		return TEETDX, nil
	}
	if _, err := os.Stat(filepath.Join(hostRoot, pefUltravisor)); err == nil {
		return TEEPEF, nil
	}
	return "", fmt.Errorf("detect TEE under %s (checked %s, %s, %s): %w", hostRoot, snpHostParam, tdxHostParam, pefUltravisor, ErrNoTEE)
}
