package tdx

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/verify"
)

// rtmrBoots reads testdata/rtmr-boots.json: RTMR[1]/RTMR[2] that guest-image/measure computes
// for a few direct boots (kept current by guest-image/measure TestTDXBootsGolden; the broker
// may not import guest code).
func rtmrBoots(t *testing.T) map[string][2][]byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/rtmr-boots.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Boots map[string]struct{ RTMR1, RTMR2 string } `json:"boots"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string][2][]byte{}
	for name, b := range f.Boots {
		r1, err1 := hex.DecodeString(b.RTMR1)
		r2, err2 := hex.DecodeString(b.RTMR2)
		if err1 != nil || err2 != nil || len(r1) != 48 || len(r2) != 48 {
			t.Fatalf("boot %s: bad RTMRs", name)
		}
		out[name] = [2][]byte{r1, r2}
	}
	return out
}

// TestVerifyTDXBoots: a workload registered for one guest boot (its MRTD, RTMR[1], RTMR[2]
// from guest-image) gets the key only for a quote of that boot; a quote from a TD booted with
// another kernel (another built-in initramfs) or another separate initrd is refused, even with
// the right firmware, REPORT_DATA and MRCONFIGID.
func TestVerifyTDXBoots(t *testing.T) {
	boots := rtmrBoots(t)
	base := sampleOptions(t)
	intel := newFakeIntel(t)
	nonce, pub := make([]byte, 32), make([]byte, 32)
	rand.Read(nonce)
	rand.Read(pub)
	rd := api.ReportData(nonce, pub)
	digest := sha256.Sum256([]byte("envelope"))
	mrtd := hex.EncodeToString(base.MRTD[:])
	quoteOf := func(boot string) []byte {
		o := base
		o.ReportData = rd
		copy(o.MRConfigID[:], digest[:])
		copy(o.RTMRs[1][:], boots[boot][0])
		copy(o.RTMRs[2][:], boots[boot][1])
		return intel.quote(t, o)
	}
	policyFor := func(boot string) verify.Policy {
		r := boots[boot]
		return verify.Policy{
			Measurements: []string{mrtd + "::" + hex.EncodeToString(r[0]) + ":" + hex.EncodeToString(r[1]) + ":"},
			HostData:     digest[:],
			ReportData:   rd[:],
		}
	}
	for _, tc := range []struct {
		registered, booted string
		ok                 bool
	}{
		{"builtin", "builtin", true},
		{"builtin", "builtin-other", false},   // other kernel (other built-in initramfs)
		{"builtin", "separate-initrd", false}, // other kernel and initrd
		{"separate-initrd", "separate-initrd", true},
		{"separate-initrd", "other-initrd", false}, // same kernel, other initrd: RTMR[2]
	} {
		t.Run(tc.registered+"/"+tc.booted, func(t *testing.T) {
			if _, ok := boots[tc.registered]; !ok {
				t.Fatalf("no boot %s in testdata", tc.registered)
			}
			v := New(Config{TrustedRoots: intel.pool})
			res, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: quoteOf(tc.booted)}}, policyFor(tc.registered))
			if tc.ok {
				if err != nil || res.TEE != api.TEETDX {
					t.Fatalf("Verify: %+v, %v", res, err)
				}
				return
			}
			var rej *verify.Rejection
			if !errors.As(err, &rej) || rej.Field != verify.FieldMeasurement {
				t.Fatalf("Verify error %v, want a rejection of the measurement", err)
			}
		})
	}
	// The policy pins RTMR[1] and RTMR[2]: leaving either open is refused before any quote.
	p := policyFor("builtin")
	p.Measurements = []string{mrtd + ":::" + hex.EncodeToString(boots["builtin"][1]) + ":"}
	v := New(Config{TrustedRoots: intel.pool})
	_, err := v.Verify(context.Background(), &api.Evidence{TDX: &api.TDXEvidence{Quote: quoteOf("builtin")}}, p)
	var rej *verify.Rejection
	if !errors.As(err, &rej) || rej.Field != verify.FieldPolicy {
		t.Fatalf("policy without RTMR[1]: %v, want a policy rejection", err)
	}
}
