package unseal

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"
	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxclient "github.com/google/go-tdx-guest/client"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
)

// Evidence is one piece of TEE evidence with the launch-bound data it reports (SNP HOST_DATA,
// 32 bytes; TDX MRCONFIGID, 48 bytes).
type Evidence struct {
	Evidence *api.Evidence
	HostData []byte
}

// Attester produces evidence in the guest.
type Attester interface {
	TEE() string
	Evidence(ctx context.Context, reportData [64]byte) (*Evidence, error)
}

// SimAttester asks the host's simulated TEE over a simsp channel: the simulated AMD-SP for
// sim (SNP-format reports) or the simulated TDX for sim-tdx (TDX v4 quotes).
type SimAttester struct {
	Client *simsp.Client
	// Sim is the simulated TEE: tee.Sim (the zero value means the same) or tee.SimTDX.
	Sim tee.TEE
}

// NewSimAttester returns a sim (SNP) attester on an open simulated AMD-SP port.
func NewSimAttester(rw io.ReadWriter) *SimAttester {
	return &SimAttester{Client: simsp.NewClient(rw), Sim: tee.Sim}
}

// NewSimTDXAttester returns a sim-tdx attester on an open simulated TDX port.
func NewSimTDXAttester(rw io.ReadWriter) *SimAttester {
	return &SimAttester{Client: simsp.NewClient(rw), Sim: tee.SimTDX}
}

// OpenSim returns the attester of the simulated TEE the host launched this guest for, as the
// host says on the port (simsp.Client.TEE): the guest attests as that TEE, and the broker
// releases keys only to workloads registered for it (and only when it opted in to that
// simulation). sim and sim-tdx give a SimAttester; sim-pef a PEFAttester, which reads its ESM
// attachments from the simulated ultravisor at once.
func OpenSim(ctx context.Context, rw io.ReadWriter) (Attester, error) {
	c := simsp.NewClient(rw)
	t, err := c.TEE(ctx)
	if err != nil {
		return nil, fmt.Errorf("simulated TEE: %w", err)
	}
	if t == tee.SimPEF {
		return OpenSimPEF(ctx, c)
	}
	return &SimAttester{Client: c, Sim: t}, nil
}

func (a *SimAttester) sim() tee.TEE {
	if a.Sim == "" {
		return tee.Sim
	}
	return a.Sim
}

// TEE is "sim" or "sim-tdx".
func (a *SimAttester) TEE() string { return string(a.sim()) }

// Evidence asks for a report (sim) or a quote (sim-tdx) carrying rd.
func (a *SimAttester) Evidence(ctx context.Context, rd [64]byte) (*Evidence, error) {
	switch a.sim() {
	case tee.Sim:
		r, err := a.Client.GetReport(ctx, rd)
		if err != nil {
			return nil, err
		}
		ev := &api.Evidence{SNP: &api.SNPEvidence{Report: r.Report, CertTable: r.CertTable}}
		return &Evidence{Evidence: ev, HostData: r.HostData[:]}, nil
	case tee.SimTDX:
		q, err := a.Client.GetQuote(ctx, rd)
		if err != nil {
			return nil, err
		}
		ev := &api.Evidence{TDX: &api.TDXEvidence{Quote: q.Quote}}
		return &Evidence{Evidence: ev, HostData: q.MRConfigID[:]}, nil
	}
	return nil, fmt.Errorf("simulated TEE %q: want %s or %s", a.Sim, tee.Sim, tee.SimTDX)
}

// SNPAttester uses the SEV-SNP guest device (configfs-tsm or /dev/sev-guest).
type SNPAttester struct{}

// TEE is "snp".
func (SNPAttester) TEE() string { return api.TEESNP }

// Evidence gets an extended report (report + VCEK) from the AMD-SP.
func (SNPAttester) Evidence(_ context.Context, rd [64]byte) (*Evidence, error) {
	qp, err := sevclient.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("snp quote provider: %w", err)
	}
	if !qp.IsSupported() {
		return nil, errors.New("snp: neither configfs-tsm nor /dev/sev-guest is available")
	}
	att, err := sevclient.GetQuoteProto(qp, rd)
	if err != nil {
		return nil, fmt.Errorf("snp report: %w", err)
	}
	raw, err := abi.ReportToAbiBytes(att.GetReport())
	if err != nil {
		return nil, fmt.Errorf("snp report: %w", err)
	}
	ev := &api.SNPEvidence{Report: raw}
	if cc := att.GetCertificateChain(); cc != nil {
		ev.VCEK = cc.GetVcekCert()
	}
	return &Evidence{Evidence: &api.Evidence{SNP: ev}, HostData: att.GetReport().GetHostData()}, nil
}

// TDXAttester uses the TDX guest device (configfs-tsm or /dev/tdx_guest).
type TDXAttester struct{}

// TEE is "tdx".
func (TDXAttester) TEE() string { return api.TEETDX }

// Evidence gets a TD quote (version 4) with its PCK chain.
func (TDXAttester) Evidence(_ context.Context, rd [64]byte) (*Evidence, error) {
	qp, err := tdxclient.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("tdx quote provider: %w", err)
	}
	raw, err := tdxclient.GetRawQuote(qp, rd)
	if err != nil {
		return nil, fmt.Errorf("tdx quote: %w", err)
	}
	q, err := tdxabi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("tdx quote: %w", err)
	}
	qv4, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("tdx quote: %T, want a version 4 quote", q)
	}
	return &Evidence{Evidence: &api.Evidence{TDX: &api.TDXEvidence{Quote: raw}}, HostData: qv4.GetTdQuoteBody().GetMrConfigId()}, nil
}
