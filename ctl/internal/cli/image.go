package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sealpod/sealpod/ctl/internal/verify"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/imagebuilder/manifests"
	"github.com/sealpod/sealpod/internal/atomicfile"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/kbs/adminclient"
	"github.com/sealpod/sealpod/kbs/api"
)

// NewImageCmd is `sealctl image`.
func NewImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Seal workloads into secure images and inspect them",
	}
	cmd.AddCommand(newImageCreateCmd(), newImageInspectCmd())
	return cmd
}

type imageCreateFlags struct {
	files        []string
	kustomize    []string
	guest        string
	tees         []string
	kbsURL       string
	kbsCA        string
	kbsConfig    string
	kbsDir       string
	snpMinTCB    string
	tdxMinTCB    string
	keys         string
	push         string
	ociLayout    string
	tarball      string
	imageName    string
	insecure     bool
	resolve      bool
	mirrors      []string
	guestMirrors []string
	nodePull     []string
	seccomp      []string
	allowExec    []string
	runtimeClass string
	namespace    string
	logs         string
	output       string // -o: yaml or json
	outputFile   string // --output-file ("" or - for standard output)

	pefHostKeys []string // PEM public keys of the hosts a pef blob opens on

	defaultGuestMemoryMiB int // guest memory of pods without a memory limit
	defaultGuestVCPUs     int // vCPUs of pods without a CPU limit

	sealSecrets         bool
	strict              bool
	allowHostVolumes    bool
	allowHostNamespaces bool
	allowPrivileged     bool
}

