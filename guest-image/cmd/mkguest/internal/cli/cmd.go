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
	kernelFlavor    string
	kernelSource    string
	kernelCacheDir  string
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
	builtin         bool
	kernelImage     string
	kernelOptions   []string
	tdxHeader       string
	arch            string
}

// NewMkguestCmd builds the mkguest command.
func NewMkguestCmd() *cobra.Command {
	f := &mkguestFlags{}
	cmd := &cobra.Command{
		Use:   "mkguest --init BINARY [--out DIR]",
		Short: "Build the measured Sealpod guest bundle (vmlinuz, initrd.img, guest.json)",
		Long: `mkguest builds the guest bundle (docs/formats.md, docs/guest.md) reproducibly:

  vmlinuz      --kernel minimal (default): Sealpod's minimal kernel, built reproducibly from
               Debian's linux-source-6.1 with tinyconfig plus guest-image/kernel/minimal.config,
               everything built in (once, about 10 minutes on 2 cores; cached)
               --kernel debian: Debian's kernel, verbatim from the exact linux-image-<release>
               package the linux-image-amd64 metapackage depends on (apt-get download, checked
               against the apt index's SHA-256, unpacked with dpkg-deb, never installed; cached)
  initrd.img   a deterministic newc cpio: /init (the static agent), /dev/console and, for
               Debian's kernel, the modules the agent needs and lib/modules/<release>/load-order
  guest.json   cmdline, vCPUs, memory and the reference measurements (sim and pef; snp/tdx too
               when --firmware is an OVMF that supports them)
  SOURCES.txt  the kernel package and version, module list and digests

The same inputs give byte-identical files. See docs/guest.md.`,
		Example: `  # What "make guest" runs
  mkguest --init bin/sealpod-agent --out out/guest

  # Debian's packaged kernel (modules in the initrd) instead of the minimal kernel
  mkguest --init bin/sealpod-agent --kernel debian

  # The ppc64le (pseries, IBM PEF) guest: "make guest ARCH=ppc64le"
  mkguest --arch ppc64le --init bin/sealpod-agent-ppc64le --out out/guest-ppc64le

  # Pin Debian's kernel package (no apt index needed once it is cached)
  mkguest --init bin/sealpod-agent --kernel-package linux-image-6.1.0-56-amd64=6.1.192-2

  # Add an AmdSev OVMF (with a kernel-hashes table) to also get the SNP measurement
  mkguest --init bin/sealpod-agent --firmware OVMF.amdsev.fd

  # Agent and command line built into the minimal kernel (no initrd.img): with a TDVF, the
  # tdx value's RTMR[1] covers kernel, agent and command line
  mkguest --init bin/sealpod-agent --builtin-initramfs --firmware TDVF.fd

  # A newer kernel source with the TDX quote driver added to the minimal fragment
  mkguest --init bin/sealpod-agent --kernel-source linux-6.12.tar.xz \
    --kernel-option CONFIG_TDX_GUEST_DRIVER=y --kernel-option CONFIG_TSM_REPORTS=y

  # A kernel the owner configured and built, measured as is
  mkguest --init bin/sealpod-agent --kernel-image bzImage --firmware TDVF.fd --tdx-kernel-header unmodified`,
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
	fl.StringVar(&f.kernelFlavor, "kernel", "", "kernel: minimal (built from linux-source-6.1; the default) or debian (the packaged kernel with modules; the default with --kernel-package)")
	fl.StringVar(&f.kernelSource, "kernel-source", "", "minimal kernel: source tarball (default "+kernel.DefaultSourceTarball+")")
	fl.StringVar(&f.kernelCacheDir, "kernel-cache-dir", "", "minimal kernel: build cache (default $XDG_CACHE_HOME or $HOME/.cache, then sealpod/kernel)")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "debian kernel: package cache (default $XDG_CACHE_HOME or $HOME/.cache, then sealpod/guest)")
	fl.StringVar(&f.metaPackage, "kernel-meta", kernel.DefaultMetaPackage, "metapackage whose exact linux-image dependency is used")
	fl.StringVar(&f.kernelPackage, "kernel-package", "", "pin the kernel package as name=version instead of resolving --kernel-meta")
	fl.StringSliceVar(&f.modules, "module", kernel.DefaultModules, "kernel modules to include and load (dependencies are added)")
	fl.StringSliceVar(&f.optionalModules, "optional-module", kernel.DefaultOptionalModules, "modules included only if the kernel has them")
	fl.StringVar(&f.cmdline, "cmdline", "", "kernel command line (measured; default \""+DefaultCmdline+"\", for ppc64le \""+DefaultCmdlinePPC64LE+"\")")
	fl.StringVar(&f.arch, "arch", string(kernel.ArchX86_64), "guest architecture: x86_64, or ppc64le (the pseries IBM PEF guest: minimal kernel cross-compiled with powerpc64le-linux-gnu-gcc, a ppc64le --init; docs/pef.md)")
	fl.IntVar(&f.vcpus, "vcpus", DefaultVCPUs, "vCPUs (guest.json; measured for snp)")
	fl.IntVar(&f.memoryMiB, "memory-mib", DefaultMemoryMiB, "guest memory in MiB (guest.json)")
	fl.StringVar(&f.compression, "compression", string(DefaultCompression), "initrd compression: auto (lz4 for the minimal kernel; for debian none if it fits the 32 MiB limit, else gzip), none, lz4 or gzip")
	fl.StringVar(&f.firmware, "firmware", "", "optional firmware image to ship as firmware.fd and measure")
	fl.BoolVar(&f.builtin, "builtin-initramfs", false, "minimal kernel: build the initramfs (uncompressed) and the command line (plus \"noinitrd\") into the kernel, derived from the cached build tree; initrd.img is then empty")
	fl.StringVar(&f.kernelImage, "kernel-image", "", "a prebuilt x86 bzImage used and measured as is (EFI stub required with --firmware); no modules")
	fl.StringArrayVar(&f.kernelOptions, "kernel-option", nil, "minimal kernel: add CONFIG_NAME=value to the configuration fragment (repeatable; checked after olddefconfig)")
	fl.StringVar(&f.tdxHeader, "tdx-kernel-header", "", "tdx measurement: how the host's QEMU hands over the kernel header: qemu (default: patched by QEMU's loader) or unmodified")
	_ = cmd.MarkFlagRequired("init")
	cmd.AddCommand(newKernelCmd())
	return cmd
}

