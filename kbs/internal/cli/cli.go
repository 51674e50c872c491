// Package cli holds the cobra commands of sealpod-kbs: init, serve and sim-roots.
package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/sealpod/sealpod/internal/atomicfile"
	"github.com/sealpod/sealpod/kbs/admin"
	"github.com/sealpod/sealpod/kbs/api"
	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/server"
	"github.com/sealpod/sealpod/kbs/setup"
	"github.com/sealpod/sealpod/kbs/verify"
	"github.com/sealpod/sealpod/kbs/verify/pef"
	"github.com/sealpod/sealpod/kbs/verify/sim"
	"github.com/sealpod/sealpod/kbs/verify/snp"
	"github.com/sealpod/sealpod/kbs/verify/tdx"
	"github.com/sealpod/sealpod/simtee/amdsp"
	"github.com/sealpod/sealpod/simtee/tdxqe"
	"github.com/spf13/cobra"
)

// NewRootCmd builds the sealpod-kbs command tree.
func NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sealpod-kbs",
		Short: "Sealpod key broker: releases workload keys and certificates to attested guests",
		Example: `  sealpod-kbs init --dir /var/lib/sealpod-kbs --host kbs.example.com --url https://kbs.example.com:8443
  sealpod-kbs serve --dir /var/lib/sealpod-kbs --listen 0.0.0.0:8443`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(NewInitCmd(), NewServeCmd(), NewSimRootsCmd(), NewAdminCertCmd())
	return root
}

// Execute runs the command with a context cancelled on SIGINT/SIGTERM; it returns the exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sealpod-kbs:", err)
		return 1
	}
	return 0
}

type initFlags struct {
	dir           string
	hosts         []string
	url           string
	adminValidity time.Duration
}

// NewInitCmd creates a broker state directory.
func NewInitCmd() *cobra.Command {
	var f initFlags
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new broker state directory (keys, mesh CA, TLS and admin identities)",
		Example: `  sealpod-kbs init --dir ./kbs-state --host localhost --host 127.0.0.1 --url https://127.0.0.1:8443
  # then: sealctl kbs --config ./kbs-state/admin/sealctl-kbs.json status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.dir == "" || f.url == "" {
				return errors.New("init: --dir and --url are required")
			}
			if err := setup.InitWith(f.dir, f.hosts, f.url, setup.InitOptions{AdminCertValidity: f.adminValidity}); err != nil {
				return fmt.Errorf("init %s: %w", f.dir, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "broker state created in %s\n", f.dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&f.dir, "dir", "", "state directory to create (must not exist or be empty)")
	cmd.Flags().StringArrayVar(&f.hosts, "host", nil, "DNS name or IP for the server certificate (repeatable)")
	cmd.Flags().StringVar(&f.url, "url", "", "public URL of the broker, e.g. https://kbs.example.com:8443")
	cmd.Flags().DurationVar(&f.adminValidity, "admin-cert-validity", setup.DefaultAdminCertValidity, "lifetime of the admin client certificate (1h..17520h)")
	return cmd
}

// NewAdminCertCmd issues another admin client certificate from the state's admin CA.
func NewAdminCertCmd() *cobra.Command {
	var dir, name, out string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "admin-cert",
		Short: "Issue an admin client certificate (renewal or another administrator) from the admin CA",
		Example: `  sealpod-kbs admin-cert --dir /var/lib/sealpod-kbs --name alice --out ./alice
  sealctl kbs --config ./alice/sealctl-kbs.json status
  # revoke it later: sealctl kbs admin revoke ./alice/client.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || name == "" || out == "" {
				return errors.New("admin-cert: --dir, --name and --out are required")
			}
			c, err := setup.IssueAdminClient(dir, name, validity, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "admin certificate %q serial %s valid until %s written to %s\n", name, admin.SerialOf(c), c.NotAfter.UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "state directory (holds admin-ca/ca.key)")
	cmd.Flags().StringVar(&name, "name", "", "common name of the certificate (who holds it), e.g. alice")
	cmd.Flags().StringVar(&out, "out", "", "directory to write sealctl-kbs.json, client.pem, client.key and kbs-ca.pem into (must not exist or be empty)")
	cmd.Flags().DurationVar(&validity, "validity", setup.DefaultAdminCertValidity, "lifetime (1h..17520h)")
	return cmd
}

