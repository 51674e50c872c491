package verify

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/api"
)

// Checks of one expected (sealed) workload against the broker's registration: annotations,
// secure image, envelope digest and header, TEEs, measurements, SANs and minimum TCB.

type imageResult struct {
	info *image.Info
	err  error
}

// refDigest returns the digest a reference pins ("" for a tag).
func refDigest(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	return ""
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	x, y = slices.Compact(x), slices.Compact(y)
	return slices.Equal(x, y) && len(a) == len(x) && len(b) == len(y)
}

// checkExpected compares one sealed pod template with the broker.
// namesBroker reports whether url is the broker's URL or one of its aliases.
func namesBroker(url, broker string, aliases []string) bool {
	u := normalizeURL(url)
	if u == broker {
		return true
	}
	for _, a := range aliases {
		if u == normalizeURL(a) {
			return true
		}
	}
	return false
}

func checkExpected(ctx context.Context, r *Report, e Expected, w *api.Workload, images map[string]imageResult, o Options) {
	subj := e.Workload
	if e.Object != "" {
		subj += " (" + e.Object + ")"
	}
	if e.Workload == "" {
		r.fail(CheckRegistered, subj, "", "", "%s in %s: annotation sealpod.io/workload is empty", e.Path, e.Source)
		return
	}
	if !namesBroker(e.KBS, r.KBS, o.Aliases) {
		r.fail(CheckAnnotationKBS, subj, r.KBS, e.KBS, "annotation sealpod.io/kbs names %q, not this broker %s", e.KBS, r.KBS)
	} else {
		r.ok(CheckAnnotationKBS, subj, "annotation sealpod.io/kbs names this broker")
	}
	if w == nil {
		r.fail(CheckRegistered, subj, "registered", "absent", "workload %s is not registered at the broker: no guest can get its key", e.Workload)
		return
	}
	r.ok(CheckRegistered, subj, "registered, generation %d, updated %s", w.Generation, w.UpdatedAt.Format(time.RFC3339))

	if e.Image == "" {
		r.fail(CheckImage, subj, "", "", "%s in %s: annotation sealpod.io/image is missing", e.Path, e.Source)
		return
	}
	res, ok := images[e.Image]
	if !ok {
		res.info, res.err = o.LoadImage(ctx, e.Image)
		images[e.Image] = res
	}
	if res.err != nil {
		r.fail(CheckImage, subj, e.Image, "", "load secure image %s: %v", e.Image, res.err)
		return
	}
	info := res.info
	if d := refDigest(e.Image); d == "" {
		r.fail(CheckImage, subj, "a digest", e.Image, "annotation sealpod.io/image %q does not pin a digest", e.Image)
		return
	} else if d != info.Digest {
		r.fail(CheckImage, subj, d, info.Digest, "secure image %s has digest %s", e.Image, info.Digest)
		return
	}
	r.ok(CheckImage, subj, "secure image %s loaded, digest verified", e.Image)

	var wi *image.WorkloadInfo
	for i := range info.Workloads {
		if info.Workloads[i].ID == e.Workload {
			wi = &info.Workloads[i]
		}
	}
	if wi == nil {
		r.fail(CheckEnvelope, subj, e.Workload, "", "secure image %s holds no envelope for workload %s", e.Image, e.Workload)
		return
	}
	if wi.EnvelopeDigest != w.EnvelopeDigest {
		r.fail(CheckEnvelopeDigest, subj, wi.EnvelopeDigest, w.EnvelopeDigest,
			"the broker expects envelope digest (HOST_DATA) %s, the envelope in the image has %s: the broker would release the key for another envelope", w.EnvelopeDigest, wi.EnvelopeDigest)
	} else {
		r.ok(CheckEnvelopeDigest, subj, "envelope digest %s", w.EnvelopeDigest)
	}
	var kbsProblems []string
	if !namesBroker(wi.KBS, r.KBS, o.Aliases) {
		kbsProblems = append(kbsProblems, fmt.Sprintf("URL %q, want %s", wi.KBS, r.KBS))
	}
	if normalizeHex(wi.KBSCASHA256) != r.TLSCASHA256 {
		kbsProblems = append(kbsProblems, fmt.Sprintf("CA pin sha256:%s, want sha256:%s", wi.KBSCASHA256, r.TLSCASHA256))
	}
	if len(kbsProblems) > 0 {
		r.fail(CheckEnvelopeKBS, subj, r.KBS+" sha256:"+r.TLSCASHA256, wi.KBS+" sha256:"+wi.KBSCASHA256,
			"the envelope header names another broker: %s", strings.Join(kbsProblems, "; "))
	} else {
		r.ok(CheckEnvelopeKBS, subj, "the envelope header names this broker and pins its TLS CA")
	}
	if !sameSet(wi.TEEs, w.TEEs) {
		r.fail(CheckTEEs, subj, strings.Join(wi.TEEs, ","), strings.Join(w.TEEs, ","), "the broker allows TEEs %v, the envelope is sealed for %v", w.TEEs, wi.TEEs)
	} else {
		r.ok(CheckTEEs, subj, "TEEs %s", strings.Join(w.TEEs, ","))
	}
	gc := bundle.Config{Measurements: info.Guest.Measurements}
	if wi.Guest != nil { // the workload's own guest.json (sized for its pod), which the shim boots
		gc.Measurements = wi.Guest.Measurements
	}
	tees := slices.Clone(w.TEEs)
	for t := range w.Measurements {
		if !slices.Contains(tees, t) {
			tees = append(tees, t)
		}
	}
	sort.Strings(tees)
	for _, t := range tees {
		got := w.Measurements[t]
		want, err := gc.Measurement(tee.TEE(t))
		if err != nil {
			r.fail(CheckMeasurement, subj+" "+t, "", strings.Join(got, ","), "the secure image's guest.json: %v", err)
			continue
		}
		if len(got) != 1 || got[0] != want {
			r.fail(CheckMeasurement, subj+" "+t, want, strings.Join(got, ","),
				"the broker allows %s launch measurement(s) %v, the image's guest is %s", t, got, want)
			continue
		}
		r.ok(CheckMeasurement, subj+" "+t, "%s measurement %s", t, want)
	}
	checkSANs(r, subj, w, o)
	checkMinTCB(r, subj, w, e.MinTCB, "the sealed manifest ("+AnnotationMinTCB+")")
}

func checkSANs(r *Report, subj string, w *api.Workload, o Options) {
	var bad []string
	for _, s := range w.SANs {
		if err := api.ValidateSAN(s); err != nil {
			bad = append(bad, fmt.Sprintf("%q: %v", s, err))
		}
	}
	switch {
	case len(bad) > 0:
		r.fail(CheckSANs, subj, "", strings.Join(w.SANs, ","), "invalid registered SANs: %s", strings.Join(bad, "; "))
	case len(w.SANs) == 0:
		r.fail(CheckSANs, subj, "", "", "no SANs registered: the workload certificate would name nothing")
	default:
		if want, ok := o.SANs[w.ID]; ok && !sameSet(want, w.SANs) {
			r.fail(CheckSANs, subj, strings.Join(want, ","), strings.Join(w.SANs, ","), "the broker issues certificates for SANs %v, expected %v", w.SANs, want)
			return
		}
		r.ok(CheckSANs, subj, "certificates name %s", strings.Join(w.SANs, ", "))
	}
}
