package spec

import (
	"strings"
	"testing"
)

func TestValidDNSLabel(t *testing.T) {
	l63, l64 := strings.Repeat("a", 63), strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{"label", "app", true},
		{"label digits", "0-web-1", true},
		{"label 63", l63, true},
		{"label 64", l64, false},
		{"label empty", "", false},
		{"label upper", "App", false},
		{"label dash end", "app-", false},
		{"label dash start", "-app", false},
		{"label dot", "a.b", false},
		{"label newline", "app\n", false},
	} {
		if got := ValidDNSLabel(tc.in); got != tc.want {
			t.Errorf("%s: ValidDNSLabel(%q) = %v, want %v", tc.name, tc.in, got, tc.want)
		}
		if got := ValidVolumeName(tc.in); got != tc.want {
			t.Errorf("%s: ValidVolumeName(%q) = %v, want %v", tc.name, tc.in, got, tc.want)
		}
	}
}
