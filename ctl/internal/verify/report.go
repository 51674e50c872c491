package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sealpod/sealpod/internal/atomicfile"
)

// Files written by WriteFiles in the output directory.
const (
	FileMeshRoot   = "mesh-root.pem"
	FileReportText = "report.txt"
	FileReportJSON = "report.json"
)

// WriteFiles writes report.txt and report.json into dir (created 0755 if needed) and, only
// for a passing report, mesh-root.pem. After a failing run a mesh-root.pem left by an earlier
// run is removed, so that clients never pick up a root from a broker that did not verify.
func WriteFiles(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("output directory %s: %w", dir, err)
	}
	root := filepath.Join(dir, FileMeshRoot)
	if r.OK && len(r.MeshRootPEM) > 0 {
		if r.MeshRoot != nil {
			r.MeshRoot.File = root
		}
		if err := atomicfile.Write(root, r.MeshRootPEM, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", root, err)
		}
	} else if err := os.Remove(root); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", root, err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, FileReportJSON), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", FileReportJSON, err)
	}
	var txt strings.Builder
	if err := r.WriteText(&txt); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, FileReportText), []byte(txt.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", FileReportText, err)
	}
	return nil
}

// WriteText writes the readable report.
func (r *Report) WriteText(w io.Writer) error {
	verdict := "PASSED"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "Sealpod key broker verification: %s (%d failed, %d warnings, %d checks)\n\n", verdict, r.Failures, r.Warnings, len(r.Checks))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Broker:\t%s\n", r.KBS)
	fmt.Fprintf(tw, "Verified at:\t%s\n", r.Time.Format(time.RFC3339))
	fmt.Fprintf(tw, "TLS CA (pinned):\tsha256:%s\n", r.TLSCASHA256)
	switch {
	case r.SigningKey.SHA256 == "":
		fmt.Fprintf(tw, "Signing key:\t(no manifest)\n")
	case r.SigningKey.Pinned:
		fmt.Fprintf(tw, "Signing key:\t%s sha256:%s (pinned)\n", r.SigningKey.Algorithm, r.SigningKey.SHA256)
	case r.SigningKey.PinnedSHA256 != "":
		fmt.Fprintf(tw, "Signing key:\t%s sha256:%s is NOT the pinned key sha256:%s\n", r.SigningKey.Algorithm, r.SigningKey.SHA256, r.SigningKey.PinnedSHA256)
	default:
		fmt.Fprintf(tw, "Signing key:\t%s sha256:%s (NOT PINNED: trusted on first use from the manifest itself)\n", r.SigningKey.Algorithm, r.SigningKey.SHA256)
	}
	if !r.IssuedAt.IsZero() {
		fmt.Fprintf(tw, "Manifest issued:\t%s\n", r.IssuedAt.Format(time.RFC3339))
		fmt.Fprintf(tw, "History:\t%d entries, head #%d %s\n", r.HistoryEntries, r.Head.Seq, r.Head.Hash)
	}
	if r.MeshRoot != nil {
		where := "not written (verification failed)"
		if r.MeshRoot.File != "" {
			where = "written to " + r.MeshRoot.File
		}
		fmt.Fprintf(tw, "Mesh CA root:\tsha256:%s %s, until %s, %s\n", r.MeshRoot.SHA256, r.MeshRoot.Subject, r.MeshRoot.NotAfter.Format(time.RFC3339), where)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Workloads) > 0 {
		fmt.Fprintf(w, "\nWorkloads registered at the broker:\n")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tGEN\tTEES\tENVELOPE DIGEST\tEXPECTED\tSANS")
		for _, wl := range r.Workloads {
			exp := "no"
			if wl.Expected {
				exp = "yes"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\n", wl.ID, wl.Generation, strings.Join(wl.TEEs, ","), wl.EnvelopeDigest, exp, strings.Join(wl.SANs, ","))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nReference measurements at the broker:\n")
		for _, wl := range r.Workloads {
			tees := make([]string, 0, len(wl.Measurements))
			for t := range wl.Measurements {
				tees = append(tees, t)
			}
			sort.Strings(tees)
			for _, t := range tees {
				fmt.Fprintf(w, "  %s %s: %s\n", wl.ID, t, strings.Join(wl.Measurements[t], ", "))
			}
		}
	}
	fmt.Fprintf(w, "\nChecks:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range r.Checks {
		subj := c.Subject
		if subj == "" {
			subj = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", strings.ToUpper(c.Status), c.ID, subj, c.Message)
		if c.Status == StatusFail && (c.Want != "" || c.Got != "") {
			fmt.Fprintf(tw, "  \t\t\twant: %s\n  \t\t\tgot:  %s\n", c.Want, c.Got)
		}
	}
	return tw.Flush()
}
