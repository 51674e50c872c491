// Package attest gets hardware TEE evidence inside the guest: SEV-SNP attestation reports and
// TDX quotes, through configfs-tsm (/sys/kernel/config/tsm/report, Linux ≥ 6.7) where the
// kernel has it and through the guest device (/dev/sev-guest, /dev/tdx_guest) otherwise.
// REPORT_DATA is the caller's (api.ReportData of the session); the evidence goes to the key
// broker unchanged, apart from the SNP certificate table the host supplies, which is checked
// for syntax and trimmed.
//
// The device ioctls are written here on go-sev-guest's and go-tdx-guest's ABI types rather
// than through their clients: the clients throttle every second SNP command by 2 s, register
// global flags, allocate a host-chosen certificate buffer, and (TDX) slice the quote by a
// host-written length without a bound. The libraries' fake devices and go-configfs-tsm's fake
// TSM test this code (attest_test.go), and the key broker's verifiers check what it produces.
package attest

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/report"
	"github.com/sealpod/sealpod/agent/errkind"
	"github.com/sealpod/sealpod/agent/unseal"
)

// Where the guest finds its TEE.
const (
	TSMReportDir   = configfsi.TsmPrefix + "/report"
	SEVGuestDevice = "/dev/sev-guest"
	TDXGuestDevice = "/dev/tdx_guest"
)

// Sources: how an attester gets its evidence (console values of the "evidence" key).
const (
	SourceTSM      = "configfs-tsm"
	SourceSEVGuest = "sev-guest"
	SourceTDXGuest = "tdx-guest"
)

// Reasons for a choice (console values of the "reason" key).
const (
	// ReasonTSM: the configfs-tsm report subsystem is present and names a provider we use.
	ReasonTSM = "configfs-tsm present"
	// ReasonNoTSM: no configfs-tsm report subsystem; the guest device is used.
	ReasonNoTSM = "no configfs-tsm"
	// ReasonTSMUnusable: configfs-tsm is present but failed or names another provider; the
	// guest device is used.
	ReasonTSMUnusable = "configfs-tsm unusable"
	// ReasonNoHardware: neither configfs-tsm nor a TEE guest device.
	ReasonNoHardware = "no TEE device"
)

// Sources and Reasons list every value above (the console allow-list takes them from here).
var (
	Sources = []string{SourceTSM, SourceSEVGuest, SourceTDXGuest}
	Reasons = []string{ReasonTSM, ReasonNoTSM, ReasonTSMUnusable, ReasonNoHardware}
)

// Error kinds (fixed texts: they may reach the console and the host; no evidence bytes).
var (
	// ErrEvidence: the TEE interface failed or returned evidence that is malformed.
	ErrEvidence = errkind.New("TEE evidence unavailable")
	// ErrReportData: the evidence does not carry the REPORT_DATA that was asked for.
	ErrReportData = errkind.New("TEE evidence does not carry the requested REPORT_DATA")
)

// TSM providers (the configfs-tsm "provider" attribute, without its newline).
const (
	providerSNP = "sev_guest"
	providerTDX = "tdx_guest"
)

// maxProvider bounds the provider name we read.
const maxProvider = 64

// Env is where Detect looks; Default is the guest's. Tests replace every field.
type Env struct {
	// TSMDir is the configfs-tsm report directory; it is used only when it exists.
	TSMDir string
	// TSM opens the configfs-tsm client (linuxtsm.MakeClient).
	TSM func() (configfsi.Client, error)
	// SEVGuest and TDXGuest are the device paths, used only when they exist.
	SEVGuest, TDXGuest string
	// OpenSEV and OpenTDX open the devices.
	OpenSEV func(path string) (SEVDevice, error)
	OpenTDX func(path string) (TDXDevice, error)
}

// Choice is the attester Detect picked and why.
type Choice struct {
	// Attester is nil when the guest has no hardware TEE interface (Reason says which).
	Attester Attester
	// Source is one of Sources ("" with no attester); Reason one of Reasons.
	Source, Reason string
	// TSMErr is why configfs-tsm was not used when Reason is ReasonTSMUnusable.
	TSMErr error
}

