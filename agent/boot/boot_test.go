package boot

import (
	"slices"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	o, err := ParseCmdline("console=ttyS0 quiet sealpod.insecure_registries=10.0.2.2:5000,10.0.2.2:5001 sealpod.debug=1 panic=-1")
	if err != nil || !slices.Equal(o.InsecureRegistries, []string{"10.0.2.2:5000", "10.0.2.2:5001"}) || !o.Debug {
		t.Fatalf("ParseCmdline: %+v %v", o, err)
	}
	for _, bad := range []string{"sealpod.insecure_registries=", "sealpod.insecure_registries=a/b", "sealpod.insecure_registries=x,,y"} {
		if _, err := ParseCmdline(bad); err == nil {
			t.Fatalf("ParseCmdline(%q) accepted", bad)
		}
	}
	if o, _ := ParseCmdline("console=hvc0"); o.Debug || o.InsecureRegistries != nil {
		t.Fatalf("defaults: %+v", o)
	}
}
