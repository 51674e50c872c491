package measure

import (
	"encoding/hex"
	"testing"

	"github.com/sealpod/sealpod/guest-image/measure/internal/testkernel"
	"github.com/sealpod/sealpod/guest-image/measure/tdx"
	"github.com/sealpod/sealpod/internal/tee"
)

// TestSimTDX: the sim-tdx reference value is MRTD of the firmware bytes and RTMR[1]/[2] of
// the boot, computed with the tdx package's functions; each input changes exactly its
// register, and a kernel without an EFI stub is an error when sim-tdx is asked for and left
// out of the default selection.
func TestSimTDX(t *testing.T) {
	kernel := testkernel.BzImage("6.1.0-sim", 0x4000, true)
	base := Boot{Kernel: kernel, Initrd: []byte("initrd"), Cmdline: "console=hvc0"}
	compute := func(t *testing.T, fw []byte, b Boot) (mrtd, r1, r2 string) {
		t.Helper()
		m, err := Compute(Inputs{Firmware: nil, Boot: &b, VCPUs: 1, TEEs: []tee.TEE{tee.SimTDX}})
		if fw != nil {
			// Firmware bytes enter MRTD only (no TDVF metadata needed): computed directly.
			in := Inputs{Firmware: fw, Boot: &b}
			tm, err2 := in.simTDXMeasurement()
			if err2 != nil {
				t.Fatal(err2)
			}
			return tm.MRTD, tm.RTMRs[1], tm.RTMRs[2]
		}
		if err != nil || m.SimTDX == nil || len(m.SimTDX.RTMRs) != 4 || m.SimTDX.RTMRs[0] != "" || m.SimTDX.RTMRs[3] != "" {
			t.Fatalf("Compute sim-tdx: %+v, %v", m.SimTDX, err)
		}
		return m.SimTDX.MRTD, m.SimTDX.RTMRs[1], m.SimTDX.RTMRs[2]
	}
	mrtd, r1, r2 := compute(t, nil, base)
	kd, err := tdx.KernelDigest(kernel, base.Cmdline, true, tdx.HeaderUnmodified)
	if err != nil {
		t.Fatal(err)
	}
	wantR1, wantR2, wantMRTD := tdx.RTMR1Value(kd), tdx.RTMR2Value(base.Cmdline, base.Initrd), tdx.SimMRTD(nil)
	if r1 != hex.EncodeToString(wantR1[:]) || r2 != hex.EncodeToString(wantR2[:]) || mrtd != hex.EncodeToString(wantMRTD[:]) {
		t.Fatalf("sim-tdx %s %s %s, want the tdx functions' values", mrtd, r1, r2)
	}
	other := base
	other.Kernel = testkernel.BzImage("6.1.0-other", 0x4000, true)
	otherInitrd := base
	otherInitrd.Initrd = []byte("initrd 2")
	otherCmdline := base
	otherCmdline.Cmdline = "console=hvc0 quiet"
	for _, tc := range []struct {
		name     string
		fw       []byte
		b        Boot
		mrtd     bool // which registers change
		r1, r2   bool
		errorful bool
	}{
		{name: "other kernel", b: other, r1: true},
		{name: "other initrd", b: otherInitrd, r2: true},
		{name: "other cmdline", b: otherCmdline, r2: true},
		{name: "firmware", fw: []byte("firmware.fd"), b: base, mrtd: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, x1, x2 := compute(t, tc.fw, tc.b)
			if (m != mrtd) != tc.mrtd || (x1 != r1) != tc.r1 || (x2 != r2) != tc.r2 {
				t.Fatalf("changed mrtd=%v rtmr1=%v rtmr2=%v, want %v %v %v", m != mrtd, x1 != r1, x2 != r2, tc.mrtd, tc.r1, tc.r2)
			}
		})
	}
	noStub := Boot{Kernel: testkernel.BzImage("6.1.0-sim", 0x4000, false), Cmdline: "x"}
	if _, err := Compute(Inputs{Boot: &noStub, VCPUs: 1, TEEs: []tee.TEE{tee.SimTDX}}); err == nil {
		t.Fatal("sim-tdx of a kernel without an EFI stub: no error")
	}
	if m, err := Compute(Inputs{Boot: &noStub, VCPUs: 1}); err != nil || m.SimTDX != nil {
		t.Fatalf("default selection, no EFI stub: %+v, %v", m.SimTDX, err)
	}
	if m, err := Compute(Inputs{Boot: &base, VCPUs: 1}); err != nil || m.SimTDX == nil {
		t.Fatalf("default selection, EFI stub: %+v, %v", m.SimTDX, err)
	}
}
