package image

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
)

// TestWorkloadGuests: a workload's own guest.json goes into the sealed layer (the guest layer
// stays the bundle's, shared between images), deterministically; Inspect shows it with the
// workload; a guest.json for a workload without an envelope, or an invalid one, is refused.
func TestWorkloadGuests(t *testing.T) {
	in := testInput(t)
	sized := in.Guest.Config
	sized.VCPUs, sized.MemoryMiB = 2, 224
	in.WorkloadGuests = map[string]*bundle.Config{"default.web": &sized}
	img, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Build(Input{Guest: in.Guest, Envelopes: in.Envelopes})
	if err != nil {
		t.Fatal(err)
	}
	layers := func(img v1.Image) []v1.Hash {
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		var out []v1.Hash
		for _, l := range ls {
			d, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d)
		}
		return out
	}
	a, b := layers(img), layers(plain)
	if len(a) != 2 || a[0] != b[0] || a[1] == b[1] {
		t.Errorf("layers %v vs %v: want the same guest layer and another sealed layer", a, b)
	}
	first := digestOf(t, in)
	for range 3 {
		if d := digestOf(t, in); d != first {
			t.Fatalf("not deterministic: %s then %s", first, d)
		}
	}
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range info.Workloads {
		switch {
		case w.ID == "default.web" && (w.Guest == nil || w.Guest.VCPUs != 2 || w.Guest.MemoryMiB != 224 || w.Guest.Measurements.Sim != sized.Measurements.Sim):
			t.Errorf("workload %s guest %+v", w.ID, w.Guest)
		case w.ID != "default.web" && w.Guest != nil:
			t.Errorf("workload %s has a guest %+v it was not given", w.ID, w.Guest)
		}
	}
	if info.Guest.MemoryMiB != 512 {
		t.Errorf("image guest.json %+v: want the bundle's", info.Guest)
	}

	orphan := in
	orphan.WorkloadGuests = map[string]*bundle.Config{"nobody": &sized}
	if _, err := Build(orphan); err == nil || !strings.Contains(err.Error(), `"nobody", which has no envelope`) {
		t.Errorf("orphan guest.json: %v", err)
	}
	bad := sized
	bad.MemoryMiB = 1
	invalid := in
	invalid.WorkloadGuests = map[string]*bundle.Config{"default.web": &bad}
	if _, err := Build(invalid); err == nil || !strings.Contains(err.Error(), "memoryMiB") {
		t.Errorf("invalid guest.json: %v", err)
	}
}