func newImageCreateCmd() *cobra.Command {
	f := &imageCreateFlags{}
	cmd := &cobra.Command{
		Use:   "create (-f FILE|DIR|- | -k DIR) [-f ...] --guest DIR --tee TEE --kbs URL --kbs-ca FILE (--push REF | --oci-layout DIR | --tarball FILE) [-o yaml|json] [--output-file FILE]",
		Short: "Seal Kubernetes manifests into a secure image and sealed manifests",
		Long: `Seal every pod template of the given manifests (Pod, Deployment, StatefulSet, DaemonSet,
ReplicaSet, ReplicationController, Job, CronJob): the confidential part of each pod spec
(images pinned by digest, commands, args, env values, sealed Secrets and ConfigMaps) is
encrypted under a fresh data key into an envelope; the envelopes and the measured guest are
packed into one deterministic OCI image; the manifests are rewritten into placeholders that
run under the sealpod runtime class and reveal nothing confidential. Each workload's guest gets
its memory and vCPUs from its pod's limits (limit + 96 MiB for the guest kernel and agent,
rounded up to 32 MiB; the CPU limit rounded up), or --default-guest-memory-mib and
--default-guest-vcpus without limits, and is measured for that size (docs/formats.md#guest-size).

Inputs are read as kubectl reads them: -f files, directories and -, -k kustomization
directories (built with the kustomize library), List and typed lists; objects without a
namespace take -n. A Secret or ConfigMap that a pod references but the input lacks is
host-provided (created at run time, visible to the node, never sealed), with a warning;
--strict refuses it (docs/sealing.md).

Every sealed workload (its data key, the guest's reference measurements, the envelope digest
that the launch evidence must carry as HOST_DATA/MRCONFIGID, the SANs, the minimum TCB) is
registered with the key broker over its mTLS admin API, using the admin identity of
--kbs-dir or --kbs-config (default $SEALPOD_KBS_CONFIG or ~/.config/sealpod/kbs.json when it
exists); --kbs and --kbs-ca default to that config's broker. For offline sealing, --keys FILE
writes the data keys to a file (mode 0600) instead, or as well; 'sealctl kbs register -f FILE'
registers them later.

The sealed manifests go to standard output (-o yaml, the default, or -o json: the object,
or a v1 List of several, as kubectl prints them), or to --output-file FILE, replaced
atomically. Warnings and progress go to standard error. Nothing is written and nothing is
registered unless every input seals.`,
		Example: `  # Seal an app for SEV-SNP, register it with the broker and push the secure image
  sealctl image create -f app.yaml --guest out/guest --tee snp --snp-min-tcb 3,0,8,115 \
      --kbs-dir /var/lib/sealpod-kbs --push registry.example.com/team/app-sealed > app.sealed.yaml

  # Seal offline for the simulated TEE into an OCI layout, keys to a file
  sealctl image create -f app.yaml --guest out/guest --tee sim \
      --kbs https://127.0.0.1:8443 --kbs-ca kbs/tls-ca.pem \
      --oci-layout out/app-image --image registry.local:5000/app --keys app.keys.json \
      --output-file app.sealed.yaml
  sealctl kbs --kbs-dir /var/lib/sealpod-kbs register -f app.keys.json   # later, at the broker

  # Seal Helm output, embedding its Secrets, and push to a registry
  helm template my-release ./chart | sealctl image create -f - --seal-secrets \
      --guest out/guest --tee snp --kbs https://kbs.example.com --kbs-ca ca.pem \
      --push registry.example.com/team/app-sealed:v1 --keys keys.json > sealed.yaml

  # The sealed manifests as JSON (a v1 List), for jq
  sealctl image create -f app.yaml --guest out/guest --tee snp --kbs-dir /var/lib/sealpod-kbs \
      --push registry.example.com/team/app-sealed -o json | jq '.items[].metadata.name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runImageCreate(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "filename", "f", nil, "manifest file, directory (its *.yaml, *.yml, *.json) or - for standard input; repeatable")
	fl.StringArrayVarP(&f.kustomize, "kustomize", "k", nil, "build this kustomization directory (as kubectl -k) and seal its output; repeatable")
	fl.StringVar(&f.guest, "guest", "", "guest bundle directory (vmlinuz, initrd.img, guest.json, optional firmware.fd)")
	fl.StringSliceVar(&f.tees, "tee", nil, "TEE(s) the workloads may run in: snp, tdx, pef, sim, sim-tdx (sim and sim-tdx are for tests and demos only)")
	fl.StringVar(&f.kbsURL, "kbs", "", "key broker URL the guest attests to (https://...)")
	fl.StringVar(&f.kbsCA, "kbs-ca", "", "PEM file of the key broker's TLS CA certificate (pinned by the guest)")
	fl.StringVar(&f.kbsConfig, "kbs-config", os.Getenv("SEALPOD_KBS_CONFIG"), "sealctl-kbs.json: broker URL, CA and admin identity used to register the workloads")
	fl.StringVar(&f.kbsDir, "kbs-dir", "", "a 'sealpod-kbs init' directory (uses its admin/sealctl-kbs.json)")
	fl.StringArrayVar(&f.pefHostKeys, "pef-host-key", nil, "with --tee pef or sim-pef: PEM public key (RSA, `openssl pkey -pubout`) of a host whose ultravisor (for sim-pef: the node's simPEFKey) may open the workloads' ESM blob; repeatable (docs/pef.md)")
	fl.StringVar(&f.snpMinTCB, "snp-min-tcb", "", "minimum SEV-SNP TCB the broker accepts: bootloader,tee,snp,microcode (e.g. 3,0,8,115)")
	fl.StringVar(&f.tdxMinTCB, "tdx-min-tcb", "", "minimum TDX TEE_TCB_SVN the broker accepts (32 hex characters)")
	fl.StringVar(&f.keys, "keys", "", "also (or, without a broker config, only) write the workloads' data keys to this file (mode 0600)")
	fl.StringVar(&f.push, "push", "", "push the secure image to this reference")
	fl.StringVar(&f.ociLayout, "oci-layout", "", "write the secure image as an OCI image layout directory")
	fl.StringVar(&f.tarball, "tarball", "", "write the secure image as an OCI archive (tar of an OCI layout)")
	fl.StringVar(&f.imageName, "image", "", "image repository the nodes pull the secure image from (default: the --push reference)")
	fl.BoolVar(&f.insecure, "insecure-registry", false, "allow plain-HTTP registries (local test registries)")
	fl.BoolVar(&f.resolve, "resolve", true, "resolve image tags to digests; with --resolve=false every image must be pinned")
	fl.StringArrayVar(&f.mirrors, "mirror", nil, "resolve tags of REGISTRY through MIRROR (REGISTRY=MIRROR, e.g. docker.io=127.0.0.1:5000); repeatable")
	fl.StringArrayVar(&f.guestMirrors, "guest-mirror", nil, "seal REGISTRY=HOST: the guest pulls REGISTRY's images from HOST first (pinned by digest); repeatable")
	fl.StringArrayVar(&f.nodePull, "node-pull-secret", nil, "with --seal-secrets: keep this pull Secret whole in the output for the kubelet (by default only the secure image's registry credentials stay; the rest are sealed); repeatable")
	fl.StringArrayVar(&f.seccomp, "seccomp-profile", nil, "seal the seccomp profile FILE (OCI JSON, as the kubelet reads) for containers with seccompProfile {type: Localhost, localhostProfile: NAME} (NAME=FILE); repeatable")
	fl.StringArrayVar(&f.allowExec, "allow-exec", nil, `let the host exec exactly ARGV in every sealed container named CONTAINER (kubectl exec; e.g. app=/bin/sh or app='["/bin/sh","-c","date"]'): CONTAINER=ARGV, ARGV words split at spaces (no quoting) or a JSON list; sealed into the exec policy; repeatable`)
	fl.StringVar(&f.runtimeClass, "runtime-class", "", "runtimeClassName of the sealed pods (default sealpod-<first TEE>)")
	fl.StringVarP(&f.namespace, "namespace", "n", "default", "namespace of objects that name none")
	fl.StringVar(&f.logs, "logs", "allow", "default log policy: allow or deny (per object: annotation sealpod.io/logs)")
	addOutputFlag(cmd, fl, &f.output, "-o is the format: write the manifests to a file with --output-file", formatYAML, formatJSON)
	fl.StringVar(&f.outputFile, "output-file", "", "write the sealed manifests to this file (replaced atomically) instead of standard output")
	fl.IntVar(&f.defaultGuestMemoryMiB, "default-guest-memory-mib", bundle.DefaultMemoryMiB, "guest memory (MiB) of pods without a memory limit (pods with one get limit + kernel/agent overhead, docs/formats.md#guest-size)")
	fl.IntVar(&f.defaultGuestVCPUs, "default-guest-vcpus", bundle.DefaultVCPUs, "vCPUs of pods without a CPU limit (pods with one get the limit rounded up)")
	fl.BoolVar(&f.sealSecrets, "seal-secrets", false, "embed the Secrets and ConfigMaps the pods reference (from the input) into the sealed specs and drop them from the output")
	fl.BoolVar(&f.strict, "strict", false, "refuse references to Secrets and ConfigMaps that are not in the input (by default they are host-provided, with a warning: created at run time, visible to the node)")
	fl.BoolVar(&f.allowHostVolumes, "allow-host-volumes", false, "accept host volumes (hostPath, nfs, ...), which the node can read and change (PersistentVolumeClaims are always sealed as encrypted volumes)")
	fl.BoolVar(&f.allowHostNamespaces, "allow-host-namespaces", false, "accept hostNetwork, hostPID and hostIPC")
	fl.BoolVar(&f.allowPrivileged, "allow-privileged", false, "accept privileged containers (privileged inside the guest)")
	_ = cmd.RegisterFlagCompletionFunc("tee", cobra.FixedCompletions(tee.Strings(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("logs", cobra.FixedCompletions([]string{"allow", "deny"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.MarkFlagDirname("guest")
	_ = cmd.MarkFlagDirname("oci-layout")
	return cmd
}

// validate checks the flags; broker says whether a broker config registers the workloads.
// Every missing flag is reported at once.
func (f *imageCreateFlags) validate(broker bool) error {
	var req requiredFlags
	req.need(len(f.files) > 0 || len(f.kustomize) > 0, "-f (or -k)")
	req.need(f.guest != "", "--guest")
	req.need(len(f.tees) > 0, "--tee")
	req.need(f.kbsURL != "", "--kbs (or --kbs-dir/--kbs-config)")
	req.need(f.kbsCA != "", "--kbs-ca (or --kbs-dir/--kbs-config)")
	// Where the secure image goes, the repository nodes pull it from, where the keys go.
	if f.push == "" && f.ociLayout == "" && f.tarball == "" {
		req.need(false, "--push (or --oci-layout/--tarball)")
	} else {
		req.need(f.imageName != "" || f.push != "", "--image (or --push)")
	}
	req.need(broker || f.keys != "", "--keys (or --kbs-dir/--kbs-config)")
	if err := req.err(); err != nil {
		return err
	}
	if err := checkOutputPath("--output-file", f.outputFile); err != nil {
		return err
	}
	if err := checkOutputPath("--keys", f.keys); err != nil {
		return err
	}

	for _, t := range f.tees {
		if _, err := tee.Parse(t); err != nil {
			return fmt.Errorf("--tee: %w", err)
		}
	}
	if err := f.validatePEF(); err != nil {
		return err
	}
	if m := f.defaultGuestMemoryMiB; m < bundle.MinMemoryMiB || m > 1<<20 {
		return fmt.Errorf("--default-guest-memory-mib %d: want %d..1048576", m, bundle.MinMemoryMiB)
	}
	if v := f.defaultGuestVCPUs; v < 1 || v > bundle.MaxVCPUs {
		return fmt.Errorf("--default-guest-vcpus %d: want 1..%d", v, bundle.MaxVCPUs)
	}
	return nil
}

// brokerConfig finds the admin config that registration uses: --kbs-dir, then --kbs-config
// (or $SEALPOD_KBS_CONFIG), then ~/.config/sealpod/kbs.json if it exists. It fills --kbs and
// --kbs-ca from it when they are not given. nil means offline sealing.
func (f *imageCreateFlags) brokerConfig() (*adminclient.ClientConfig, string, error) {
	path := f.kbsConfig
	explicit := path != ""
	if f.kbsDir != "" {
		path, explicit = filepath.Join(f.kbsDir, adminclient.AdminClientConfig), true
	}
	if path == "" {
		if d, err := os.UserConfigDir(); err == nil {
			if p := filepath.Join(d, "sealpod", "kbs.json"); fileExists(p) {
				path = p
			}
		}
	}
	if path == "" {
		return nil, "", nil
	}
	cfg, err := adminclient.ReadClientConfig(path)
	if err != nil {
		if explicit {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("%w (remove it, or pass --kbs-config)", err)
	}
	if f.kbsURL == "" {
		f.kbsURL = cfg.URL
	}
	if f.kbsCA == "" {
		f.kbsCA = cfg.CAFile
	}
	return cfg, path, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func runImageCreate(cmd *cobra.Command, f *imageCreateFlags) error {
	ctx := cmd.Context()
	stderr := cmd.ErrOrStderr()
	brokerCfg, brokerCfgPath, err := f.brokerConfig()
	if err != nil {
		return err
	}
	if err := f.validate(brokerCfg != nil); err != nil {
		return err
	}
	minTCB, err := parseMinTCB(f.snpMinTCB, f.tdxMinTCB)
	if err != nil {
		return err
	}
	if sims := slices.DeleteFunc(slices.Clone(f.tees), func(t string) bool { return !tee.TEE(t).Simulated() }); len(sims) > 0 {
		fmt.Fprintf(stderr, "WARNING: sealing for the simulated TEE (%s): no hardware protects these workloads; use it for tests and demos only\n", strings.Join(sims, ", "))
	}
	sources, err := readInputs(f.files, f.kustomize, cmd.InOrStdin())
	if err != nil {
		return err
	}
	guest, err := bundle.Load(f.guest)
	if err != nil {
		return err
	}
	pef, err := newPEFSealer(f, guest, stderr)
	if err != nil {
		return err
	}
	for _, t := range f.tees {
		if pefFamily(t) {
			continue // computed from the bundle's files for each workload's blob (pefSealer)
		}
		if _, err := guest.Config.Measurement(tee.TEE(t)); err != nil {
			return fmt.Errorf("guest bundle %s: %w", f.guest, err)
		}
	}
	caSum, err := certFingerprint(f.kbsCA)
	if err != nil {
		return err
	}
	regOpts := image.RegistryOptions{Insecure: f.insecure}
	opts := manifests.Options{
		TEEs: f.tees, KBS: envelope.KBS{URL: f.kbsURL, CASHA256: caSum},
		RuntimeClass: f.runtimeClass, Namespace: f.namespace, Logs: f.logs,
		SealSecrets: f.sealSecrets, Strict: f.strict, AllowHostVolumes: f.allowHostVolumes,
		AllowHostNamespaces: f.allowHostNamespaces, AllowPrivileged: f.allowPrivileged,
		NodePullSecrets: f.nodePull, MinTCB: verify.FormatMinTCB(minTCB),
	}
	repo := f.imageName
	if repo == "" {
		repo = f.push
	}
	ref, err := image.ParseReference(repo, regOpts)
	if err != nil {
		return fmt.Errorf("--image: %w", err)
	}
	opts.SecureImage = ref.Context().Name()
	if opts.GuestMirrors, err = manifests.ParseGuestMirrors(f.guestMirrors); err != nil {
		return err
	}
	if opts.SeccompProfiles, err = manifests.ReadSeccompProfiles(f.seccomp); err != nil {
		return err
	}
	for _, v := range f.allowExec {
		r, err := manifests.ParseAllowExec(v)
		if err != nil {
			return err
		}
		opts.AllowExec = append(opts.AllowExec, r)
	}
	if f.resolve {
		mirrors, err := manifests.ParseMirrors(f.mirrors)
		if err != nil {
			return err
		}
		opts.Resolver = &manifests.RegistryResolver{Options: regOpts, Mirrors: mirrors}
	}
	res, err := manifests.Seal(ctx, sources, opts)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	// Each workload's guest is sized from its pod's limits and measured for that size.
	sizer := newGuestSizer(guest, f.tees, bundle.Size{VCPUs: f.defaultGuestVCPUs, MemoryMiB: f.defaultGuestMemoryMiB})
	envs, guests, measurements := map[string][]byte{}, map[string]*bundle.Config{}, map[string]map[string][]string{}
	var sizeErrs []error
	for _, w := range res.Workloads {
		envs[w.ID] = w.Envelope
		g, err := sizer.size(w)
		if err != nil {
			sizeErrs = append(sizeErrs, err)
			continue
		}
		guests[w.ID], measurements[w.ID] = g.config, g.measurements
		if pef != nil {
			if err := pef.seal(w, g.config); err != nil {
				return err
			}
		}
		fmt.Fprintf(stderr, "guest of %s: %d vCPU(s), %d MiB\n", w.ID, g.config.VCPUs, g.config.MemoryMiB)
	}
	if len(sizeErrs) > 0 {
		return errors.Join(sizeErrs...)
	}
	in := image.Input{Guest: guest, Envelopes: envs, WorkloadGuests: guests}
	if pef != nil {
		in.PEF = pef.cpio
	}
	img, err := image.Build(in)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	pinnedRef := ref.Context().Name() + "@" + digest.String()
	rendered, err := res.Render(pinnedRef)
	if err != nil {
		return err
	}
	sealed, err := formatSealed(rendered, f.output)
	if err != nil {
		return err
	}

	// Check every registration locally before anything leaves this machine.
	var regs []api.Workload
	if brokerCfg != nil {
		for _, w := range res.Workloads {
			rw := api.Workload{
				ID: w.ID, TEEs: f.tees, Measurements: measurements[w.ID], EnvelopeDigest: w.Digest.String(),
				MinTCB: minTCB, SANs: w.Spec.Identity.SANs, DataKey: w.Key,
			}
			if pef != nil {
				rw.PEFCredential = pef.cred[w.ID]
			}
			if err := rw.Validate(); err != nil {
				return fmt.Errorf("%s (workload %s): %w", w.Object, w.ID, err)
			}
			regs = append(regs, rw)
		}
	}

	// Everything is computed; now write, the network first (push, then registration), so
	// that a failure leaves no files behind.
	if f.push != "" {
		var progress io.Writer
		if isTerminal(cmd.OutOrStdout()) && isTerminal(stderr) {
			progress = stderr
		}
		if _, err := image.Push(ctx, f.push, img, regOpts, progress); err != nil {
			return err
		}
	}
	if f.ociLayout != "" {
		if err := image.WriteLayout(f.ociLayout, img, ref.Context().Name()+":"+shortDigest(digest.Hex)); err != nil {
			return err
		}
	}
	if f.tarball != "" {
		if err := image.WriteTarball(f.tarball, img, ref.Context().Name()+":"+shortDigest(digest.Hex)); err != nil {
			return err
		}
	}
	if brokerCfg != nil {
		if err := registerWorkloads(ctx, brokerCfgPath, regs, stderr); err != nil {
			return err
		}
	}
	if f.keys != "" {
		kf := newKeyFile(f.kbsURL, res.Workloads, measurements)
		for i := range kf.Workloads {
			kf.Workloads[i].TEEs = f.tees
			kf.Workloads[i].MinTCB = &minTCB
			if pef != nil {
				kf.Workloads[i].PEFCredential = pef.cred[kf.Workloads[i].ID]
			}
		}
		kb, err := json.MarshalIndent(kf, "", "  ")
		if err != nil {
			return err
		}
		if err := atomicfile.Write(f.keys, append(kb, '\n'), 0o600); err != nil {
			return err
		}
	}
	if f.outputFile == "" || f.outputFile == "-" {
		if _, err := cmd.OutOrStdout().Write(sealed); err != nil {
			return err
		}
	} else if err := atomicfile.Write(f.outputFile, sealed, 0o644); err != nil {
		return fmt.Errorf("--output-file: %w", err)
	}
	fmt.Fprintf(stderr, "sealed %d workload(s) into %s\n", len(res.Workloads), pinnedRef)
	return nil
}

// registerWorkloads puts each workload at the broker named by the admin config at cfgPath,
// logging each registration.
func registerWorkloads(ctx context.Context, cfgPath string, regs []api.Workload, log io.Writer) error {
	c, err := adminclient.NewClientFromConfig(cfgPath)
	if err != nil {
		return err
	}
	_, err = putWorkloads(ctx, c, regs, func(h api.HistoryEntry) {
		fmt.Fprintf(log, "registered %s at %s (history #%d)\n", h.WorkloadID, c.URL(), h.Seq)
	})
	return err
}

// putWorkloads registers regs in order, calling done after each. The admin API takes one
// workload per request; on a failure the error says which were registered already
// (registering them again makes a new generation).
func putWorkloads(ctx context.Context, c *adminclient.Client, regs []api.Workload, done func(api.HistoryEntry)) ([]api.HistoryEntry, error) {
	var entries []api.HistoryEntry
	var ids []string
	for _, w := range regs {
		h, err := c.PutWorkload(ctx, w)
		if err != nil {
			if len(ids) > 0 {
				return entries, fmt.Errorf("register workload %s at %s: %w (already registered: %s)", w.ID, c.URL(), err, strings.Join(ids, ", "))
			}
			return entries, fmt.Errorf("register workload %s at %s: %w", w.ID, c.URL(), err)
		}
		entries = append(entries, h)
		ids = append(ids, w.ID)
		if done != nil {
			done(h)
		}
	}
	return entries, nil
}

func shortDigest(hex string) string { return "sealed-" + hex[:12] }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// certFingerprint returns the hex SHA-256 of the DER of the first certificate in a PEM file.
func certFingerprint(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--kbs-ca: %w", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return "", fmt.Errorf("--kbs-ca %s: no CERTIFICATE block", path)
		}
		if b.Type == "CERTIFICATE" {
			sum := sha256.Sum256(b.Bytes)
			return hex.EncodeToString(sum[:]), nil
		}
	}
}

// keyFile is what --keys writes: everything the key broker needs to serve the workloads.
type keyFile struct {
	Version   int             `json:"version"`
	KBS       string          `json:"kbs"`
	Workloads []keyFileRecord `json:"workloads"`
}

type keyFileRecord struct {
	ID             string              `json:"id"`
	Object         string              `json:"object"`
	KeyID          string              `json:"keyID"`
	DataKey        []byte              `json:"dataKey"`
	EnvelopeDigest string              `json:"envelopeDigest"`
	TEEs           []string            `json:"tees,omitempty"` // the --tee list (older files: the measurements' TEEs)
	Measurements   map[string][]string `json:"measurements"`
	MinTCB         *api.TCB            `json:"minTcb,omitempty"`
	SANs           []string            `json:"sans"`
	PEFCredential  string              `json:"pefCredential,omitempty"` // hex Ed25519 public key (tee pef)
}

// workload is the registration `sealctl kbs register` makes of a keys-file record: what
// image create would have registered with a broker config.
func (r keyFileRecord) workload() api.Workload {
	w := api.Workload{ID: r.ID, TEEs: r.TEEs, Measurements: r.Measurements, EnvelopeDigest: r.EnvelopeDigest,
		SANs: r.SANs, DataKey: r.DataKey, PEFCredential: r.PEFCredential}
	if r.MinTCB != nil {
		w.MinTCB = *r.MinTCB
	}
	if len(w.TEEs) == 0 {
		for t := range r.Measurements {
			w.TEEs = append(w.TEEs, t)
		}
		slices.Sort(w.TEEs)
	}
	return w
}

func newKeyFile(kbs string, ws []*manifests.Workload, measurements map[string]map[string][]string) keyFile {
	kf := keyFile{Version: 1, KBS: kbs}
	for _, w := range ws {
		kf.Workloads = append(kf.Workloads, keyFileRecord{
			ID: w.ID, Object: w.Object, KeyID: envelope.KeyID(w.Key), DataKey: w.Key,
			EnvelopeDigest: w.Digest.String(), Measurements: measurements[w.ID], SANs: w.Spec.Identity.SANs,
		})
	}
	return kf
}

type imageInspectFlags struct {
	output   string
	insecure bool
}

func newImageInspectCmd() *cobra.Command {
	f := &imageInspectFlags{}
	cmd := &cobra.Command{
		Use:   "inspect REF|DIR|FILE",
		Short: "Show the guest, measurements and sealed workloads of a secure image (never plaintext)",
		Example: `  sealctl image inspect out/app-image
  sealctl image inspect registry.example.com/team/app-sealed@sha256:... -o json
  sealctl image inspect app.oci.tar -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, cleanup, err := image.Load(cmd.Context(), args[0], image.RegistryOptions{Insecure: f.insecure})
			defer cleanup()
			if err != nil {
				return err
			}
			info, err := image.Inspect(img)
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, info, func(w io.Writer) error { return printImageInfo(w, info) })
		},
	}
	addOutputFlag(cmd, cmd.Flags(), &f.output, "", formatTable, formatJSON, formatYAML)
	cmd.Flags().BoolVar(&f.insecure, "insecure-registry", false, "allow plain-HTTP registries")
	return cmd
}

