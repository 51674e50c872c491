// Package cli holds the cobra commands of sealpod-node-installer: install, uninstall,
// detect-tee, check (node readiness) and add-runtime.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/installer"
	"github.com/spf13/cobra"
)

// NewRootCmd builds the sealpod-node-installer command tree.
func NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sealpod-node-installer",
		Short: "Install the Sealpod runtime (shim + containerd handler + node TEE label) on a node",
		Example: `  # in the DaemonSet (host / mounted at /host, hostPID):
  sealpod-node-installer install --host-root /host --node-name "$NODE_NAME" --wait
  # directly on a node, simulated TEE, restart by hand:
  sealpod-node-installer install --shim ./bin/containerd-shim-sealpod-v2 --tee sim --no-restart
  sealpod-node-installer uninstall --host-root /host --node-name "$NODE_NAME"`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(NewInstallCmd(), NewUninstallCmd(), NewDetectTEECmd(), NewCheckCmd(), NewAddRuntimeCmd(), NewStandaloneConfigCmd())
	return root
}

// Execute runs the command with a context cancelled on SIGINT/SIGTERM; it returns the exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sealpod-node-installer:", err)
		return 1
	}
	return 0
}

// commonFlags are shared by install and uninstall.
type commonFlags struct {
	hostRoot    string
	config      string
	backup      string
	shimDir     string
	nodeName    string
	restartCmd  string
	noRestart   bool
	systemdUnit string
	nodeConfig  string
}

func (f *commonFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.hostRoot, "host-root", "/", "where the host's root filesystem is mounted (the DaemonSet uses /host)")
	fl.StringVar(&f.config, "containerd-config", installer.DefaultConfigPath, "containerd config file (host path)")
	fl.StringVar(&f.backup, "backup", "", "backup of the original config (host path; default <containerd-config>"+installer.BackupSuffix+")")
	fl.StringVar(&f.shimDir, "shim-dir", installer.DefaultShimDir, "host directory on containerd's PATH for "+installer.ShimBinaryName)
	fl.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "Node to label "+installer.TEELabelPrefix+"<tee>=true through the in-cluster API (default $NODE_NAME; empty: no label)")
	fl.StringVar(&f.restartCmd, "restart-cmd", "", "command that restarts containerd (split on spaces; default: systemctl, through nsenter when --host-root is not /)")
	fl.BoolVar(&f.noRestart, "no-restart", false, "do not restart containerd (the handler takes effect at its next start)")
	fl.StringVar(&f.systemdUnit, "systemd-unit", "containerd", "systemd unit of containerd")
	fl.StringVar(&f.nodeConfig, "shim-node-config", shimconfig.DefaultPath, "the shim's node configuration file (host path; TEE, sim key, QEMU)")
}

func (f *commonFlags) options() (installer.Options, error) {
	o := installer.Options{
		HostRoot:       f.hostRoot,
		ConfigPath:     f.config,
		BackupPath:     f.backup,
		ShimDir:        f.shimDir,
		ShimConfigFile: f.nodeConfig,
		Logger:         slog.Default(),
	}
	switch {
	case f.noRestart && f.restartCmd != "":
		return o, errors.New("--no-restart and --restart-cmd exclude each other")
	case f.noRestart:
	case f.restartCmd != "":
		o.Restarter = installer.CommandRestarter{Argv: strings.Fields(f.restartCmd)}
	default:
		r, err := installer.SystemdRestarter(f.hostRoot, f.systemdUnit)
		if err != nil {
			return o, err
		}
		o.Restarter = r
	}
	if f.nodeName != "" {
		l, err := installer.InClusterNodeLabeler(f.nodeName)
		if err != nil {
			return o, fmt.Errorf("label node %s: %w (give --node-name \"\" to skip the label)", f.nodeName, err)
		}
		o.Labeler = l
	}
	return o, nil
}

type installFlags struct {
	commonFlags
	check          hostCheckFlags
	shim           string
	tee            string
	handler        string
	runtimePath    string
	shimConfigPath string
	configVersion  int
	wait           bool
	simKey         string
	simTDXKey      string
	snpCBitPos     int
	snpSMT         bool
	qgsSocket      string
	qemu           string
	accel          string
	network        string
}

