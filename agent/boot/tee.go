package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sealpod/sealpod/agent/attest"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/agent/vport"
)

// ErrNoTEE: the guest has no TEE interface at all.
var ErrNoTEE = errors.New("no TEE: neither SEV-SNP, TDX nor a simulated AMD-SP port")

// DetectTEE picks the attester (agent/attest.Detect): configfs-tsm when
// /sys/kernel/config/tsm/report exists and its provider is sev_guest or tdx_guest, else
// /dev/sev-guest, else /dev/tdx_guest, and the simulated TEE the host names (sim or sim-tdx)
// when it offers the simulated-TEE port.
// Which TEE is accepted is the key broker's decision (sim only with --insecure-sim-roots); the
// guest only reports what it has. The choice and its reason go to slog.Default() at debug
// level (the console stays quiet until the agent channel is up), a configfs-tsm the guest has
// but cannot use as a warning; only allow-listed keys (tee, evidence, reason, err as its kind).
// The caller warns about sim.
func DetectTEE(ctx context.Context) (unseal.Attester, error) {
	return detectTEE(ctx, attest.Default(), slog.Default(), findSim)
}

func detectTEE(ctx context.Context, env attest.Env, log *slog.Logger, sim func() (unseal.Attester, error)) (unseal.Attester, error) {
	c, err := attest.Detect(ctx, env)
	if err != nil {
		return nil, err
	}
	if c.TSMErr != nil {
		lvl := slog.LevelDebug
		if c.Attester != nil {
			lvl = slog.LevelWarn // a TEE guest whose configfs-tsm failed: evidence from the device
		}
		log.Log(ctx, lvl, "configfs-tsm not used for evidence", "reason", c.Reason, "err", c.TSMErr)
	}
	if c.Attester != nil {
		log.Debug("evidence source", "tee", c.Attester.TEE(), "evidence", c.Source, "reason", c.Reason)
		return c.Attester, nil
	}
	log.Debug("no hardware TEE interface", "reason", c.Reason)
	return sim()
}

func findSim() (unseal.Attester, error) {
	p, err := vport.Find(vport.SysClass, "/dev", simsp.PortName)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoTEE, err)
	}
	f, err := vport.Open(p)
	if err != nil {
		return nil, err
	}
	// The host says which simulated TEE (sim, sim-tdx or sim-pef) it launched this guest for;
	// a sim-pef guest reads its ESM attachments from the simulated ultravisor at once.
	ctx, cancel := context.WithTimeout(context.Background(), simTEETimeout)
	defer cancel()
	a, err := unseal.OpenSim(ctx, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

// simTEETimeout bounds the host's answer naming the simulated TEE.
const simTEETimeout = 30 * time.Second
