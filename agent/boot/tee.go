package boot

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/agent/unseal"
	"github.com/sealpod/sealpod/agent/vport"
)

// ErrNoTEE: the guest has no TEE interface at all.
var ErrNoTEE = errors.New("no TEE: neither SEV-SNP, TDX nor a simulated AMD-SP port")

// DetectTEE picks the attester: SEV-SNP when the guest has /dev/sev-guest or configfs-tsm
// with the sev-guest provider, TDX with /dev/tdx_guest, and sim when the host offers the
// simulated AMD-SP port. Which TEE is accepted is the key broker's decision (sim only with
// --insecure-sim-roots); the guest only reports what it has. It does not log (the console
// stays quiet until the agent channel is up): the caller warns about sim.
func DetectTEE(context.Context) (unseal.Attester, error) {
	if exists("/dev/sev-guest") {
		return unseal.SNPAttester{}, nil
	}
	if exists("/dev/tdx_guest") {
		return unseal.TDXAttester{}, nil
	}
	p, err := vport.Find(vport.SysClass, "/dev", simsp.PortName)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoTEE, err)
	}
	f, err := vport.Open(p)
	if err != nil {
		return nil, err
	}
	return unseal.NewSimAttester(f), nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