// NewInstallCmd installs the shim and the runtime handler, restarts containerd and labels the node.
func NewInstallCmd() *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Copy the shim, add the sealpod handler to containerd's config, restart containerd, label the node",
		Long: `install is idempotent: a second run changes nothing and does not restart containerd.
The original containerd config is kept beside it (<config>` + installer.BackupSuffix + `) so that
uninstall restores it byte for byte. The TEE is detected from the host kernel (SEV-SNP, TDX, PEF);
the simulated TEE (sim) is never detected, only given with --tee sim, and is insecure.`,
		Example: `  sealpod-node-installer install --host-root /host --node-name "$NODE_NAME" --wait
  sealpod-node-installer install --tee sim --shim ./bin/containerd-shim-sealpod-v2 --restart-cmd "systemctl restart containerd"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			o, err := f.options()
			if err != nil {
				return err
			}
			tees, err := resolveTEEs(f.tee, f.hostRoot)
			if err != nil {
				return err
			}
			// The readiness check runs per TEE; the node is labelled for each one that is ready.
			o.TEEs = tees
			o.ShimSource = f.shim
			accel := f.accel
			if accel == "" {
				accel = "tcg"
				for _, t := range tees {
					if !t.Simulated() {
						accel = "kvm" // hardware TEEs need KVM
					}
				}
			}
			offers := func(t installer.TEE) bool { return slices.Contains(tees, t) }
			if !offers(installer.TEESim) && f.simKey != "" {
				return fmt.Errorf("--sim-key is only for --tee sim (tee %s)", f.tee)
			}
			if !offers(installer.TEESimTDX) && f.simTDXKey != "" {
				return fmt.Errorf("--sim-tdx-key is only for --tee sim-tdx (tee %s)", f.tee)
			}
			nc := shimconfig.Config{QEMU: f.qemu, Accel: accel, Network: f.network}
			for _, t := range tees {
				nc.TEEs = append(nc.TEEs, string(t))
			}
			if offers(installer.TEESNP) {
				nc.SNPCBitPos = f.snpCBitPos // 0: read from CPUID
				if !f.snpSMT {
					nc.SNPSMT = &f.snpSMT
				}
			} else if f.snpCBitPos != 0 || !f.snpSMT {
				return fmt.Errorf("--snp-cbitpos and --snp-smt are only for --tee snp (tee %s)", f.tee)
			}
			if offers(installer.TEETDX) {
				nc.QGSSocket = f.qgsSocket
			} else if f.qgsSocket != "" {
				return fmt.Errorf("--qgs-socket is only for --tee tdx (tee %s)", f.tee)
			}
			o.ShimConfig = &installer.ShimNodeConfig{
				Config:          nc,
				SimKeySource:    f.simKey,
				SimTDXKeySource: f.simTDXKey,
				Path:            f.nodeConfig,
			}
			o.Runtime = installer.RuntimeOptions{
				Handler:        f.handler,
				RuntimePath:    f.runtimePath,
				ShimConfigPath: f.shimConfigPath,
				ConfigVersion:  f.configVersion,
			}
			// The readiness check runs before the label (installer.Options.Readiness).
			co, err := f.check.options(f.hostRoot)
			if err != nil {
				return err
			}
			co.QEMU = f.qemu
			if k, ok := o.Labeler.(*installer.KubeNodeLabeler); ok {
				co.RuntimeClasses = k
			}
			o.Readiness = &co
			res, err := installer.Install(ctx, o)
			for _, rep := range res.Checks {
				if werr := rep.WriteText(cmd.OutOrStdout()); werr != nil && err == nil {
					err = werr
				}
			}
			if err != nil {
				return err
			}
			labelled := "none"
			if res.Labeled {
				labelled = teeList(res.LabeledTEEs)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sealpod installed: tees=%s config=%s changed=%v shim=%s changed=%v restarted=%v labelled=%s\n",
				teeList(tees), res.ConfigPath, res.ConfigChanged, res.ShimPath, res.ShimChanged, res.Restarted, labelled)
			if f.wait {
				slog.Info("installed; waiting for termination (uninstall is a separate command)")
				<-ctx.Done()
			}
			return nil
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.shim, "shim", "/opt/sealpod/bin/"+installer.ShimBinaryName, "shim binary to copy onto the host (empty: do not copy)")
	fl.StringVar(&f.tee, "tee", "auto", "node TEE: auto|snp|tdx|pef|sim|sim-tdx, or a comma-separated list in order of preference (e.g. sim,sim-tdx); each is checked and labelled "+installer.TEELabelPrefix+"<tee>=true when ready; the simulated TEEs are insecure and never auto-detected")
	fl.StringVar(&f.handler, "handler", installer.HandlerName, "CRI runtime handler name (RuntimeClass .handler)")
	fl.StringVar(&f.runtimePath, "runtime-path", "", "write runtime_path (absolute shim path; honoured by containerd 1.7+, ignored by 1.6)")
	fl.StringVar(&f.shimConfigPath, "shim-config", "", "write options.ConfigPath: the shim's node config file handed to the shim by containerd")
	fl.IntVar(&f.configVersion, "config-version", 2, "version of a NEW containerd config (2 for containerd 1.x, 3 for 2.x); an existing file keeps its own")
	fl.BoolVar(&f.wait, "wait", false, "after installing, stay running until SIGTERM (DaemonSet)")
	fl.StringVar(&f.simKey, "sim-key", "", "tee sim: the simulated VCEK private key (sealpod-kbs sim-roots --key-out) to copy to the host, beside the node config ("+installer.DefaultSimKeyPath+" by default)")
	fl.StringVar(&f.simTDXKey, "sim-tdx-key", "", "tee sim-tdx: the fake Intel PCK key and chain (sealpod-kbs sim-roots --tdx-key-out) to copy to the host, beside the node config ("+installer.DefaultSimTDXKeyPath+" by default)")
	fl.IntVar(&f.snpCBitPos, "snp-cbitpos", 0, "tee snp: QEMU's cbitpos (default: read from the host's CPUID 0x8000001F)")
	fl.BoolVar(&f.snpSMT, "snp-smt", true, "tee snp: allow SMT in the guest policy (a host with SMT on refuses guests without it)")
	fl.StringVar(&f.qgsSocket, "qgs-socket", "", "tee tdx: the host's Quote Generation Service socket QEMU forwards quote requests to (default "+shimconfig.DefaultQGSSocket+")")
	fl.StringVar(&f.qemu, "qemu", "", "QEMU binary the shim runs (default: qemu-system-x86_64 on the shim's PATH)")
	fl.StringVar(&f.accel, "accel", "", "QEMU accelerator tcg|kvm (default kvm for snp/tdx/pef, tcg for sim and sim-tdx)")
	fl.StringVar(&f.network, "network", "", "VM networking user|tap (default: the shim's)")
	f.check.register(fl)
	return cmd
}

// teeList joins TEEs with commas ("none" for none).
func teeList(tees []installer.TEE) string {
	if len(tees) == 0 {
		return "none"
	}
	s := make([]string, len(tees))
	for i, t := range tees {
		s[i] = string(t)
	}
	return strings.Join(s, ",")
}

// resolveTEEs reads --tee: auto (detected), one TEE or a comma-separated list.
func resolveTEEs(flag, hostRoot string) ([]installer.TEE, error) {
	if flag == "" || flag == "auto" {
		t, err := resolveTEE(flag, hostRoot)
		return []installer.TEE{t}, err
	}
	var out []installer.TEE
	for _, name := range strings.Split(flag, ",") {
		if name == "auto" {
			return nil, fmt.Errorf("--tee %q: auto stands alone", flag)
		}
		t, err := resolveTEE(name, hostRoot)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, t) {
			return nil, fmt.Errorf("--tee %q: %s listed twice", flag, t)
		}
		out = append(out, t)
	}
	return out, nil
}

func resolveTEE(flag, hostRoot string) (installer.TEE, error) {
	if flag == "" || flag == "auto" {
		tee, err := installer.DetectTEE(hostRoot)
		if err != nil {
			return "", fmt.Errorf("%w; pass --tee sim to run simulated (insecure) or --tee snp|tdx|pef", err)
		}
		return tee, nil
	}
	tee, err := installer.ParseTEE(flag)
	if err != nil {
		return "", err
	}
	if tee.Simulated() {
		slog.Warn("INSECURE: node offers the simulated TEE " + string(tee) + " — pods get a SIMULATED TEE; the host sees guest memory and signs the attestation itself; for CI and demos only")
	}
	return tee, nil
}

type uninstallFlags struct {
	commonFlags
	keepShim bool
	wait     bool
}

// NewUninstallCmd undoes install.
func NewUninstallCmd() *cobra.Command {
	var f uninstallFlags
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the node label, restore containerd's original config, restart containerd, remove the shim",
		Long: `uninstall restores the backed-up config byte for byte when the config was not edited after