// Attester is an unseal.Attester that also says where its evidence comes from.
type Attester interface {
	unseal.Attester
	Source() string
}

// Detect picks the evidence source: configfs-tsm when TSMDir exists and its provider is
// sev_guest or tdx_guest, else /dev/sev-guest, else /dev/tdx_guest. A configfs-tsm that fails
// or names another provider falls back to the devices (ReasonTSMUnusable, with TSMErr).
// Without any, Choice.Attester is nil and the caller decides (sim or no TEE).
func Detect(ctx context.Context, env Env) (Choice, error) {
	var tsmErr error
	if exists(env.TSMDir) {
		c, err := tsmChoice(env)
		if err == nil {
			return c, nil
		}
		tsmErr = err
	}
	reason := ReasonNoTSM
	if tsmErr != nil {
		reason = ReasonTSMUnusable
	}
	if exists(env.SEVGuest) {
		d, err := env.OpenSEV(env.SEVGuest)
		if err != nil {
			return Choice{}, fmt.Errorf("open %s: %w", env.SEVGuest, errors.Join(ErrEvidence, err))
		}
		return Choice{Attester: &SNP{Device: d}, Source: SourceSEVGuest, Reason: reason, TSMErr: tsmErr}, nil
	}
	if exists(env.TDXGuest) {
		d, err := env.OpenTDX(env.TDXGuest)
		if err != nil {
			return Choice{}, fmt.Errorf("open %s: %w", env.TDXGuest, errors.Join(ErrEvidence, err))
		}
		return Choice{Attester: &TDX{Device: d}, Source: SourceTDXGuest, Reason: reason, TSMErr: tsmErr}, nil
	}
	if tsmErr != nil {
		return Choice{Reason: ReasonTSMUnusable, TSMErr: tsmErr}, nil
	}
	_ = ctx
	return Choice{Reason: ReasonNoHardware}, nil
}

// tsmChoice opens configfs-tsm and reads its provider from a fresh report entry (reading
// "provider" generates no report).
func tsmChoice(env Env) (Choice, error) {
	c, err := env.TSM()
	if err != nil {
		return Choice{}, fmt.Errorf("configfs-tsm: %w", errors.Join(ErrEvidence, err))
	}
	r, err := report.Create(c, &report.Request{})
	if err != nil {
		return Choice{}, fmt.Errorf("configfs-tsm: %w", errors.Join(ErrEvidence, err))
	}
	p, err := r.ReadOption("provider")
	if derr := r.Destroy(); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		return Choice{}, fmt.Errorf("configfs-tsm provider: %w", errors.Join(ErrEvidence, err))
	}
	switch provider(p) {
	case providerSNP:
		return Choice{Attester: &SNP{TSM: c}, Source: SourceTSM, Reason: ReasonTSM}, nil
	case providerTDX:
		return Choice{Attester: &TDX{TSM: c}, Source: SourceTSM, Reason: ReasonTSM}, nil
	}
	return Choice{}, fmt.Errorf("configfs-tsm provider %q: %w: neither %s nor %s", provider(p), ErrEvidence, providerSNP, providerTDX)
}

// provider is the configfs-tsm provider attribute without its newline, clipped and with
// anything but [a-z0-9_] replaced (it is quoted in errors).
func provider(b []byte) string {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if len(b) > maxProvider {
		b = b[:maxProvider]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' {
			out[i] = c
		} else {
			out[i] = '?'
		}
	}
	return string(out)
}

// tsmReport gets one report through configfs-tsm and checks the provider.
func tsmReport(c configfsi.Client, want string, rd [64]byte, aux bool) (*report.Response, error) {
	resp, err := report.Get(c, &report.Request{InBlob: rd[:], GetAuxBlob: aux})
	if err != nil {
		return nil, fmt.Errorf("configfs-tsm report: %w", errors.Join(ErrEvidence, err))
	}
	if got := provider([]byte(resp.Provider)); got != want {
		return nil, fmt.Errorf("configfs-tsm report: %w: provider %q, want %q", ErrEvidence, got, want)
	}
	return resp, nil
}

func exists(p string) bool {
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}
