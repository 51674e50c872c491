// Package testdeps is how a test says it needs something from the machine: a binary, a Debian
// package, root, a device. Without it the test skips, naming what is missing; under CI (the
// environment variable CI=true, set by .ci/run) it fails instead, so a suite cannot silently not
// run on the machine that is meant to run everything. `make deps` (hack/install-deps.sh)
// installs all of it. Skips for -short and for child-process modes are not dependencies and do
// not go through here.
package testdeps

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Strict reports whether a missing dependency fails the test: CI=true (or 1).
func Strict() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v == "true" || v == "1"
}

// Missing skips t, or fails it under CI, with "missing test dependency: " and the message.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "missing test dependency: " + fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatal(msg + " (CI=true: a dependency a test needs must be installed; make deps)")
	}
	t.Skip(msg)
}

// Require calls Missing with what unless ok.
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	if !ok {
		Missing(t, "%s", what)
	}
}

// NoError calls Missing with what and err when a dependency probe returned an error.
func NoError(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		Missing(t, "%s: %v", what, err)
	}
}

// Binary returns the path of the executable name on PATH, or calls Missing naming it and
// hint (e.g. "Debian package etcd-server").
func Binary(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not on PATH (%s)", name, hint)
	}
	return p
}

// File calls Missing unless path exists; hint says what provides it.
func File(t testing.TB, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "%s (%s): %v", path, hint, err)
	}
}

// Root calls Missing unless the test runs as root; why says what needs it.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (%s)", why)
	}
}
