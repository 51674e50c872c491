package kernel

import (
	"strings"
	"testing"
)

func TestCheckKconfig(t *testing.T) {
	const final = "CONFIG_A=y\nCONFIG_N=64\nCONFIG_S=\"x\"\n# CONFIG_OFF is not set\n"
	tests := []struct {
		name, fragment string
		bad            []string
	}{
		{"all kept", "CONFIG_A=y\nCONFIG_N=64\nCONFIG_S=\"x\"\n# CONFIG_OFF is not set\n# CONFIG_GONE is not set\n", nil},
		{"dropped symbol", "CONFIG_A=y\nCONFIG_TYPO=y\n", []string{"CONFIG_TYPO=y: absent from .config (unknown symbol or unmet dependency)"}},
		{"other value", "CONFIG_N=8\n", []string{"CONFIG_N=8: .config has CONFIG_N=64"}},
		{"disabled wanted on", "CONFIG_OFF=y\n", []string{"CONFIG_OFF=y: .config has # CONFIG_OFF is not set"}},
		{"enabled wanted off", "# CONFIG_A is not set\n", []string{"# CONFIG_A is not set: .config has CONFIG_A=y"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad, err := CheckKconfig([]byte(tc.fragment), []byte(final))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(bad, "|") != strings.Join(tc.bad, "|") {
				t.Fatalf("CheckKconfig = %q, want %q", bad, tc.bad)
			}
		})
	}
	if _, err := CheckKconfig([]byte("CONFIG_A=y\nrm -rf /\n"), []byte(final)); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("malformed fragment: err = %v, want one naming line 2", err)
	}
}

// TestMinimalConfig: the shipped fragment parses and asks for what the guest cannot do
// without (a change that drops one of these must be deliberate).
func TestMinimalConfig(t *testing.T) {
	opts, err := ParseKconfig(MinimalConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"CONFIG_VIRTIO_PCI=y", "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_VIRTIO_NET=y", "CONFIG_VIRTIO_BLK=y",
		"CONFIG_VIRTIO_VSOCKETS=y", "CONFIG_SEV_GUEST=y", "CONFIG_AMD_MEM_ENCRYPT=y", "CONFIG_INTEL_TDX_GUEST=y",
		"CONFIG_EFI_STUB=y", "CONFIG_DM_CRYPT=y", "CONFIG_DM_INTEGRITY=y", "CONFIG_EXT4_FS=y", "CONFIG_OVERLAY_FS=y",
		"CONFIG_TMPFS=y", "CONFIG_CGROUPS=y", "CONFIG_MEMCG=y", "CONFIG_SECCOMP_FILTER=y", "CONFIG_PID_NS=y",
		"CONFIG_VIRTIO_BALLOON=y", "# CONFIG_MODULES is not set",
	} {
		name, _, _ := strings.Cut(want, "=")
		if want[0] == '#' {
			name = strings.Fields(want)[1]
		}
		if got, ok := opts[name]; !ok || got.String() != want {
			t.Errorf("minimal.config: %s missing (has %v)", want, got)
		}
	}
}

func FuzzParseKconfig(f *testing.F) {
	f.Add(MinimalConfig)
	f.Add([]byte("CONFIG_A=y\n# CONFIG_B is not set\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		opts, err := ParseKconfig(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, o := range opts {
			b.WriteString(o.String() + "\n")
		}
		again, err := ParseKconfig([]byte(b.String()))
		if err != nil || len(again) != len(opts) {
			t.Fatalf("re-parse of %d options: %d, %v", len(opts), len(again), err)
		}
	})
}
