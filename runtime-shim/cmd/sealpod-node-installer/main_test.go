package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary act as the command (SEALPOD_INSTALLER_MAIN=1), so the exit
// code of the real main is tested.
func TestMain(m *testing.M) {
	if os.Getenv("SEALPOD_INSTALLER_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestCheckExitCode: `check --tee snp` on this machine (no usable KVM, no SNP) prints "not
// ready" with the reasons and exits non-zero.
func TestCheckExitCode(t *testing.T) {
	if b, _ := os.ReadFile("/sys/module/kvm_amd/parameters/sev_snp"); strings.TrimSpace(string(b)) == "Y" {
		t.Skip("this machine is an SNP host")
	}
	cmd := exec.Command(os.Args[0], "check", "--tee", "snp", "--node-name", "")
	cmd.Env = append(os.Environ(), "SEALPOD_INSTALLER_MAIN=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	for _, want := range []string{"FAIL  tee-enabled", "fix: ", "node not ready for TEE snp"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
