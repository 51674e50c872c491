package verify

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/kbstest"
)

// TestMinTCB registers policies at, above and below a minimum TCB (and none at all) and
// checks that verify fails exactly those below it, whether the minimum comes from the
// verifier (Options.MinTCB, the --snp-min-tcb/--tdx-min-tcb flags) or from the sealed
// manifests (annotation sealpod.io/min-tcb).
func TestMinTCB(t *testing.T) {
	kb := kbstest.Start(t)
	ctx := context.Background()
	hex96 := strings.Repeat("ab", 48)
	tdxPinned := hex96 + "::" + hex96 + ":" + hex96 + ":"
	snp := func(bl, tee, s, uc uint8) *api.SNPTCB {
		return &api.SNPTCB{Bootloader: bl, TEE: tee, SNP: s, Microcode: uc}
	}
	svn := func(b byte) string { return strings.Repeat("02", 15) + fmt.Sprintf("%02x", b) }
	regs := []struct {
		id     string
		tees   []string
		tcb    api.TCB
		failed bool
	}{
		{id: "snp-equal", tees: []string{"snp"}, tcb: api.TCB{SNP: snp(3, 0, 8, 115)}},
		{id: "snp-above", tees: []string{"snp"}, tcb: api.TCB{SNP: snp(4, 0, 9, 200)}},
		{id: "snp-microcode-below", tees: []string{"snp"}, tcb: api.TCB{SNP: snp(9, 9, 9, 114)}, failed: true},
		{id: "snp-none", tees: []string{"snp"}, failed: true},
		{id: "tdx-equal", tees: []string{"tdx"}, tcb: api.TCB{TDXTeeTCBSVN: svn(5)}},
		{id: "tdx-below", tees: []string{"tdx"}, tcb: api.TCB{TDXTeeTCBSVN: svn(4)}, failed: true},
		{id: "tdx-none", tees: []string{"tdx"}, failed: true},
		{id: "pef-only", tees: []string{"pef"}},
	}
	for _, r := range regs {
		w := api.Workload{ID: r.id, TEEs: r.tees, Measurements: map[string][]string{}, MinTCB: r.tcb,
			EnvelopeDigest: strings.Repeat("cd", 32), SANs: []string{r.id + ".svc"}, DataKey: make([]byte, 32)}
		for _, tee := range r.tees {
			switch tee {
			case "snp":
				w.Measurements[tee] = []string{hex96}
			case "tdx":
				w.Measurements[tee] = []string{tdxPinned}
			case "pef":
				w.PEFCredential = strings.Repeat("ef", 32)
			}
		}
		if _, err := kb.Registry.Put(ctx, w, "test"); err != nil {
			t.Fatal(err)
		}
	}
	min := api.TCB{SNP: snp(3, 0, 8, 115), TDXTeeTCBSVN: svn(5)}
	o := Options{URL: kb.URL, CAPEM: kb.State.TLSCAPEM, SigningKey: kb.State.Signer.Public(), MinTCB: &min,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, c := range rep.Checks {
		if c.ID == CheckMinTCB {
			status[strings.Fields(c.Subject)[0]] = c.Status
		}
	}
	for _, r := range regs {
		want := StatusOK
		if r.failed {
			want = StatusFail
		}
		if r.id == "pef-only" {
			want = "" // no TCB to compare
		}
		if status[r.id] != want {
			t.Errorf("workload %s: min-tcb check %q, want %q (checks %v)", r.id, status[r.id], want, status)
		}
	}
	if rep.OK {
		t.Fatal("report passes with policies below the minimum TCB")
	}

	// The same minimum declared by the sealed manifest of one workload.
	exp, err := ParseExpected([]manifests.Source{{Name: "m", Data: []byte(`apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {sealpod.io/workload: snp-microcode-below, sealpod.io/min-tcb: "snp=3,0,8,115;tdx=` + svn(5) + `"}}
`)}})
	if err != nil || len(exp) != 1 || exp[0].MinTCB == nil || exp[0].MinTCB.SNP == nil || *exp[0].MinTCB.SNP != *min.SNP || exp[0].MinTCB.TDXTeeTCBSVN != min.TDXTeeTCBSVN {
		t.Fatalf("ParseExpected min-tcb: %+v, %v", exp, err)
	}
	var fails []string
	rep2 := &Report{}
	checkMinTCB(rep2, exp[0].Workload, &api.Workload{ID: "snp-microcode-below", TEEs: []string{"snp"}, MinTCB: api.TCB{SNP: snp(9, 9, 9, 114)}}, exp[0].MinTCB, "the sealed manifest")
	for _, c := range rep2.Checks {
		if c.Status == StatusFail {
			fails = append(fails, c.Message)
		}
	}
	if len(fails) != 1 || !strings.Contains(fails[0], "microcode") {
		t.Fatalf("declared minimum: failures %q, want one naming microcode", fails)
	}
	for _, bad := range []string{"snp=3,0,8", "snp=3,0,8,256", "tdx=zz", "sev=1", "snp=1,2,3,4;snp=1,2,3,4"} {
		if _, err := ParseMinTCB(bad); err == nil {
			t.Errorf("ParseMinTCB(%q) accepted", bad)
		}
	}
}

// FormatMinTCB writes what ParseMinTCB reads back, for each combination of minimums.
func TestFormatMinTCBRoundTrip(t *testing.T) {
	tdx := strings.Repeat("0a", 16)
	for _, tc := range []struct {
		in   api.TCB
		want string
	}{
		{api.TCB{}, ""},
		{api.TCB{SNP: &api.SNPTCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115}}, "snp=3,0,8,115"},
		{api.TCB{TDXTeeTCBSVN: tdx}, "tdx=" + tdx},
		{api.TCB{SNP: &api.SNPTCB{Bootloader: 1, TEE: 2, SNP: 3, Microcode: 4}, TDXTeeTCBSVN: tdx}, "snp=1,2,3,4;tdx=" + tdx},
	} {
		got := FormatMinTCB(tc.in)
		if got != tc.want {
			t.Errorf("FormatMinTCB(%+v) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		if got == "" {
			continue
		}
		back, err := ParseMinTCB(got)
		if err != nil {
			t.Errorf("ParseMinTCB(%q): %v", got, err)
			continue
		}
		if FormatMinTCB(*back) != got {
			t.Errorf("round trip of %q gave %q", got, FormatMinTCB(*back))
		}
	}
}
