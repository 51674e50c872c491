package cli

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sealpod/sealpod/ctl/internal/verify"
	"github.com/sealpod/sealpod/imagebuilder/image"
	"github.com/sealpod/sealpod/kbs/api"
)

// exitVerifyFailed is sealctl's exit code when verification ran and something differs (or
// could not be verified). Other errors exit 1.
const exitVerifyFailed = 2

// exitError carries a specific process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type verifyFlags struct {
	kbsURL       string
	kbsCA        string
	kbsCASHA256  string
	kbsKey       string
	kbsKeySHA256 string
	expect       []string
	sans         []string
	insecure     bool
	strict       bool
	aliases      []string
	snpMinTCB    string
	tdxMinTCB    string
	outDir       string
	format       string
}

// NewVerifyCmd is `sealctl verify`.
func NewVerifyCmd() *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify --kbs URL (--kbs-ca FILE | --kbs-ca-sha256 HEX) [--kbs-key FILE | --kbs-key-sha256 HEX] [--expect FILE|DIR|- ...] [--dir DIR] [-o table|json|yaml]",
		Short: "Verify a key broker's signed manifest, history and workloads against your sealed manifests",
		Long: `Verify a Sealpod key broker from the outside, trusting only what you pin:

  * TLS to the broker is pinned to its TLS CA (--kbs-ca FILE, or --kbs-ca-sha256, the same
    SHA-256 the sealed envelopes carry);
  * the broker's signed manifest must be signed by the pinned key (--kbs-key signing.pub.pem
    or --kbs-key-sha256); without a key pin the key the manifest carries is trusted on first
    use, which is reported loudly together with its fingerprint;
  * the history hash chain is re-computed end to end, its head must be the manifest's and
    replaying it must give exactly the listed workloads;
  * for every sealed pod template in --expect (sealed manifests written by 'sealctl image
    create'): the workload is registered, its envelope digest at the broker equals the
    digest of the envelope inside the secure image named by sealpod.io/image (pulled and
    digest-checked), the broker's TEEs and allowed launch measurements equal the envelope's
    TEEs and the measurements of the guest.json the workload boots, the envelope header names this broker (URL
    and CA pin), and the registered SANs are valid (and equal --san when given);
  * every registered policy requires at least the minimum TCB given with --snp-min-tcb /
    --tdx-min-tcb, and each expected workload at least the one its sealed manifest declares
    (annotation sealpod.io/min-tcb); a policy below it, or with none, fails;
  * workloads registered at the broker that --expect does not mention are warnings (failures
    with --strict).

It writes DIR/report.txt and DIR/report.json (--dir, default verify) and, only when
everything verifies, DIR/mesh-root.pem (the mesh CA root for clients of the workloads), and
prints the report on standard output (-o table, json or yaml). The exit code is 0 only if
every check passes, 2 if a check fails, 1 if verification could not run.`,
		Example: `  # Verify the broker and the sealed manifests it serves; pin TLS and the signing key
  sealctl verify --kbs https://kbs.example:8443 --kbs-ca kbs-ca.pem \
      --kbs-key signing.pub.pem --expect app.sealed.yaml

  # Pin by fingerprints only, fail on workloads nobody expects, JSON on stdout
  sealctl verify --kbs https://kbs.example:8443 --kbs-ca-sha256 3f1c... \
      --kbs-key-sha256 9a0b... --expect deploy/ --strict -o json --dir out/verify`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kbsURL, "kbs", "", "key broker URL (https://host:port)")
	fl.StringVar(&f.kbsCA, "kbs-ca", "", "PEM file of the broker's TLS CA certificate (TLS is pinned to it)")
	fl.StringVar(&f.kbsCASHA256, "kbs-ca-sha256", "", "hex SHA-256 of the broker's TLS CA certificate (DER), as the envelopes pin it")
	fl.StringVar(&f.kbsKey, "kbs-key", "", "PEM public key that must sign the manifest (the broker's signing.pub.pem)")
	fl.StringVar(&f.kbsKeySHA256, "kbs-key-sha256", "", "hex SHA-256 of the broker's signing public key (PKIX DER)")
	fl.StringArrayVar(&f.expect, "expect", nil, "sealed manifests: file, directory (its *.yaml, *.yml, *.json) or -; repeatable")
	fl.StringArrayVar(&f.sans, "san", nil, "expected certificate SANs of a workload: ID=SAN[,SAN...]; repeatable")
	fl.BoolVar(&f.insecure, "insecure-registry", false, "allow plain-HTTP registries when pulling the secure images")
	fl.BoolVar(&f.strict, "strict", false, "treat warnings (unexpected workloads, unpinned signing key) as failures")
	fl.StringArrayVar(&f.aliases, "kbs-alias", nil, "another URL of the same broker that sealed manifests and envelopes may name (e.g. the address guests reach it at); repeatable")
	fl.StringVar(&f.snpMinTCB, "snp-min-tcb", "", "fail on a registered SEV-SNP (or sim) policy whose minimum TCB is below bootloader,tee,snp,microcode (e.g. 3,0,8,115) or unset")
	fl.StringVar(&f.tdxMinTCB, "tdx-min-tcb", "", "fail on a registered TDX policy whose minimum TEE_TCB_SVN (32 hex characters) is below this or unset")
	fl.StringVar(&f.outDir, "dir", "verify", "directory for mesh-root.pem, report.txt and report.json")
	addOutputFlag(cmd, fl, &f.format, "-o is the format of the report on standard output: the files go into --dir", formatTable, formatJSON, formatYAML)
	_ = cmd.MarkFlagDirname("dir")
	return cmd
}

