package api

import (
	"strings"
	"testing"
)

func TestValidNames(t *testing.T) {
	l63, l64 := strings.Repeat("a", 63), strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		fn   func(string) bool
		in   string
		want bool
	}{
		{"label", ValidDNSLabel, "app", true},
		{"label digits", ValidDNSLabel, "0-web-1", true},
		{"label 63", ValidDNSLabel, l63, true},
		{"label 64", ValidDNSLabel, l64, false},
		{"label empty", ValidDNSLabel, "", false},
		{"label upper", ValidDNSLabel, "App", false},
		{"label dash end", ValidDNSLabel, "app-", false},
		{"label dash start", ValidDNSLabel, "-app", false},
		{"label dot", ValidDNSLabel, "a.b", false},
		{"label newline", ValidDNSLabel, "app\n", false},
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