install; otherwise it removes only the installer's managed block and keeps later edits.`,
		Example: `  sealpod-node-installer uninstall --host-root /host --node-name "$NODE_NAME"
  sealpod-node-installer uninstall --no-restart --keep-shim`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options()
			if err != nil {
				return err
			}
			o.RemoveShim = !f.keepShim
			res, err := installer.Uninstall(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sealpod uninstalled: config=%s changed=%v restored=%v shim removed=%v restarted=%v\n",
				res.ConfigPath, res.ConfigChanged, res.Restored, res.ShimChanged, res.Restarted)
			if f.wait {
				slog.Info("uninstalled; waiting for termination")
				<-cmd.Context().Done()
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&f.keepShim, "keep-shim", false, "leave the shim binary on the host")
	cmd.Flags().BoolVar(&f.wait, "wait", false, "after uninstalling, stay running until SIGTERM (cleanup DaemonSet)")
	return cmd
}

// NewDetectTEECmd prints the TEE detected on the host.
func NewDetectTEECmd() *cobra.Command {
	var hostRoot string
	cmd := &cobra.Command{
		Use:     "detect-tee",
		Short:   "Print the hardware TEE this host can launch guests with (snp, tdx, pef)",
		Example: `  sealpod-node-installer detect-tee --host-root /host`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tee, err := installer.DetectTEE(hostRoot)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tee)
			return nil
		},
	}
	cmd.Flags().StringVar(&hostRoot, "host-root", "/", "where the host's root filesystem is mounted")
	return cmd
}

