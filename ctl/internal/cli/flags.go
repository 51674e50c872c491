package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Flags shared by the commands, kubectl-style: -o/--output is always an output format (never
// a file or a directory), and a command run without several required flags names them all.

// formatFlag is the value of an -o/--output flag: one of a fixed list of formats, checked when
// the flags are parsed, so that a bad value stops the command before it does anything.
type formatFlag struct {
	value   *string
	formats []string
	hint    string // where files go instead, for values that look like an old-style path
}

func (f *formatFlag) String() string { return *f.value }
func (f *formatFlag) Type() string   { return "format" }

func (f *formatFlag) Set(s string) error {
	if slices.Contains(f.formats, s) {
		*f.value = s
		return nil
	}
	msg := "unknown output format; want " + orList(f.formats)
	if f.hint != "" {
		msg += " (" + f.hint + ")"
	}
	return errors.New(msg)
}

// addOutputFlag adds -o/--output to fs (a command's flags or its persistent flags) taking one
// of formats; the first is the default.
func addOutputFlag(cmd *cobra.Command, fs *pflag.FlagSet, p *string, hint string, formats ...string) {
	*p = formats[0]
	fs.VarP(&formatFlag{value: p, formats: formats, hint: hint}, "output", "o", "output format: "+orList(formats))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

// orList joins ["a", "b", "c"] as "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// MissingFlagsError names every required flag a command was run without. The commands check
// all their requirements before reporting any, so one run lists everything that is missing.
// (cobra's MarkFlagRequired does that for plain flags, but sealctl's requirements are often
// "this flag or that one", or filled in from a config file, which it cannot express.)
type MissingFlagsError struct {
	Flags []string // as the user would type them, with alternatives: "--kbs-ca (or --kbs-ca-sha256)"
}

func (e *MissingFlagsError) Error() string {
	if len(e.Flags) == 1 {
		return "missing required flag: " + e.Flags[0]
	}
	return "missing required flags: " + strings.Join(e.Flags, ", ")
}

// requiredFlags collects the requirements a command's flags do not meet.
type requiredFlags struct{ missing []string }

// need records flag as missing unless ok.
func (r *requiredFlags) need(ok bool, flag string) {
	if !ok {
		r.missing = append(r.missing, flag)
	}
}

// err is nil when nothing is missing, else a *MissingFlagsError listing everything.
func (r *requiredFlags) err() error {
	if len(r.missing) == 0 {
		return nil
	}
	return &MissingFlagsError{Flags: r.missing}
}

// checkOutputPath refuses, before any work is done, a file flag (--output-file, --keys) that
// could not be written at the end: its directory must exist and take a new file, and the path
// must not be a directory. "" and "-" (standard output) pass.
func checkOutputPath(flag, path string) error {
	if path == "" || path == "-" {
		return nil
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("%s %s: is a directory", flag, path)
	}
	probe, err := os.CreateTemp(filepath.Dir(path), ".sealctl-probe-*")
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}
