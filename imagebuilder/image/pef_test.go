package image

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/pefseal"
)

// TestPEFESM: a workload's ESM cpio goes into the sealed layer at PEFDir/<id>.cpio (what the
// runtime prepends to the guest's initrd) and Inspect lists it; a cpio for a workload without
// an envelope, or one the ultravisor would not find a blob in, is refused.
func TestPEFESM(t *testing.T) {
	in := testInput(t)
	cpio := pefseal.ESMCpio(append([]byte("\xd0\x0d\xfe\xed"), bytes.Repeat([]byte{9}, 100)...))
	in.PEF = map[string][]byte{"default.web": cpio}
	img, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := digestOf(t, in), digestOf(t, in); a != b {
		t.Fatalf("not deterministic: %s then %s", a, b)
	}
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range info.Workloads {
		switch {
		case w.ID == "default.web":
			found = w.PEFESM != nil && w.PEFESM.Path == "/"+PEFDir+"/default.web.cpio" && w.PEFESM.Size == int64(len(cpio))
		case w.PEFESM != nil:
			t.Errorf("workload %s has an ESM cpio it was not given", w.ID)
		}
	}
	if !found {
		t.Fatalf("Inspect does not list the ESM cpio of default.web: %+v", info.Workloads)
	}
	for name, tc := range map[string]struct {
		pef  map[string][]byte
		want string
	}{
		"orphan":      {map[string][]byte{"nobody": cpio}, `"nobody", which has no envelope`},
		"not an ESM":  {map[string][]byte{"default.web": []byte("hello")}, "no newc header"},
		"extra bytes": {map[string][]byte{"default.web": append(bytes.Clone(cpio), 1)}, "after the archive"},
	} {
		bad := in
		bad.PEF = tc.pef
		if _, err := Build(bad); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Build = %v, want %q", name, err, tc.want)
		}
	}
}