type addRuntimeFlags struct {
	handler        string
	runtimePath    string
	shimConfigPath string
	configVersion  int
	remove         bool
}

// NewAddRuntimeCmd is the config edit alone, as a filter: stdin → stdout.
func NewAddRuntimeCmd() *cobra.Command {
	var f addRuntimeFlags
	cmd := &cobra.Command{
		Use:   "add-runtime",
		Short: "Filter a containerd config (stdin → stdout) adding (or, with --remove, removing) the sealpod handler",
		Example: `  sealpod-node-installer add-runtime < /etc/containerd/config.toml > /tmp/config.toml
  containerd config default | sealpod-node-installer add-runtime --runtime-path /usr/local/bin/containerd-shim-sealpod-v2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 16<<20))
			if err != nil {
				return fmt.Errorf("read config from stdin: %w", err)
			}
			var out []byte
			if f.remove {
				out, err = installer.RemoveRuntime(in)
			} else {
				out, err = installer.AddRuntime(in, installer.RuntimeOptions{
					Handler:        f.handler,
					RuntimePath:    f.runtimePath,
					ShimConfigPath: f.shimConfigPath,
					ConfigVersion:  f.configVersion,
				})
			}
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.handler, "handler", installer.HandlerName, "CRI runtime handler name")
	fl.StringVar(&f.runtimePath, "runtime-path", "", "write runtime_path (containerd 1.7+)")
	fl.StringVar(&f.shimConfigPath, "shim-config", "", "write options.ConfigPath for the shim")
	fl.IntVar(&f.configVersion, "config-version", 2, "version of a config built from empty input (2 or 3)")
	fl.BoolVar(&f.remove, "remove", false, "remove the managed block instead")
	return cmd
}

type standaloneFlags struct {
	dir, sandboxImage, cniBinDir, cniConfDir string
	restrictOOM                              bool
	version                                  int
}

// NewStandaloneConfigCmd prints a containerd config whose root, state and sockets live
// under one directory, with the sealpod handler added: a local development node (the demo,
// the end-to-end suites) that touches nothing of the machine's own containerd.
func NewStandaloneConfigCmd() *cobra.Command {
	var f standaloneFlags
	cmd := &cobra.Command{
		Use:   "standalone-config --dir DIR",
		Short: "Print a containerd config rooted in DIR with the sealpod handler (local development nodes)",
		Example: `  sealpod-node-installer standalone-config --dir /tmp/node --restrict-oom-score-adj > /tmp/node/config.toml
  containerd --config /tmp/node/config.toml   # socket: /tmp/node/containerd.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := installer.StandaloneConfig(installer.StandaloneOptions{
				Dir: f.dir, SandboxImage: f.sandboxImage, CNIBinDir: f.cniBinDir, CNIConfDir: f.cniConfDir,
				RestrictOOMScoreAdj: f.restrictOOM, Version: f.version,
			})
			if err != nil {
				return err
			}
			out, err := installer.AddRuntime(base, installer.RuntimeOptions{})
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "", "absolute directory for root/, state/, opt/ and containerd.sock (short: unix socket paths are limited to 107 bytes)")
	fl.StringVar(&f.sandboxImage, "sandbox-image", "", "CRI sandbox (pause) image (default: containerd's)")
	fl.StringVar(&f.cniBinDir, "cni-bin-dir", "", "CNI plugin directory (default: containerd's)")
	fl.StringVar(&f.cniConfDir, "cni-conf-dir", "", "CNI config directory (default: containerd's)")
	fl.BoolVar(&f.restrictOOM, "restrict-oom-score-adj", false, "needed where the host lacks CAP_SYS_RESOURCE")
	fl.IntVar(&f.version, "config-version", 2, "2 (containerd 1.x) or 3 (containerd 2.x)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
