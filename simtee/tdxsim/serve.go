// Package tdxsim is the simulated TDX hardware of the `sim-tdx` TEE as the node plays it (the
// simtee component): the launch values of a guest booted from a guest bundle (MRTD and RTMRs
// as guest-image computes them for sim-tdx, MRCONFIGID = the envelope digest) and the host
// side of the guest's simulated-TEE port (agent/simsp), answering with TDX v4 quotes that a
// package simtee/tdxqe signer makes under the node's fake Intel PCK chain.
//
// INSECURE BY CONSTRUCTION: the host holds every private key and can read and write guest
// memory; it exists so CI and demos run the key broker's real TDX verifier end to end without
// TDX, accepted only under --insecure-sim-roots. The shim links it; the agent never does.
package tdxsim

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/simtee/internal/spchan"
	"github.com/sealpod/sealpod/simtee/tdxqe"
)

// Signer signs the quotes (package tdxqe).
type Signer = tdxqe.Signer

// LoadSigner reads the node's key file (`sealpod-kbs sim-roots --tdx-key-out`: PCK private key
// and chain) and returns a signer with a fresh attestation key.
func LoadSigner(path string) (*Signer, error) { return tdxqe.LoadSigner(path) }

// Launch is what the simulated TDX binds into every quote of one guest.
type Launch struct {
	MRTD       [48]byte    // tdx.SimMRTD of the firmware
	RTMRs      [4][48]byte // RTMR[1] kernel, RTMR[2] command line and initrd; 0 and 3 zero
	MRConfigID [48]byte    // the envelope digest, zero-padded (tee.SimTDX.HostData)
}

// LaunchSource gives the launch values for the next quote. A Launch is its own source; a host
// that changes its mind per request (a hostile host, or a test) supplies a function.
type LaunchSource interface{ Launch() Launch }

// Launch returns l.
func (l Launch) Launch() Launch { return l }

// LaunchFunc adapts a function to a LaunchSource.
type LaunchFunc func() Launch

// Launch calls f.
func (f LaunchFunc) Launch() Launch { return f() }

// LaunchFromBundle computes the launch values of a guest booted from b for an envelope: the
// sim-tdx reference value that `make guest` writes into guest.json (measure.Compute over
// measure.BundleInputs for tee.SimTDX, recomputed from the files, never read from guest.json)
// and MRCONFIGID = the envelope digest as tee.SimTDX places it.
func LaunchFromBundle(b *bundle.Bundle, env []byte) (Launch, error) {
	var l Launch
	m, err := measure.Compute(measure.BundleInputs(b, tee.SimTDX))
	if err != nil {
		return l, fmt.Errorf("sim-tdx launch %s: %w", b.Dir, err)
	}
	if m.SimTDX == nil {
		return l, fmt.Errorf("sim-tdx launch %s: no sim-tdx measurement", b.Dir)
	}
	if err := decode48(&l.MRTD, m.SimTDX.MRTD); err != nil {
		return l, fmt.Errorf("sim-tdx launch %s: mrtd: %w", b.Dir, err)
	}
	if len(m.SimTDX.RTMRs) > len(l.RTMRs) {
		return l, fmt.Errorf("sim-tdx launch %s: %d RTMRs", b.Dir, len(m.SimTDX.RTMRs))
	}
	for i, r := range m.SimTDX.RTMRs {
		if r == "" {
			continue // not pinned: zero
		}
		if err := decode48(&l.RTMRs[i], r); err != nil {
			return l, fmt.Errorf("sim-tdx launch %s: rtmr%d: %w", b.Dir, i, err)
		}
	}
	copy(l.MRConfigID[:], tee.SimTDX.HostData(envelope.Sum(env)))
	return l, nil
}

func decode48(dst *[48]byte, s string) error {
	d, err := hex.DecodeString(s)
	if err != nil || len(d) != len(dst) {
		return fmt.Errorf("%q is not 48 bytes of hex", s)
	}
	copy(dst[:], d)
	return nil
}

// Serve answers the guest's requests on conn (the simsp.PortName port) until ctx is done or
// the guest side closes: KindTEE with "sim-tdx", KindQuote with a quote signed by s for the
// values l returns at that moment. Report requests (sim) and malformed requests get an error
// answer; a framing error ends the session.
func Serve(ctx context.Context, conn io.ReadWriteCloser, s *Signer, l LaunchSource, log *slog.Logger) error {
	return spchan.Serve(ctx, conn, "sim-tdx", func(req *simsp.Request) *simsp.Response {
		return answer(req, s, l)
	}, log)
}

func answer(req *simsp.Request, s *Signer, l LaunchSource) *simsp.Response {
	if r := spchan.Triage(req, tee.SimTDX, "makes TDX quotes", simsp.KindQuote); r != nil {
		return r
	}
	if len(req.ReportData) != 64 {
		return &simsp.Response{Error: fmt.Sprintf("request reportData: %d bytes, want 64", len(req.ReportData))}
	}
	launch := l.Launch()
	o := tdxqe.QuoteOptions{MRTD: launch.MRTD, RTMRs: launch.RTMRs, MRConfigID: launch.MRConfigID}
	copy(o.ReportData[:], req.ReportData)
	q, err := s.Quote(o)
	if err != nil {
		return &simsp.Response{Error: "sign quote: " + err.Error()}
	}
	return &simsp.Response{Quote: q}
}
