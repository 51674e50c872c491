package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sealpod/sealpod/guest-image/initrd"
	"github.com/sealpod/sealpod/guest-image/kernel"
)

type mkguestFlags struct {
	init            string
	out             string
	cacheDir        string
	metaPackage     string
	kernelPackage   string
	modules         []string
	optionalModules []string
	cmdline         string
	vcpus           int
	memoryMiB       int
	compression     string
	firmware        string
}

// NewMkguestCmd builds the mkguest command.
func NewMkguestCmd() *cobra.Command {
	f := &mkguestFlags{}
	cmd := &cobra.Command{
		Use:   "mkguest --init BINARY [--out DIR]",
		Short: "Build the measured Sealpod guest bundle (vmlinuz, initrd.img, guest.json)",
		Long: `mkguest builds the guest bundle (docs/formats.md, docs/guest.md) reproducibly:

  vmlinuz      Debian's kernel, verbatim from the exact linux-image-<release> package the
               linux-image-amd64 metapackage depends on (apt-get download, checked against the
               apt index's SHA-256, unpacked with dpkg-deb, never installed; cached)
  initrd.img   a deterministic newc cpio: /init (the static agent), /dev/console, the kernel
               modules the agent needs with their dependencies, and lib/modules/<release>/load-order
  guest.json   cmdline, vCPUs, memory and the reference measurements (sim and pef; snp/tdx too
               when --firmware is an OVMF that supports them)
  SOURCES.txt  the kernel package and version, module list and digests

The same inputs give byte-identical files. See docs/guest.md.`,
		Example: `  # What "make guest" runs
  mkguest --init bin/sealpod-agent --out out/guest

  # Pin the kernel package (no apt index needed once it is cached)
  mkguest --init bin/sealpod-agent --kernel-package linux-image-6.1.0-56-amd64=6.1.192-2

  # Add an AmdSev OVMF (with a kernel-hashes table) to also get the SNP measurement
  mkguest --init bin/sealpod-agent --firmware OVMF.amdsev.fd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMkguest(cmd.Context(), f)
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	fl := cmd.Flags()
	fl.StringVar(&f.init, "init", "", "static binary installed as /init (required)")
	fl.StringVar(&f.out, "out", "out/guest", "output directory")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "kernel package cache (default $XDG_CACHE_HOME or $HOME/.cache, then sealpod/guest)")
	fl.StringVar(&f.metaPackage, "kernel-meta", kernel.DefaultMetaPackage, "metapackage whose exact linux-image dependency is used")
	fl.StringVar(&f.kernelPackage, "kernel-package", "", "pin the kernel package as name=version instead of resolving --kernel-meta")
	fl.StringSliceVar(&f.modules, "module", kernel.DefaultModules, "kernel modules to include and load (dependencies are added)")
	fl.StringSliceVar(&f.optionalModules, "optional-module", kernel.DefaultOptionalModules, "modules included only if the kernel has them")
	fl.StringVar(&f.cmdline, "cmdline", DefaultCmdline, "kernel command line (measured)")
	fl.IntVar(&f.vcpus, "vcpus", DefaultVCPUs, "vCPUs (guest.json; measured for snp)")
	fl.IntVar(&f.memoryMiB, "memory-mib", DefaultMemoryMiB, "guest memory in MiB (guest.json)")
	fl.StringVar(&f.compression, "compression", string(DefaultCompression), "initrd compression: auto (none if it fits the 32 MiB limit, else gzip), none or gzip")
	fl.StringVar(&f.firmware, "firmware", "", "optional firmware image to ship as firmware.fd and measure")
	_ = cmd.MarkFlagRequired("init")
	return cmd
}

func runMkguest(ctx context.Context, f *mkguestFlags) error {
	o := Options{
		Init: f.init, OutDir: f.out, CacheDir: f.cacheDir, MetaPackage: f.metaPackage,
		Modules: f.modules, OptionalModules: f.optionalModules, Cmdline: f.cmdline,
		VCPUs: f.vcpus, MemoryMiB: f.memoryMiB, Firmware: f.firmware,
	}
	var err error
	if o.Compression, err = initrd.ParseCompression(f.compression); err != nil {
		return err
	}
	if f.kernelPackage != "" {
		if o.Kernel, err = kernel.ParsePin(f.kernelPackage); err != nil {
			return err
		}
	}
	if o.CacheDir == "" {
		if o.CacheDir, err = kernel.DefaultCacheDir(); err != nil {
			return err
		}
	}
	if o.Modules == nil {
		o.Modules = []string{}
	}
	if o.OptionalModules == nil {
		o.OptionalModules = []string{}
	}
	res, err := Build(ctx, o)
	if err != nil {
		return err
	}
	slog.Info("guest bundle written", "dir", f.out, "kernel", res.Kernel.String(), "release", res.Release,
		"modules", len(res.Modules), "initrdBytes", res.InitrdBytes, "sim", res.Config.Measurements.Sim,
		"elapsed", res.Duration.Round(1e6))
	return nil
}

// Execute runs mkguest and returns the process exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err := NewMkguestCmd().ExecuteContext(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "mkguest: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "mkguest:", err)
		return 1
	}
	return 0
}
