package measure

import (
	"encoding/hex"
	"errors"

	"github.com/sealpod/sealpod/guest-image/measure/tdx"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// simTDXMeasurement computes the `sim-tdx` reference value (tdx.SimMRTD, tdx.SimRTMRs): MRTD
// from the firmware bytes (none = empty), RTMR[1] and RTMR[2] from the direct-boot kernel,
// initrd and command line, RTMR[0] and RTMR[3] not pinned. See docs/measurements.md.
func (in *Inputs) simTDXMeasurement() (*bundle.TDXMeasurement, error) {
	if in.Boot == nil {
		return nil, errors.New("a direct-boot kernel is required")
	}
	r1, r2, err := tdx.SimRTMRs(in.Boot.Kernel, in.Boot.Cmdline, in.Boot.Initrd)
	if err != nil {
		return nil, err
	}
	mrtd := tdx.SimMRTD(in.Firmware)
	return &bundle.TDXMeasurement{MRTD: hex.EncodeToString(mrtd[:]),
		RTMRs: []string{"", hex.EncodeToString(r1[:]), hex.EncodeToString(r2[:]), ""}}, nil
}

// simTDXComputable reports whether the default selection can include sim-tdx: a direct boot
// of an EFI-stub kernel.
func (in *Inputs) simTDXComputable() bool {
	if in.Boot == nil {
		return false
	}
	_, err := tdx.KernelDigest(in.Boot.Kernel, in.Boot.Cmdline, len(in.Boot.Initrd) > 0, tdx.HeaderUnmodified)
	return err == nil
}
