package installer

import (
	"errors"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func TestStandaloneConfig(t *testing.T) {
	for _, v := range []int{0, 2, 3} {
		dir := "/tmp/spi-test"
		b, err := StandaloneConfig(StandaloneOptions{Dir: dir, Version: v, SandboxImage: "docker.io/local/pause:x",
			CNIBinDir: "/usr/lib/cni", CNIConfDir: dir + "/cni", RestrictOOMScoreAdj: true})
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		var tree map[string]any
		if err := toml.Unmarshal(b, &tree); err != nil {
			t.Fatalf("version %d: %v\n%s", v, err, b)
		}
		grpcT, _ := tableAt(tree, "grpc")
		ttrpcT, _ := tableAt(tree, "ttrpc")
		optT, _ := tableAt(tree, "plugins", "io.containerd.internal.v1.opt")
		for name, p := range map[string]any{"root": tree["root"], "state": tree["state"], "grpc": grpcT["address"], "ttrpc": ttrpcT["address"], "opt": optT["path"]} {
			if s, _ := p.(string); !strings.HasPrefix(s, dir+"/") {
				t.Errorf("version %d: %s = %v, not under %s", v, name, p, dir)
			}
		}
		want := int64(v)
		if v == 0 {
			want = 2
		}
		if tree["version"] != want {
			t.Errorf("version = %v, want %d", tree["version"], want)
		}
		out, err := AddRuntime(b, RuntimeOptions{})
		if err != nil {
			t.Fatalf("version %d: AddRuntime: %v", v, err)
		}
		if info, err := Inspect(out); err != nil || info.Version != int(want) {
			t.Fatalf("Inspect %+v %v", info, err)
		}
	}
	if _, err := StandaloneConfig(StandaloneOptions{Dir: "/" + strings.Repeat("d", 100)}); err == nil {
		t.Error("over-long socket path accepted")
	}
	if _, err := StandaloneConfig(StandaloneOptions{Dir: "relative"}); err == nil {
		t.Error("relative dir accepted")
	}
	if _, err := StandaloneConfig(StandaloneOptions{Dir: "/tmp/x", Version: 1}); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("version 1: %v", err)
	}
	if _, err := StandaloneConfig(StandaloneOptions{Dir: `/tmp/"x`}); err == nil {
		t.Error("quote in dir accepted")
	}
}
