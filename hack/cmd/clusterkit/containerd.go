package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/sealpod/sealpod/internal/atomicfile"

	"github.com/spf13/cobra"

	"github.com/sealpod/sealpod/runtime-shim/installer"
)

type containerdFlags struct {
	dir, sandboxImage, cniConf, cniBin, out string
	httpRegistries                          []string
}

// NewContainerdConfigCmd prints the node installer's standalone containerd config
// (installer.StandaloneConfig) for the cluster, plus plain-HTTP mirrors for local registries.
// The sealpod handler is added afterwards by `sealpod-node-installer install`, as on a node.
func NewContainerdConfigCmd() *cobra.Command {
	f := &containerdFlags{}
	cmd := &cobra.Command{
		Use:   "containerd-config",
		Short: "Write a standalone containerd config (root, state and sockets under --dir)",
		Example: `  clusterkit containerd-config --dir /run/sealpod-cluster/ctrd --sandbox-image docker.io/local/pause:cluster \
      --cni-conf-dir out/cluster/cni --http-registry 127.0.0.1:5000 --out out/cluster/etc/containerd/config.toml`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := installer.StandaloneConfig(installer.StandaloneOptions{Dir: f.dir, SandboxImage: f.sandboxImage,
				CNIBinDir: f.cniBin, CNIConfDir: f.cniConf, RestrictOOMScoreAdj: true})
			if err != nil {
				return err
			}
			var b strings.Builder
			b.Write(cfg)
			for _, r := range f.httpRegistries {
				if strings.ContainsAny(r, "\"\\/ \n") || r == "" {
					return fmt.Errorf("--http-registry %q: want host:port", r)
				}
				fmt.Fprintf(&b, "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n  endpoint = [\"http://%s\"]\n", r, r)
			}
			if f.out == "" {
				_, err := os.Stdout.WriteString(b.String())
				return err
			}
			return atomicfile.Write(f.out, []byte(b.String()), 0o644)
		},
	}
	cmd.Flags().StringVar(&f.dir, "dir", "", "containerd's root, state and sockets go under this absolute dir (keep it short: socket paths)")
	cmd.Flags().StringVar(&f.sandboxImage, "sandbox-image", "", "the pause image (fully qualified name)")
	cmd.Flags().StringVar(&f.cniConf, "cni-conf-dir", "", "CNI config dir")
	cmd.Flags().StringVar(&f.cniBin, "cni-bin-dir", "/usr/lib/cni", "CNI plugin dir")
	cmd.Flags().StringSliceVar(&f.httpRegistries, "http-registry", nil, "host:port of a plain-HTTP registry (repeatable)")
	cmd.Flags().StringVar(&f.out, "out", "", "write here (atomically) instead of stdout")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
