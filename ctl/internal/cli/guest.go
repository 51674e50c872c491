package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/guest-image/measure"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/tee"
)

// NewGuestCmd builds `sealctl guest`, the commands about the measured guest.
func NewGuestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "guest",
		Short: "Work with measured guest images (kernel, initrd, firmware)",
	}
	cmd.AddCommand(newGuestMeasureCmd())
	return cmd
}

type guestMeasureFlags struct {
	bundleDir      string
	firmware       string
	firmwareDigest string
	kernel         string
	initrd         string
	cmdline        string
	vcpus          int
	vcpuType       string
	guestFeatures  string
	vmm            string
	tdxOrder       string
	tees           []string
	output         string
}

func newGuestMeasureCmd() *cobra.Command {
	f := &guestMeasureFlags{}
	cmd := &cobra.Command{
		Use:   "measure",
		Short: "Compute the reference launch measurements of a guest from its artifacts",
		Long: `Compute, offline, the launch measurements a TEE will report for a guest booted from the
given firmware, kernel, initrd and command line: the SEV-SNP launch digest, the TDX MRTD and the
RTMRs that do not depend on the host, the digest the simulated AMD-SP of the "sim" TEE reports,
and the PEF digests. The key broker releases keys only to guests with these values.

Without --tee every measurement the inputs support is computed. See docs/measurements.md.`,
		Example: `  # SEV-SNP digest of an AmdSev OVMF with measured direct boot, 2 vCPUs
  sealctl guest measure --firmware OVMF.amdsev.fd --kernel vmlinuz --initrd initrd.img \
      --cmdline "console=ttyS0" --vcpus 2 --vcpu-type EPYC-v4 --tee snp -o json

  # TDX MRTD (and RTMR[2] for Linux >= 6.9) of a unified OVMF.fd
  sealctl guest measure --firmware OVMF.fd --kernel vmlinuz --initrd initrd.img \
      --cmdline "console=hvc0" --tee tdx

  # Everything for a guest bundle directory written by 'make guest'
  sealctl guest measure --bundle out/guest -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.bundleDir, "bundle", "", "guest bundle directory (vmlinuz, initrd.img, firmware.fd?, guest.json); explicit flags override its values")
	fl.StringVar(&f.firmware, "firmware", "", "firmware image as the VMM loads it (SNP: the -bios file; TDX: the unified OVMF.fd)")
	fl.StringVar(&f.firmwareDigest, "firmware-digest", "", "precomputed SNP launch digest of the firmware pages (hex); --firmware still supplies the metadata")
	fl.StringVar(&f.kernel, "kernel", "", "kernel image for direct boot")
	fl.StringVar(&f.initrd, "initrd", "", "initrd for direct boot")
	fl.StringVar(&f.cmdline, "cmdline", "", "kernel command line")
	fl.IntVar(&f.vcpus, "vcpus", 1, "number of vCPUs")
	fl.StringVar(&f.vcpuType, "vcpu-type", measure.DefaultVCPUType, "vCPU model (EPYC, EPYC-v4, EPYC-Milan, EPYC-Genoa, ...) or CPUID signature (0x00800f12)")
	fl.StringVar(&f.guestFeatures, "guest-features", "0x1", "SEV-SNP SEV_FEATURES of the VMSAs (0x1 = SNP only, 0x21 = + DebugSwap)")
	fl.StringVar(&f.vmm, "vmm", measure.DefaultVMM, "VMM conventions for the SNP VMSAs: qemu, ec2 or gce")
	fl.StringVar(&f.tdxOrder, "tdx-order", "per-page", "TDX page add/extend order of the host: per-page (upstream KVM) or adds-first")
	fl.StringSliceVar(&f.tees, "tee", nil, "TEEs to measure: snp, tdx, sim, pef (repeatable or comma-separated; default: all the inputs support)")
	addOutputFlag(cmd, fl, &f.output, "", formatJSON, formatYAML, formatText)
	return cmd
}

// inputs assembles measure.Inputs from the flags (and the bundle directory, if any).
func (f *guestMeasureFlags) inputs(cmd *cobra.Command) (measure.Inputs, error) {
	in := measure.Inputs{VCPUs: f.vcpus, VCPUType: f.vcpuType, VMM: f.vmm, TDXOrder: f.tdxOrder,
		FirmwareDigest: f.firmwareDigest}
	for _, s := range f.tees {
		t, err := tee.Parse(strings.ToLower(strings.TrimSpace(s)))
		if err != nil {
			return in, fmt.Errorf("--tee: %w", err)
		}
		if !slices.Contains(in.TEEs, t) {
			in.TEEs = append(in.TEEs, t)
		}
	}
	changed := func(name string) bool { return cmd.Flags().Changed(name) }
	feat, err := strconv.ParseUint(f.guestFeatures, 0, 64)
	if err != nil || feat == 0 {
		return in, fmt.Errorf("--guest-features %q: want a non-zero number such as 0x1", f.guestFeatures)
	}
	in.GuestFeatures = feat
	var kernelPath, initrdPath, firmwarePath, cmdline string
	if f.bundleDir != "" {
		raw, err := os.ReadFile(filepath.Join(f.bundleDir, bundle.ConfigFile))
		if err != nil {
			return in, fmt.Errorf("guest bundle %s: %w", f.bundleDir, err)
		}
		cfg, err := bundle.ParseConfig(raw)
		if err != nil {
			return in, fmt.Errorf("guest bundle %s: %w", f.bundleDir, err)
		}
		kernelPath = filepath.Join(f.bundleDir, bundle.KernelFile)
		initrdPath = filepath.Join(f.bundleDir, bundle.InitrdFile)
		if _, err := os.Stat(filepath.Join(f.bundleDir, bundle.FirmwareFile)); err == nil {
			firmwarePath = filepath.Join(f.bundleDir, bundle.FirmwareFile)
		}
		cmdline = cfg.Cmdline
		if !changed("vcpus") {
			in.VCPUs = cfg.VCPUs
		}
		if !changed("vcpu-type") && cfg.VCPUType != "" {
			in.VCPUType = cfg.VCPUType
		}
	}
	if changed("kernel") {
		kernelPath = f.kernel
	}
	if changed("initrd") {
		initrdPath = f.initrd
	}
	if changed("firmware") {
		firmwarePath = f.firmware
	}
	if changed("cmdline") {
		cmdline = f.cmdline
	}
	if kernelPath == "" && (initrdPath != "" || changed("cmdline")) {
		return in, fmt.Errorf("--initrd and --cmdline need --kernel (direct kernel boot)")
	}
	if firmwarePath != "" {
		if in.Firmware, err = os.ReadFile(firmwarePath); err != nil {
			return in, fmt.Errorf("firmware %s: %w", firmwarePath, err)
		}
	}
	if kernelPath != "" {
		b := &measure.Boot{Cmdline: cmdline}
		if b.Kernel, err = os.ReadFile(kernelPath); err != nil {
			return in, fmt.Errorf("kernel %s: %w", kernelPath, err)
		}
		if initrdPath != "" {
			if b.Initrd, err = os.ReadFile(initrdPath); err != nil {
				return in, fmt.Errorf("initrd %s: %w", initrdPath, err)
			}
		}
		in.Boot = b
	}
	if in.Firmware == nil && in.Boot == nil {
		return in, fmt.Errorf("nothing to measure: give --firmware and/or --kernel (or --bundle)")
	}
	return in, nil
}

func (f *guestMeasureFlags) run(cmd *cobra.Command, out io.Writer) error {
	switch f.output {
	case "json", "yaml", "text":
	default:
		return fmt.Errorf("--output %q: want json, yaml or text", f.output)
	}
	in, err := f.inputs(cmd)
	if err != nil {
		return err
	}
	m, err := measure.Compute(in)
	if err != nil {
		return err
	}
	if m.PEF != nil {
		// svm-tools' digests (what the ESM blob carries), not measure's SHA-256 stand-in.
		d, err := pefseal.Measure(in.Boot.Kernel, in.Boot.Initrd, in.Boot.Cmdline)
		switch {
		case err == nil:
			m.PEF = pefMeasurement(d)
		case slices.Contains(in.TEEs, tee.PEF) || slices.Contains(in.TEEs, tee.SimPEF):
			return fmt.Errorf("measure pef: %w", err)
		default:
			m.PEF = nil // not asked for, and the kernel is not a ppc64le vmlinux
		}
	}
	return writeMeasurements(out, f.output, m)
}

func writeMeasurements(out io.Writer, format string, m bundle.Measurements) error {
	switch format {
	case "yaml":
		b, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode measurements: %w", err)
		}
		_, err = out.Write(b)
		return err
	case "text":
		var sb strings.Builder
		if m.SNP != "" {
			fmt.Fprintf(&sb, "snp          %s\n", m.SNP)
		}
		if m.Sim != "" {
			fmt.Fprintf(&sb, "sim          %s\n", m.Sim)
		}
		if m.TDX != nil {
			fmt.Fprintf(&sb, "tdx.mrtd     %s\n", m.TDX.MRTD)
			for i, r := range m.TDX.RTMRs {
				if r == "" {
					r = "(not pinned: depends on the host)"
				}
				fmt.Fprintf(&sb, "tdx.rtmr[%d]  %s\n", i, r)
			}
		}
		if m.PEF != nil {
			fmt.Fprintf(&sb, "pef.rtas     %s\npef.kernel   %s (%d bytes)\npef.initrd   %s\npef.cmdline  %s\n",
				m.PEF.RTAS, m.PEF.Kernel, m.PEF.KernelSize, m.PEF.Initrd, m.PEF.Cmdline)
		}
		_, err := io.WriteString(out, sb.String())
		return err
	default:
		b, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return fmt.Errorf("encode measurements: %w", err)
		}
		_, err = out.Write(append(b, '\n'))
		return err
	}
}
