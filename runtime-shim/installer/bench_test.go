package installer

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkAddRuntime measures the config edit on containerd 1.6's full default config.
func BenchmarkAddRuntime(b *testing.B) {
	cfg, err := os.ReadFile(filepath.Join("testdata", "config", "containerd-1.6-default.toml"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(cfg)))
	for b.Loop() {
		if _, err := AddRuntime(cfg, RuntimeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
