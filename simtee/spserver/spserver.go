// Package spserver is the host side of the simulated AMD-SP channel (the contract is package
// agent/simsp): the shim, or a test harness, serves the guest's virtio-serial port
// simsp.PortName and answers every report request with an SNP-format report signed by an
// amdsp.Signer, bound to the launch values of the guest it booted: MEASUREMENT = the sim
// launch digest (package guest-image/measure) and HOST_DATA = the envelope digest.
//
// It is the host playing the hardware: insecure by construction, for CI and demos. The guest
// treats every answer as hostile input (simsp.ParseResponse) and the broker verifies the
// signature against the sim roots it was given with --insecure-sim-roots.
package spserver

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"

	"github.com/google/go-sev-guest/abi"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/internal/spchan"
)

// Launch is what the simulated AMD-SP binds into every report of one guest.
type Launch struct {
	Measurement [48]byte // launch digest of firmware/kernel/initrd/cmdline/vCPUs
	HostData    [32]byte // envelope digest
}

// LaunchSource gives the launch values for the next report. A Launch is its own source; a
// host that changes its mind per request (a hostile host, or a test) supplies a function.
type LaunchSource interface{ Launch() Launch }

// Launch returns l.
func (l Launch) Launch() Launch { return l }

// LaunchFunc adapts a function to a LaunchSource.
type LaunchFunc func() Launch

// Launch calls f.
func (f LaunchFunc) Launch() Launch { return f() }

// LaunchFromBundle computes the launch values of a guest booted from b for an envelope: the
// sim launch digest (measure.Compute over measure.BundleInputs, as `make guest` does) and the
// envelope digest.
func LaunchFromBundle(b *bundle.Bundle, env []byte) (Launch, error) {
	var l Launch
	m, err := measure.Compute(measure.BundleInputs(b, tee.Sim))
	if err != nil {
		return l, fmt.Errorf("sim-sp launch %s: %w", b.Dir, err)
	}
	d, err := hex.DecodeString(m.Sim)
	if err != nil || len(d) != len(l.Measurement) {
		return l, fmt.Errorf("sim-sp launch %s: sim measurement %q is not 48 bytes of hex", b.Dir, m.Sim)
	}
	copy(l.Measurement[:], d)
	l.HostData = envelope.Sum(env)
	return l, nil
}

// Serve answers report requests on conn until ctx is done or the guest side closes. Every
// request is signed with signer for the values launch returns at that moment. A malformed
// request gets an error answer; a framing error ends the session. A KindTEE request is
// answered "sim"; a quote request is refused (this is the SNP simulation).
func Serve(ctx context.Context, conn io.ReadWriteCloser, signer *amdsp.Signer, launch LaunchSource, log *slog.Logger) error {
	return spchan.Serve(ctx, conn, "sim-sp", func(req *simsp.Request) *simsp.Response {
		return answer(req, signer, launch)
	}, log)
}

func answer(req *simsp.Request, signer *amdsp.Signer, launch LaunchSource) *simsp.Response {
	if r := spchan.Triage(req, tee.Sim, "makes SNP reports", "", simsp.KindReport); r != nil {
		return r
	}
	if len(req.ReportData) != abi.ReportDataSize {
		return &simsp.Response{Error: fmt.Sprintf("request reportData: %d bytes, want %d", len(req.ReportData), abi.ReportDataSize)}
	}
	l := launch.Launch()
	o := amdsp.ReportOptions{Measurement: l.Measurement, HostData: l.HostData}
	copy(o.ReportData[:], req.ReportData)
	rep, table, err := signer.Report(o)
	if err != nil {
		return &simsp.Response{Error: "sign report: " + err.Error()}
	}
	return &simsp.Response{Report: rep, CertTable: table}
}
