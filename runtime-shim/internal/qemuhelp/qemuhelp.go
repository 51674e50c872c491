// Package qemuhelp reads what QEMU says about itself: the object types of `-object help`. It is
// shared by the launcher (runtime-shim/qemu, which checks the host before a hardware TEE
// launch) and the node installer's readiness check, which must not link the launcher.
package qemuhelp

import (
	"bufio"
	"bytes"
	"strings"
)

// Objects lists the object types of `qemu-system-* -object help` output: the indented lines
// after "List of user creatable objects:".
func Objects(out []byte) []string {
	var objs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") {
			continue // "List of user creatable objects:"
		}
		if f := strings.Fields(line); len(f) > 0 {
			objs = append(objs, f[0])
		}
	}
	return objs
}