// newKernelCmd builds (or finds in the cache) the minimal kernel and prints where it is:
// `make kernel` runs it before the test suites, so no test waits for a kernel build.
func newKernelCmd() *cobra.Command {
	var o kernel.BuildOptions
	var opts []string
	var arch string
	cmd := &cobra.Command{
		Use:   "kernel",
		Short: "Build the minimal guest kernel into the cache (once) and print its path",
		Example: `  # What "make kernel" runs
  mkguest kernel

  # The ppc64le (pseries, IBM PEF) kernel: "make kernel ARCH=ppc64le"
  mkguest kernel --arch ppc64le`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if o.Arch, err = kernel.ParseArch(arch); err != nil {
				return err
			}
			frag, err := fragment(o.Arch, opts)
			if err != nil {
				return err
			}
			o.Fragment = frag
			o.NeedTree = true // the tree the built-in variant relinks from (docs/guest.md)
			b, err := kernel.BuildMinimal(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\nsha256:%s\n", b.BzImagePath(), b.Describe(), b.BzImageSHA256)
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.Flags().StringVar(&o.Tarball, "kernel-source", "", "source tarball (default "+kernel.DefaultSourceTarball+")")
	cmd.Flags().StringVar(&o.CacheDir, "kernel-cache-dir", "", "build cache (default $XDG_CACHE_HOME or $HOME/.cache, then sealpod/kernel)")
	cmd.Flags().StringArrayVar(&opts, "kernel-option", nil, "add CONFIG_NAME=value to the configuration fragment (repeatable)")
	cmd.Flags().StringVar(&arch, "arch", string(kernel.ArchX86_64), "guest architecture: x86_64 or ppc64le (the pseries PEF guest, cross-compiled with powerpc64le-linux-gnu-gcc)")
	return cmd
}

func runMkguest(ctx context.Context, f *mkguestFlags) error {
	o := Options{
		Init: f.init, KernelFlavor: f.kernelFlavor, KernelSource: f.kernelSource, KernelCacheDir: f.kernelCacheDir, OutDir: f.out, CacheDir: f.cacheDir, MetaPackage: f.metaPackage,
		Modules: f.modules, OptionalModules: f.optionalModules, Cmdline: f.cmdline,
		VCPUs: f.vcpus, MemoryMiB: f.memoryMiB, Firmware: f.firmware,
		BuiltinInitramfs: f.builtin, KernelImage: f.kernelImage, KernelOptions: f.kernelOptions, TDXKernelHeader: f.tdxHeader,
	}
	var err error
	if o.Arch, err = kernel.ParseArch(f.arch); err != nil {
		return err
	}
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
	kdesc := res.Kernel.String()
	switch {
	case res.Variant != nil:
		kdesc = res.Variant.Describe()
	case res.Minimal != nil:
		kdesc = res.Minimal.Describe()
	}
	slog.Info("guest bundle written", "dir", f.out, "kernel", kdesc, "release", res.Release,
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
