package qemuhelp

import (
	"slices"
	"testing"
)

func TestObjects(t *testing.T) {
	out := []byte("List of user creatable objects:\n  authz-list\n  sev-guest\n  sev-snp-guest\n\n  tdx-guest\nnot indented\n")
	if got := Objects(out); !slices.Equal(got, []string{"authz-list", "sev-guest", "sev-snp-guest", "tdx-guest"}) {
		t.Errorf("Objects = %q", got)
	}
	if got := Objects(nil); len(got) != 0 {
		t.Errorf("Objects(nil) = %q", got)
	}
}
