package api

import (
	"strings"
	"testing"
)

func TestValidNames(t *testing.T) {
	l64 := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		fn   func(string) bool
		in   string
		want bool
	}{
		{"container", ValidContainerName, "sidecar-2", true},
		{"container 64", ValidContainerName, l64, false},
		{"exec id", ValidExecID, "probe-1.A_b", true},
		{"exec id 64", ValidExecID, l64, true},
		{"exec id 65", ValidExecID, l64 + "a", false},
		{"exec id leading dot", ValidExecID, ".x", false},
		{"exec id empty", ValidExecID, "", false},
		{"exec id slash", ValidExecID, "a/b", false},
		{"serial", ValidVolumeSerial, "sealpod-7", true},
		{"serial 2 digits", ValidVolumeSerial, "sealpod-42", true},
		{"serial 3 digits", ValidVolumeSerial, "sealpod-420", false},
		{"serial other prefix", ValidVolumeSerial, "virtio-1", false},
	} {
		if got := tc.fn(tc.in); got != tc.want {
			t.Errorf("%s: (%q) = %v, want %v", tc.name, tc.in, got, tc.want)
		}
	}
}