func (f *verifyFlags) options(stdin io.Reader) (verify.Options, error) {
	var o verify.Options
	var req requiredFlags
	req.need(f.kbsURL != "", "--kbs")
	req.need(f.kbsCA != "" || f.kbsCASHA256 != "", "--kbs-ca (or --kbs-ca-sha256)")
	if err := req.err(); err != nil {
		return o, err
	}
	if f.kbsCA != "" && f.kbsCASHA256 != "" {
		return o, errors.New("pin the broker's TLS CA with exactly one of --kbs-ca FILE or --kbs-ca-sha256 HEX")
	}
	if f.kbsKey != "" && f.kbsKeySHA256 != "" {
		return o, errors.New("--kbs-key and --kbs-key-sha256: give one")
	}
	o.URL = f.kbsURL
	if f.kbsCA != "" {
		b, err := os.ReadFile(f.kbsCA)
		if err != nil {
			return o, fmt.Errorf("--kbs-ca: %w", err)
		}
		o.CAPEM = b
	}
	o.CASHA256 = f.kbsCASHA256
	if f.kbsKey != "" {
		k, err := readPublicKey(f.kbsKey)
		if err != nil {
			return o, err
		}
		o.SigningKey = k
	}
	o.SigningKeySHA256 = f.kbsKeySHA256
	if len(f.expect) > 0 {
		srcs, err := readSources(f.expect, stdin)
		if err != nil {
			return o, fmt.Errorf("--expect: %w", err)
		}
		exp, err := verify.ParseExpected(srcs)
		if err != nil {
			return o, err
		}
		if len(exp) == 0 {
			return o, fmt.Errorf("--expect %s: %w", strings.Join(f.expect, ", "), verify.ErrNoSealedTemplates)
		}
		o.Expect = exp
	}
	if len(f.sans) > 0 {
		o.SANs = map[string][]string{}
		for _, s := range f.sans {
			id, list, ok := strings.Cut(s, "=")
			if !ok || id == "" || list == "" {
				return o, fmt.Errorf("--san %q: want ID=SAN[,SAN...]", s)
			}
			for _, v := range strings.Split(list, ",") {
				if v = strings.TrimSpace(v); v != "" {
					o.SANs[id] = append(o.SANs[id], v)
				}
			}
		}
	}
	if f.snpMinTCB != "" || f.tdxMinTCB != "" {
		o.MinTCB = &api.TCB{}
		if f.snpMinTCB != "" {
			snp, err := verify.ParseSNPTCB(f.snpMinTCB)
			if err != nil {
				return o, fmt.Errorf("--snp-min-tcb: %w", err)
			}
			o.MinTCB.SNP = snp
		}
		if f.tdxMinTCB != "" {
			if err := verify.ValidTDXTCB(f.tdxMinTCB); err != nil {
				return o, fmt.Errorf("--tdx-min-tcb: %w", err)
			}
			o.MinTCB.TDXTeeTCBSVN = f.tdxMinTCB
		}
	}
	o.Strict = f.strict
	o.Aliases = f.aliases
	regOpts := image.RegistryOptions{Insecure: f.insecure}
	o.LoadImage = func(ctx context.Context, ref string) (*image.Info, error) {
		img, cleanup, err := image.Load(ctx, ref, regOpts)
		defer cleanup()
		if err != nil {
			return nil, err
		}
		return image.Inspect(img)
	}
	return o, nil
}

// readPublicKey reads a PEM "PUBLIC KEY" (PKIX) file.
func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--kbs-key: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("--kbs-key %s: no PUBLIC KEY block", path)
		}
		if blk.Type == "PUBLIC KEY" {
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("--kbs-key %s: %w", path, err)
			}
			return k, nil
		}
	}
}

func runVerify(cmd *cobra.Command, f *verifyFlags) error {
	o, err := f.options(cmd.InOrStdin())
	if err != nil {
		return err
	}
	stderr := cmd.ErrOrStderr()
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := verify.Run(cmd.Context(), o)
	if err != nil {
		return err
	}
	if err := verify.WriteFiles(f.outDir, rep); err != nil {
		return err
	}
	if err := printObject(cmd.OutOrStdout(), f.format, rep, rep.WriteText); err != nil {
		return err
	}
	if err := rep.Err(); err != nil {
		return &exitError{code: exitVerifyFailed, err: fmt.Errorf("%w (report: %s)", err, filepath.Join(f.outDir, verify.FileReportText))}
	}
	fmt.Fprintf(stderr, "verified %s: %d checks passed, %d warnings; mesh root in %s\n", rep.KBS, len(rep.Checks)-rep.Warnings, rep.Warnings, filepath.Join(f.outDir, verify.FileMeshRoot))
	return nil
}
