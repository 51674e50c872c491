// Command seccompgen writes ../seccomp-default.json: containerd v1.7.35's default seccomp
// profile (contrib/seccomp.DefaultProfile) for the capability sets the agent's test checks.
// It is its own module (containerd v1.7's oci package does not build against the
// runtime-spec version Sealpod uses). Regenerate, on a Linux amd64 host with kernel >= 4.8:
//
//	cd agent/containers/testdata/seccompgen && go run . > ../seccomp-default.json
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"

	"github.com/containerd/containerd/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultCaps is the agent's default capability set (agent/containers/config.go).
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// extraCaps are the capabilities DefaultProfile looks at.
var extraCaps = []string{"CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_MODULE", "CAP_SYS_PACCT",
	"CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_SYS_NICE", "CAP_SYSLOG", "CAP_BPF", "CAP_PERFMON"}

type golden struct {
	Source  string              `json:"source"`
	Default *specs.LinuxSeccomp `json:"default"` // for defaultCaps
	SHA256  map[string]string   `json:"sha256"`  // name → sha256 of the profile's JSON
	Caps    map[string][]string `json:"caps"`    // name → bounding set
}

func profile(caps []string) *specs.LinuxSeccomp {
	return seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}})
}

func main() {
	g := golden{
		Source: "github.com/containerd/containerd v1.7.35 contrib/seccomp.DefaultProfile (testdata/seccompgen)",
		SHA256: map[string]string{}, Caps: map[string][]string{"none": {}, "default": defaultCaps},
	}
	g.Default = profile(defaultCaps)
	for _, c := range extraCaps {
		g.Caps["default+"+c] = append(slices.Clone(defaultCaps), c)
	}
	g.Caps["all-extra"] = append(slices.Clone(defaultCaps), extraCaps...)
	for name, caps := range g.Caps {
		b, err := json.Marshal(profile(caps))
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		g.SHA256[name] = hex.EncodeToString(sum[:])
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(g); err != nil {
		panic(err)
	}
}