func printImageInfo(w io.Writer, info *image.Info) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "IMAGE\t%s\n", info.Digest)
	fmt.Fprintf(tw, "FORMAT\t%s\n", info.Format)
	g := info.Guest
	fmt.Fprintf(tw, "GUEST\tvcpus=%d memory=%dMiB cmdline=%q\n", g.VCPUs, g.MemoryMiB, g.Cmdline)
	m := g.Measurements
	for _, kv := range [][2]string{{"sim", m.Sim}, {"snp", m.SNP}} {
		if kv[1] != "" {
			fmt.Fprintf(tw, "MEASUREMENT %s\t%s\n", kv[0], kv[1])
		}
	}
	if m.TDX != nil {
		fmt.Fprintf(tw, "MEASUREMENT tdx\tmrtd=%s\n", m.TDX.MRTD)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tSIZE\tSHA256")
	for _, f := range g.Files {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", f.Path, f.Size, f.SHA256)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tTEES\tGUEST\tENVELOPE DIGEST (HOST_DATA)\tKEY ID\tKBS")
	for _, wl := range info.Workloads {
		size := fmt.Sprintf("vcpus=%d memory=%dMiB", g.VCPUs, g.MemoryMiB)
		if wl.Guest != nil {
			size = fmt.Sprintf("vcpus=%d memory=%dMiB", wl.Guest.VCPUs, wl.Guest.MemoryMiB)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", wl.ID, strings.Join(wl.TEEs, ","), size, wl.EnvelopeDigest, wl.KeyID, wl.KBS)
	}
	return tw.Flush()
}
