package cli

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/ctl/internal/verify"
	"github.com/sealpod/sealpod/kbs/adminclient"
	"github.com/sealpod/sealpod/kbs/api"
)

// kbsFlags are the flags shared by every `sealctl kbs` command.
type kbsFlags struct {
	config string
	kbsDir string
	output string
}

// defaultKBSConfig is $SEALPOD_KBS_CONFIG or ~/.config/sealpod/kbs.json.
func defaultKBSConfig() string {
	if p := os.Getenv("SEALPOD_KBS_CONFIG"); p != "" {
		return p
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "sealpod", "kbs.json")
	}
	return ""
}

// configPath resolves the admin client config: --kbs-dir wins over --config.
func (f *kbsFlags) configPath() (string, error) {
	if f.kbsDir != "" {
		return filepath.Join(f.kbsDir, "admin", "sealctl-kbs.json"), nil
	}
	if f.config == "" {
		return "", errors.New("no key broker config: pass --config FILE or --kbs-dir DIR (or set SEALPOD_KBS_CONFIG)")
	}
	return f.config, nil
}

func (f *kbsFlags) client() (*adminclient.Client, error) {
	p, err := f.configPath()
	if err != nil {
		return nil, err
	}
	return adminclient.NewClientFromConfig(p)
}

// NewKBSCmd is `sealctl kbs`: administration of the key broker over its mTLS admin API.
func NewKBSCmd() *cobra.Command {
	f := &kbsFlags{}
	cmd := &cobra.Command{
		Use:   "kbs",
		Short: "Administer the key broker: workloads, audit log, mesh CA, status, admin certificates",
		Long: `Administer a sealpod key broker over its admin API (mutual TLS with the admin identity
that 'sealpod-kbs init' created). The connection settings come from a sealctl-kbs.json file:
--kbs-dir DIR uses DIR/admin/sealctl-kbs.json of a 'sealpod-kbs init' directory, otherwise
--config FILE (default $SEALPOD_KBS_CONFIG or ~/.config/sealpod/kbs.json).`,
		Example: `  # Register (or update) a workload from a file, with its data key
  sealctl kbs --kbs-dir /var/lib/sealpod-kbs workload add -f web.yaml --data-key-file web.key

  # List workloads as JSON
  sealctl kbs workload list -o json

  # Show the last hour of the audit log
  sealctl kbs audit --since 1h`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.config, "config", defaultKBSConfig(), "sealctl-kbs.json with the broker URL, CA and admin client certificate")
	pf.StringVar(&f.kbsDir, "kbs-dir", "", "a 'sealpod-kbs init' directory (uses its admin/sealctl-kbs.json)")
	addOutputFlag(cmd, pf, &f.output, "", formatTable, formatJSON, formatYAML)
	cmd.AddCommand(newKBSWorkloadCmd(f), newKBSRegisterCmd(f), newKBSAuditCmd(f), newKBSHistoryCmd(f), newKBSCACmd(f), newKBSStatusCmd(f), newKBSAdminCmd(f))
	return cmd
}

func newKBSWorkloadCmd(f *kbsFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "workload",
		Aliases: []string{"workloads", "wl"},
		Short:   "Register, list, show and remove workloads",
		Example: `  sealctl kbs workload add -f web.yaml --data-key-file web.key
  sealctl kbs workload list
  sealctl kbs workload get web -o yaml
  sealctl kbs workload rm web`,
	}
	cmd.AddCommand(newKBSWorkloadAddCmd(f), newKBSWorkloadListCmd(f), newKBSWorkloadGetCmd(f), newKBSWorkloadRmCmd(f))
	return cmd
}

type workloadAddFlags struct {
	file           string
	id             string
	tees           []string
	measurements   []string
	envelopeDigest string
	sans           []string
	dataKeyFile    string
	snpMinTCB      string
	tdxMinTCB      string
}

