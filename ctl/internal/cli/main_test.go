package cli

import (
	"os"
	"testing"
)

// TestMain isolates the tests from the developer's own sealctl configuration
// (~/.config/sealpod/kbs.json, $SEALPOD_KBS_CONFIG).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sealctl-test-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Unsetenv("SEALPOD_KBS_CONFIG")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
