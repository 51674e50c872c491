package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/installer"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// hostCheckFlags are the readiness-check flags shared by check and install.
type hostCheckFlags struct {
	firmware string
	qgs      string
	hostExec string
}

func (f *hostCheckFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.firmware, "firmware", "", "readiness: firmware to check for snp (AmdSev OVMF) or tdx (TDVF), a host path (default: not checked; pods bring theirs)")
	fl.StringVar(&f.qgs, "qgs", "", "readiness, tdx: the Quote Generation Service, unix:<path> or vsock:<cid>:<port> (default unix:"+installer.DefaultQGSSocket+")")
	fl.StringVar(&f.hostExec, "host-exec", "auto", "readiness: how QEMU is run: direct, nsenter (into PID 1's mount namespace: the DaemonSet) or auto (nsenter when --host-root is not /)")
}

func (f *hostCheckFlags) options(hostRoot string) (installer.CheckOptions, error) {
	o := installer.CheckOptions{HostRoot: hostRoot, Firmware: f.firmware, QGS: f.qgs}
	switch f.hostExec {
	case "direct":
	case "nsenter":
		o.QEMUPrefix = installer.HostExecPrefix
	case "auto", "":
		if hostRoot != "" && filepath.Clean(hostRoot) != "/" {
			o.QEMUPrefix = installer.HostExecPrefix
		}
	default:
		return o, fmt.Errorf("--host-exec %q: want auto, direct or nsenter", f.hostExec)
	}
	return o, nil
}

type checkFlags struct {
	hostCheckFlags
	tee, hostRoot, containerdConfig, shimDir, nodeConfig, handler, qemu, nodeName, output string
}

// NewCheckCmd runs the node readiness check.
func NewCheckCmd() *cobra.Command {
	var f checkFlags
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this node can run Sealpod pods of its TEE (KVM, TEE, QEMU, firmware, CPUID, QGS, containerd, RuntimeClass)",
		Long: `check prints one line per item: ok, FAIL with the fix, or skip when the node's TEE does
not need it (a sim node needs no KVM). The exit code is non-zero when the node is not ready.
install runs the same check before it labels the node. The TEE is --tee, else the node config's,
else the one detected. The RuntimeClass is looked up only in a pod (in-cluster API, $NODE_NAME).`,
		Example: `  sealpod-node-installer check --tee snp --firmware /usr/share/sealpod/firmware.fd
  kubectl -n sealpod-system exec ds/sealpod-node-installer -- /opt/sealpod/bin/sealpod-node-installer check --host-root /host -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "text" && f.output != "json" {
				return fmt.Errorf("--output %q: want text or json", f.output)
			}
			o, err := f.options(f.hostRoot)
			if err != nil {
				return err
			}
			if f.tee != "" && f.tee != "auto" {
				t, err := installer.ParseTEE(f.tee)
				if err != nil {
					return err
				}
				o.TEE = t
			}
			o.ContainerdConfig, o.ShimDir, o.ShimConfigPath, o.Handler, o.QEMU = f.containerdConfig, f.shimDir, f.nodeConfig, f.handler, f.qemu
			if f.nodeName != "" {
				k, err := installer.InClusterNodeLabeler(f.nodeName)
				switch {
				case errors.Is(err, installer.ErrNotInCluster):
				case err != nil:
					return err
				default:
					o.RuntimeClasses = k
				}
			}
			rep, err := installer.Check(cmd.Context(), o)
			if err != nil {
				return err
			}
			if f.output == "json" {
				err = rep.WriteJSON(cmd.OutOrStdout())
			} else {
				err = rep.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			return rep.Err("")
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.tee, "tee", "", "TEE to check for: snp|tdx|pef|sim|sim-tdx (default: the node config's first, else detected; install checks each TEE it offers)")
	fl.StringVar(&f.hostRoot, "host-root", "/", "where the host's root filesystem is mounted (the DaemonSet uses /host)")
	fl.StringVar(&f.containerdConfig, "containerd-config", installer.DefaultConfigPath, "containerd config file (host path)")
	fl.StringVar(&f.shimDir, "shim-dir", installer.DefaultShimDir, "host directory holding "+installer.ShimBinaryName)
	fl.StringVar(&f.nodeConfig, "shim-node-config", shimconfig.DefaultPath, "the shim's node configuration file (host path)")
	fl.StringVar(&f.handler, "handler", installer.HandlerName, "CRI runtime handler name")
	fl.StringVar(&f.qemu, "qemu", "", "QEMU binary (default: the node config's)")
	fl.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "in a pod: the node (default $NODE_NAME); enables the RuntimeClass lookup through the in-cluster API")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	f.register(fl)
	return cmd
}