func newKBSWorkloadAddCmd(f *kbsFlags) *cobra.Command {
	a := &workloadAddFlags{}
	cmd := &cobra.Command{
		Use:   "add (-f FILE | --id ID --tee TEE --measurement TEE=HEX --envelope-digest HEX) [--data-key-file FILE]",
		Short: "Register a workload, or update it (a new generation) if it exists",
		Long: `Register a workload: its TEEs, reference measurements, envelope digest (the expected
HOST_DATA / MRCONFIGID), minimum TCB, certificate SANs and 32-byte data key. The workload comes
from a YAML or JSON file (-f, '-' for stdin; the fields of GET workloads/ID, with dataKey in
base64) and/or flags, flags overriding the file. Updating an existing workload without a data
key keeps the stored key. The broker records every change in its signed history.`,
		Example: `  # From a file
  sealctl kbs workload add -f web.yaml --data-key-file web.key

  # From flags
  sealctl kbs workload add --id web --tee sim --measurement sim=<96 hex> \
      --envelope-digest <64 hex> --san web.default.svc --data-key-file web.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w, err := a.workload(cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			entry, err := c.PutWorkload(cmd.Context(), w)
			if err != nil {
				return fmt.Errorf("register workload %s: %w", w.ID, err)
			}
			return printObject(cmd.OutOrStdout(), f.output, entry, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "workload %s registered (generation %d, history entry %d, %s)\n", entry.WorkloadID, entry.Workload.Generation, entry.Seq, entry.Hash[:16])
				return err
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&a.file, "file", "f", "", "workload YAML or JSON file ('-' for stdin)")
	fl.StringVar(&a.id, "id", "", "workload id")
	fl.StringSliceVar(&a.tees, "tee", nil, "allowed TEE (snp, tdx, pef, sim); repeatable")
	fl.StringArrayVar(&a.measurements, "measurement", nil, "TEE=HEX reference measurement (tdx: mrtd[:rtmr0:rtmr1:rtmr2:rtmr3]); repeatable")
	fl.StringVar(&a.envelopeDigest, "envelope-digest", "", "hex SHA-256 of the sealed envelope")
	fl.StringSliceVar(&a.sans, "san", nil, "DNS name, IP or URI allowed in the workload certificate; repeatable")
	fl.StringVar(&a.dataKeyFile, "data-key-file", "", "file with the 32-byte data key (raw, hex or base64)")
	fl.StringVar(&a.snpMinTCB, "snp-min-tcb", "", "minimum SEV-SNP TCB as bootloader,tee,snp,microcode (e.g. 3,0,8,115)")
	fl.StringVar(&a.tdxMinTCB, "tdx-min-tcb", "", "minimum TDX TEE_TCB_SVN (32 hex characters)")
	return cmd
}

// workload assembles the workload from the file and the flags.
func (a *workloadAddFlags) workload(stdin io.Reader) (api.Workload, error) {
	var w api.Workload
	if a.file != "" {
		var b []byte
		var err error
		if a.file == "-" {
			b, err = io.ReadAll(io.LimitReader(stdin, adminclient.MaxBodyBytes))
		} else {
			b, err = os.ReadFile(a.file)
		}
		if err != nil {
			return w, fmt.Errorf("read workload file %s: %w", a.file, err)
		}
		if err := yaml.UnmarshalStrict(b, &w); err != nil {
			return w, fmt.Errorf("parse workload file %s: %w", a.file, err)
		}
	}
	if a.id != "" {
		w.ID = a.id
	}
	if len(a.tees) > 0 {
		w.TEEs = a.tees
	}
	for _, m := range a.measurements {
		tee, val, ok := strings.Cut(m, "=")
		if !ok || tee == "" || val == "" {
			return w, fmt.Errorf("--measurement %q: want TEE=HEX", m)
		}
		if w.Measurements == nil {
			w.Measurements = map[string][]string{}
		}
		w.Measurements[tee] = append(w.Measurements[tee], strings.ToLower(val))
	}
	if a.envelopeDigest != "" {
		w.EnvelopeDigest = strings.ToLower(a.envelopeDigest)
	}
	if len(a.sans) > 0 {
		w.SANs = a.sans
	}
	tcb, err := parseMinTCB(a.snpMinTCB, a.tdxMinTCB)
	if err != nil {
		return w, err
	}
	if tcb.SNP != nil {
		w.MinTCB.SNP = tcb.SNP
	}
	if tcb.TDXTeeTCBSVN != "" {
		w.MinTCB.TDXTeeTCBSVN = tcb.TDXTeeTCBSVN
	}
	if a.dataKeyFile != "" {
		k, err := readDataKeyFile(a.dataKeyFile)
		if err != nil {
			return w, err
		}
		w.DataKey = k
	}
	var req requiredFlags // each from its flag or the file
	req.need(w.ID != "", "--id (or -f)")
	req.need(len(w.TEEs) > 0, "--tee (or -f)")
	req.need(len(w.Measurements) > 0 || onlyPEF(w.TEEs), "--measurement (or -f)")
	req.need(w.EnvelopeDigest != "", "--envelope-digest (or -f)")
	if err := req.err(); err != nil {
		return w, err
	}
	// Check everything but the key locally (an update may omit the key); the broker
	// validates again.
	check := w
	if len(check.DataKey) == 0 {
		check.DataKey = make([]byte, api.DataKeySize)
	}
	if err := check.Validate(); err != nil {
		return w, err
	}
	return w, nil
}

// onlyPEF reports whether tees is PEF alone, which needs no reference measurement (the ESM
// blob's credential stands for it).
func onlyPEF(tees []string) bool {
	return len(tees) > 0 && !slices.ContainsFunc(tees, func(t string) bool { return t != api.TEEPEF && t != api.TEESimPEF })
}

// parseMinTCB parses the --snp-min-tcb (bootloader,tee,snp,microcode) and --tdx-min-tcb
// (hex TEE_TCB_SVN) flags; empty flags leave that part unset.
func parseMinTCB(snp, tdx string) (api.TCB, error) {
	var tcb api.TCB
	if snp != "" {
		v, err := verify.ParseSNPTCB(snp)
		if err != nil {
			return tcb, fmt.Errorf("--snp-min-tcb: %w", err)
		}
		tcb.SNP = v
	}
	tcb.TDXTeeTCBSVN = strings.ToLower(tdx)
	return tcb, nil
}

// readDataKeyFile reads a 32-byte key stored raw, as hex or as base64.
func readDataKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("data key file: %w", err)
	}
	if len(b) == api.DataKeySize {
		return b, nil
	}
	s := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(s); err == nil && len(k) == api.DataKeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == api.DataKeySize {
		return k, nil
	}
	return nil, fmt.Errorf("data key file %s: want %d bytes raw, hex or base64", path, api.DataKeySize)
}

func newKBSWorkloadListCmd(f *kbsFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List registered workloads (data keys are never shown)",
		Example: `  sealctl kbs workload list -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			ws, err := c.ListWorkloads(cmd.Context())
			if err != nil {
				return err
			}
			if ws == nil {
				ws = []api.Workload{}
			}
			return printObject(cmd.OutOrStdout(), f.output, ws, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tTEES\tGENERATION\tENVELOPE\tSANS\tUPDATED")
				for _, w := range ws {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", w.ID, strings.Join(w.TEEs, ","), w.Generation,
						short(w.EnvelopeDigest), strings.Join(w.SANs, ","), w.UpdatedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

func newKBSWorkloadGetCmd(f *kbsFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "Show one workload (its data key is never shown)",
		Example: `  sealctl kbs workload get web -o yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			w, err := c.GetWorkload(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, w, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "ID:\t%s\n", w.ID)
				fmt.Fprintf(tw, "Generation:\t%d\n", w.Generation)
				fmt.Fprintf(tw, "Updated:\t%s\n", w.UpdatedAt.UTC().Format(time.RFC3339))
				fmt.Fprintf(tw, "TEEs:\t%s\n", strings.Join(w.TEEs, ", "))
				for _, tee := range w.TEEs {
					for _, m := range w.Measurements[tee] {
						fmt.Fprintf(tw, "Measurement (%s):\t%s\n", tee, m)
					}
				}
				fmt.Fprintf(tw, "Envelope digest:\t%s\n", w.EnvelopeDigest)
				if t := w.MinTCB.SNP; t != nil {
					fmt.Fprintf(tw, "Min SNP TCB:\tbootloader=%d tee=%d snp=%d microcode=%d\n", t.Bootloader, t.TEE, t.SNP, t.Microcode)
				}
				if w.MinTCB.TDXTeeTCBSVN != "" {
					fmt.Fprintf(tw, "Min TDX TEE_TCB_SVN:\t%s\n", w.MinTCB.TDXTeeTCBSVN)
				}
				fmt.Fprintf(tw, "SANs:\t%s\n", strings.Join(w.SANs, ", "))
				return tw.Flush()
			})
		},
	}
}

func newKBSWorkloadRmCmd(f *kbsFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a workload (its key can no longer be released)",
		Example: `  sealctl kbs workload rm web`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			entry, err := c.RemoveWorkload(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, entry, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "workload %s removed (history entry %d)\n", entry.WorkloadID, entry.Seq)
				return err
			})
		},
	}
}

type kbsAuditFlags struct {
	since string
	limit int
}

func newKBSAuditCmd(f *kbsFlags) *cobra.Command {
	a := &kbsAuditFlags{}
	cmd := &cobra.Command{
		Use:   "audit [--since 1h|RFC3339] [--limit N]",
		Short: "Show the broker's audit log (newest events, oldest first)",
		Example: `  sealctl kbs audit --since 1h
  sealctl kbs audit --since 2026-01-02T15:04:05Z --limit 50 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var since time.Time
			if a.since != "" {
				if t, err := time.Parse(time.RFC3339Nano, a.since); err == nil {
					since = t
				} else if d, err := time.ParseDuration(a.since); err == nil && d >= 0 {
					since = time.Now().Add(-d)
				} else {
					return fmt.Errorf("--since %q: want a duration (1h) or an RFC 3339 time", a.since)
				}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			evs, err := c.Audit(cmd.Context(), since, a.limit)
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, evs, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tKIND\tWORKLOAD\tTEE\tRESULT\tREMOTE\tREASON")
				for _, e := range evs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Kind, e.Workload, e.TEE, e.Result, e.Remote, e.Reason)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&a.since, "since", "", "only events since this time (RFC 3339) or this long ago (e.g. 1h)")
	cmd.Flags().IntVar(&a.limit, "limit", 0, "at most this many events (default: the broker's default, 1000)")
	return cmd
}

func newKBSHistoryCmd(f *kbsFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "history",
		Short:   "Show the signed, hash-chained history of workload changes",
		Example: `  sealctl kbs history -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			hs, err := c.History(cmd.Context())
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, hs, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tOP\tWORKLOAD\tACTOR\tHASH")
				for _, e := range hs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Op, e.WorkloadID, e.Actor, short(e.Hash))
				}
				return tw.Flush()
			})
		},
	}
}

type kbsCAFlags struct {
	pem bool
}

func newKBSCACmd(f *kbsFlags) *cobra.Command {
	a := &kbsCAFlags{}
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show the workload (mesh) CA; --pem prints the root certificate",
		Example: `  sealctl kbs ca
  sealctl kbs ca --pem > mesh-root.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			info, err := c.CA(cmd.Context())
			if err != nil {
				return err
			}
			if a.pem {
				_, err := io.WriteString(cmd.OutOrStdout(), info.RootPEM)
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, info, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "Root:\t%s\n", info.RootSubject)
				fmt.Fprintf(tw, "Root SHA-256:\t%s\n", info.RootSHA256)
				fmt.Fprintf(tw, "Root expires:\t%s\n", info.RootNotAfter.Format(time.RFC3339))
				fmt.Fprintf(tw, "Intermediate:\t%s\n", info.IntermediateSubject)
				fmt.Fprintf(tw, "Intermediate expires:\t%s\n", info.IntermediateExpiry.Format(time.RFC3339))
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&a.pem, "pem", false, "print the root certificate (PEM) only")
	return cmd
}

func newKBSStatusCmd(f *kbsFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show the broker's state: workloads, history head and its verification",
		Example: `  sealctl kbs status -o yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			return printObject(cmd.OutOrStdout(), f.output, st, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "Broker:\t%s\n", c.URL())
				fmt.Fprintf(tw, "Identity:\t%s\n", st.Identity)
				fmt.Fprintf(tw, "Workloads:\t%d\n", st.Workloads)
				fmt.Fprintf(tw, "History head:\t%d %s\n", st.Head.Seq, st.Head.Hash)
				valid := "verified"
				if !st.HistoryValid {
					valid = "INVALID: " + st.HistoryError
				}
				fmt.Fprintf(tw, "History:\t%s\n", valid)
				fmt.Fprintf(tw, "Mesh root SHA-256:\t%s\n", st.MeshRootSHA)
				if a := st.AuditAnchor; a != nil && a.Seq > 0 {
					fmt.Fprintf(tw, "Audit exported:\t%d events in %d segments, chain ends at %s\n", a.Events, a.Seq, a.Hash)
				}
				return tw.Flush()
			})
		},
	}
}