// ServeFlags are the flags of `sealpod-kbs serve`.
type ServeFlags struct {
	Dir              string
	Listen           string
	Store            string
	InsecureSimRoots string
	SNPCertCache     string
	TokenTTL         time.Duration
	NonceTTL         time.Duration
	CertValidity     time.Duration
	LogFormat        string

	// InsecureSimPEF accepts tee sim-pef (the node plays the PEF ultravisor; docs/pef.md).
	InsecureSimPEF bool

	// Audit log retention (audit.Retention); AuditPruneEvery 0 disables it.
	AuditMaxAge     time.Duration
	AuditMaxBytes   int64
	AuditExportDir  string
	AuditPruneEvery time.Duration
}

// NewServeCmd serves the broker.
func NewServeCmd() *cobra.Command {
	f := ServeFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the key broker over HTTPS",
		Example: `  sealpod-kbs serve --dir ./kbs-state --listen 127.0.0.1:8443 --store bolt:///abs/kbs-state/kbs.db
  # CI / demo without a TEE (INSECURE, logged loudly):
  sealpod-kbs serve --dir ./kbs-state --listen 127.0.0.1:8443 --insecure-sim-roots /etc/sealpod/sim-roots.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Serve(cmd.Context(), f, nil)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Dir, "dir", "", "state directory made by `sealpod-kbs init` (required)")
	fl.StringVar(&f.Listen, "listen", "127.0.0.1:8443", "address to listen on")
	fl.StringVar(&f.Store, "store", "", "store URL: bolt:///abs/path/kbs.db or etcd://host:port[,host:port]/prefix (default: the state's)")
	fl.BoolVar(&f.InsecureSimPEF, "insecure-sim-pef", false, "INSECURE: accept tee `sim-pef` guests (the node plays the IBM PEF ultravisor with a software host key and can read the guest's credential); for CI and development only")
	fl.StringVar(&f.InsecureSimRoots, "insecure-sim-roots", "", "INSECURE: accept `sim` evidence signed under these fake AMD roots, and `sim-tdx` evidence under the fake Intel root if the file has one (file from `sealpod-kbs sim-roots`)")
	fl.StringVar(&f.SNPCertCache, "snp-cert-cache", "", "offline VCEK cache directory (vcek-<chip_id hex>-<reported_tcb hex16>.der); no network is used")
	fl.DurationVar(&f.TokenTTL, "token-ttl", server.DefaultTokenTTL, "lifetime of attestation tokens")
	fl.DurationVar(&f.NonceTTL, "nonce-ttl", server.DefaultNonceTTL, "lifetime of nonces (auth → attest)")
	fl.DurationVar(&f.CertValidity, "cert-validity", server.DefaultCertValidity, "validity of workload certificates")
	fl.StringVar(&f.LogFormat, "log-format", "json", "log format: json or text")
	fl.DurationVar(&f.AuditMaxAge, "audit-max-age", 90*24*time.Hour, "drop (after exporting) audit hours older than this; 0 = no age bound")
	fl.Int64Var(&f.AuditMaxBytes, "audit-max-bytes", 1<<30, "drop (after exporting) the oldest audit hours while the log is larger; 0 = no size bound")
	fl.StringVar(&f.AuditExportDir, "audit-export-dir", "", "where dropped audit hours are exported, hash-chained (default <dir>/audit-export)")
	fl.DurationVar(&f.AuditPruneEvery, "audit-prune-interval", 10*time.Minute, "how often to apply audit retention; 0 = never (e.g. on all but one replica)")
	return cmd
}

// Serve runs the broker until ctx is done. ready, if not nil, receives the bound address once
// the listener is up.
func Serve(ctx context.Context, f ServeFlags, ready chan<- net.Addr) error {
	var logger *slog.Logger
	switch f.LogFormat {
	case "json", "":
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	case "text":
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	default:
		return fmt.Errorf("serve: --log-format %q: want json or text", f.LogFormat)
	}
	if f.Dir == "" {
		return errors.New("serve: --dir is required")
	}
	logger.Info("garbage collector target", "gogc", server.TuneGC())
	st, err := setup.Load(f.Dir)
	if err != nil {
		return fmt.Errorf("serve: load state %s: %w", f.Dir, err)
	}
	storeURL := f.Store
	if storeURL == "" {
		storeURL = st.StoreURL
	}
	kv, err := setup.OpenStore(storeURL, st.StoreKey)
	if err != nil {
		return fmt.Errorf("serve: open store %s: %w", storeURL, err)
	}
	defer kv.Close()
	reg := registry.New(kv, st.Signer)
	auditLog := audit.New(kv)
	if f.AuditPruneEvery > 0 && (f.AuditMaxAge > 0 || f.AuditMaxBytes > 0) {
		exportDir := f.AuditExportDir
		if exportDir == "" {
			exportDir = filepath.Join(f.Dir, "audit-export")
		}
		rctx, stopRetention := context.WithCancel(ctx)
		defer stopRetention()
		go auditLog.RunRetention(rctx, audit.Retention{MaxAge: f.AuditMaxAge, MaxBytes: f.AuditMaxBytes, ExportDir: exportDir}, f.AuditPruneEvery,
			func(res audit.PruneResult, err error) {
				if err != nil {
					logger.Error("audit retention failed", "err", err)
					return
				}
				logger.Info("audit retention: exported and dropped", "events", res.Events, "bytes", res.Bytes, "segments", res.Segments, "anchor", res.Anchor.Hash)
			})
	}
	verifiers := map[string]verify.Verifier{
		api.TEESNP: snp.New(snp.Config{CertCacheDir: f.SNPCertCache}),
		api.TEETDX: tdx.New(tdx.Config{}),
		api.TEEPEF: pef.Verifier{}, // the credential sealed in the ESM blob (docs/pef.md)
	}
	if f.InsecureSimRoots != "" {
		vs, err := sim.LoadVerifiers(f.InsecureSimRoots)
		if err != nil {
			return fmt.Errorf("serve: --insecure-sim-roots: %w", err)
		}
		for t, v := range vs {
			verifiers[t] = v
		}
		logger.Warn("INSECURE MODE: --insecure-sim-roots is set; guests of tee=sim get keys although the host can read their memory", "roots", f.InsecureSimRoots)
		if _, ok := vs[api.TEESimTDX]; ok {
			logger.Warn("INSECURE MODE: the sim roots carry a fake Intel root; guests of tee=sim-tdx get keys although the host signs their quotes and can read their memory", "roots", f.InsecureSimRoots)
		}
		// server.New logs its own warning as well; both are intended.
	}
	if f.InsecureSimPEF {
		verifiers[api.TEESimPEF] = pef.NewSim()
		logger.Warn("INSECURE MODE: --insecure-sim-pef is set; guests of tee=sim-pef get keys and certificates although the node plays the PEF ultravisor and can read their memory and credential")
	}
	srv, err := server.New(server.Config{
		Registry:     reg,
		Audit:        auditLog,
		MeshCA:       st.MeshCA,
		TokenSigner:  st.Signer,
		Verifiers:    verifiers,
		Admin:        admin.NewHandler(reg, auditLog, st.MeshCA, logger, admin.WithAdminCAs(st.AdminCAPool), admin.WithDenyList(admin.NewDenyList(kv))),
		Ready:        func(ctx context.Context) error { _, err := reg.Head(ctx); return err },
		NonceTTL:     f.NonceTTL,
		TokenTTL:     f.TokenTTL,
		CertValidity: f.CertValidity,
		Logger:       logger,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	tlsCfg, err := server.TLSConfig(st.TLSCert, st.TLSCAPEM, st.AdminCAPool)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen %s: %w", f.Listen, err)
	}
	if ready != nil {
		ready <- ln.Addr()
	}
	serveErr := srv.Serve(ctx, ln, tlsCfg)
	// Auth and refusal events are queued without waiting (audit.Log.Enqueue): commit them
	// before the store closes.
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := auditLog.Flush(fctx); err != nil {
		logger.Error("audit log: events queued at shutdown may be lost", "err", err)
	}
	return serveErr
}

type simRootsFlags struct {
	out, keyOut, tdxKeyOut string
	rsaBits                int
	tcb                    []uint
}

// NewSimRootsCmd generates a fake AMD chain for `sim` (what the node installer does).
func NewSimRootsCmd() *cobra.Command {
	var f simRootsFlags
	cmd := &cobra.Command{
		Use:   "sim-roots",
		Short: "Generate a fake ARK/ASK/VCEK chain (and a fake Intel PCK chain) for the simulated TEEs (INSECURE, CI/demo only)",
		Example: `  sealpod-kbs sim-roots --out sim-roots.pem --key-out sim-vcek.pem [--tdx-key-out sim-tdx-pck.pem]
  # broker:  sealpod-kbs serve ... --insecure-sim-roots sim-roots.pem
  # node:    the shim signs sim reports with sim-vcek.pem and sim-tdx quotes with sim-tdx-pck.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.out == "" || f.keyOut == "" {
				return errors.New("sim-roots: --out and --key-out are required")
			}
			if len(f.tcb) != 4 {
				return errors.New("sim-roots: --tcb wants 4 values: bootloader,tee,snp,microcode")
			}
			for _, v := range f.tcb {
				if v > 255 {
					return fmt.Errorf("sim-roots: --tcb value %d > 255", v)
				}
			}
			c, err := amdsp.NewChain(amdsp.Options{RSABits: f.rsaBits, TCB: kds.TCBParts{
				BlSpl: uint8(f.tcb[0]), TeeSpl: uint8(f.tcb[1]), SnpSpl: uint8(f.tcb[2]), UcodeSpl: uint8(f.tcb[3])}})
			if err != nil {
				return fmt.Errorf("sim-roots: %w", err)
			}
			if f.tdxKeyOut == "" {
				if err := c.WriteFiles(f.out, f.keyOut); err != nil {
					return fmt.Errorf("sim-roots: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sim roots (ASK, ARK) written to %s; VCEK key and chain to %s (mode 0600)\n", f.out, f.keyOut)
				return nil
			}
			// sim-tdx: a fake Intel chain; its root joins the roots file, the PCK key and
			// chain go to the node.
			intel, err := tdxqe.NewChain(tdxqe.Options{})
			if err != nil {
				return fmt.Errorf("sim-roots: %w", err)
			}
			if err := c.WriteFiles(f.out, f.keyOut); err != nil {
				return fmt.Errorf("sim-roots: %w", err)
			}
			if err := atomicfile.Write(f.out, append(c.RootsPEM(), intel.RootPEM()...), 0o644); err != nil {
				return fmt.Errorf("sim-roots: %w", err)
			}
			if err := intel.WriteKeyFile(f.tdxKeyOut); err != nil {
				return fmt.Errorf("sim-roots: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sim roots (ASK, ARK, fake Intel root) written to %s; VCEK key and chain to %s, sim-tdx PCK key and chain to %s (mode 0600)\n", f.out, f.keyOut, f.tdxKeyOut)
			return nil
		},
	}
	cmd.Flags().StringVar(&f.out, "out", "", "roots file for the broker's --insecure-sim-roots")
	cmd.Flags().StringVar(&f.keyOut, "key-out", "", "node signing key file (VCEK key + VCEK, ASK, ARK certificates)")
	cmd.Flags().StringVar(&f.tdxKeyOut, "tdx-key-out", "", "sim-tdx: also make a fake Intel PCK chain, add its root to --out and write the node's PCK key + chain here")
	cmd.Flags().IntVar(&f.rsaBits, "rsa-bits", 4096, "ARK/ASK RSA modulus size")
	cmd.Flags().UintSliceVar(&f.tcb, "tcb", []uint{3, 0, 8, 115}, "reported TCB: bootloader,tee,snp,microcode")
	return cmd
}
