package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sealpod/sealpod/internal/atomicfile"
	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// Defaults for Options (host paths, before HostRoot is prepended).
const (
	DefaultConfigPath = "/etc/containerd/config.toml"
	DefaultShimDir    = "/usr/local/bin"
	// BackupSuffix: the original config is kept at ConfigPath+BackupSuffix.
	BackupSuffix = ".sealpod-backup"
	// AbsentSuffix: a marker at BackupPath+AbsentSuffix records that there was no config file.
	AbsentSuffix = ".absent"
	// PendingSuffix: a marker at BackupPath+PendingSuffix records a config change containerd has
	// not been restarted for yet (the restart failed); the next run restarts it.
	PendingSuffix = ".restart-pending"
)

// Options for Install and Uninstall. Paths are host paths; HostRoot is prepended to each, so
// the DaemonSet (host / mounted at /host) and a direct run on the host (HostRoot "/") share them.
type Options struct {
	// HostRoot is where the host's root filesystem is visible; default "/".
	HostRoot string
	// ConfigPath is containerd's config file; default DefaultConfigPath.
	ConfigPath string
	// BackupPath holds the original config; default ConfigPath + BackupSuffix.
	BackupPath string
	// ShimSource is the shim binary to copy (a path in the installer's own filesystem, NOT
	// under HostRoot). Empty: Install copies no shim (Uninstall still removes an installed one
	// when RemoveShim is set).
	ShimSource string
	// ShimDir is the host directory on containerd's PATH; default DefaultShimDir.
	ShimDir string
	// RemoveShim makes Uninstall delete ShimDir/ShimBinaryName and the shim's node config
	// (with the sim key beside it). Default false in the struct; the CLI sets it.
	RemoveShim bool
	// ShimConfig, when set, makes Install write the shim's node configuration
	// (/etc/sealpod/shim.json: TEE, sim key, QEMU); nil: leave it alone.
	ShimConfig *ShimNodeConfig
	// ShimConfigFile is the host path Uninstall removes (RemoveShim); default
	// ShimConfig.Path or /etc/sealpod/shim.json.
	ShimConfigFile string
	// Runtime is what goes into containerd's config.
	Runtime RuntimeOptions
	// Restarter restarts containerd after the config changed; nil: no restart (the caller
	// restarts, e.g. a test that starts containerd itself).
	Restarter Restarter
	// TEEs are the TEEs the node offers, in order of preference; each gets its node label
	// TEELabel(t) when Labeler is set (and, with Readiness, only when its check passes).
	TEEs []TEE
	// Labeler labels the node; nil: no label.
	Labeler NodeLabeler
	// Readiness, when set, makes Install run the readiness check (Check) once per TEE of TEEs
	// before labelling: only the TEEs whose node-scope items pass are labelled (the labels of
	// the others are removed); when none passes Install returns the NotReadyErrors joined.
	// Zero fields default to Install's own (host root, containerd config, shim dir, node
	// config, handler); its TEE field must be empty.
	Readiness *CheckOptions
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Result says what Install or Uninstall changed. A second Install reports no change.
type Result struct {
	ConfigPath    string // as seen by the installer (HostRoot joined)
	BackupPath    string
	ShimPath      string
	ConfigChanged bool
	BackupWritten bool
	ShimChanged   bool
	// ShimConfigChanged: the shim's node config (or the sim key) was written or removed.
	ShimConfigChanged bool
	Restarted         bool
	// Labeled: Install labelled the node for at least one TEE (LabeledTEEs); Uninstall removed
	// the node's TEE labels.
	Labeled bool
	// LabeledTEEs are the TEEs the node is labelled for: those of Options.TEEs that are ready.
	LabeledTEEs []TEE
	// Restored: Uninstall put back the original bytes from the backup (false: it only removed
	// the managed block, because the config was edited after Install, or there was no backup).
	Restored bool
	// Checks are the readiness reports, one per TEE of Options.TEEs (Options.Readiness set).
	Checks []*CheckReport
}

type resolved struct {
	Options
	config, backup, absent, pending, shim, shimConfig string
	log                                               *slog.Logger
}

func (o Options) resolve() (resolved, error) {
	r := resolved{Options: o}
	if r.HostRoot == "" {
		r.HostRoot = "/"
	}
	if r.ConfigPath == "" {
		r.ConfigPath = DefaultConfigPath
	}
	if r.BackupPath == "" {
		r.BackupPath = r.ConfigPath + BackupSuffix
	}
	if r.ShimDir == "" {
		r.ShimDir = DefaultShimDir
	}
	for name, p := range map[string]string{"config path": r.ConfigPath, "backup path": r.BackupPath, "shim dir": r.ShimDir} {
		if !filepath.IsAbs(p) {
			return r, fmt.Errorf("installer options: %s %q is not absolute", name, p)
		}
	}
	r.config = filepath.Join(r.HostRoot, r.ConfigPath)
	r.backup = filepath.Join(r.HostRoot, r.BackupPath)
	r.absent = r.backup + AbsentSuffix
	r.pending = r.backup + PendingSuffix
	r.shim = filepath.Join(r.HostRoot, r.ShimDir, ShimBinaryName)
	if r.ShimConfigFile == "" && r.ShimConfig != nil {
		r.ShimConfigFile = r.ShimConfig.Path
	}
	if r.ShimConfigFile == "" {
		r.ShimConfigFile = shimconfig.DefaultPath
	}
	if !filepath.IsAbs(r.ShimConfigFile) {
		return r, fmt.Errorf("installer options: shim config file %q is not absolute", r.ShimConfigFile)
	}
	r.shimConfig = filepath.Join(r.HostRoot, r.ShimConfigFile)
	r.log = r.Logger
	if r.log == nil {
		r.log = slog.Default()
	}
	return r, nil
}

// readOptional reads a file; a missing file is (nil, false, nil).
func readOptional(path string) ([]byte, fs.FileMode, bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, false, err
	}
	return b, st.Mode().Perm(), true, nil
}

// Install adds the Sealpod runtime handler to containerd's config (keeping a backup of the
// original), copies the shim, restarts containerd when the config changed, and labels the
// node. It is idempotent: a second run changes nothing and does not restart containerd.
func Install(ctx context.Context, opts Options) (Result, error) {
	r, err := opts.resolve()
	if err != nil {
		return Result{}, err
	}
	res := Result{ConfigPath: r.config, BackupPath: r.backup, ShimPath: r.shim}

	if st, err := os.Lstat(r.config); err == nil && st.Mode()&fs.ModeSymlink != 0 {
		return res, fmt.Errorf("install: containerd config %s is a symlink: give its target with --containerd-config (a rename would replace the link)", r.config)
	}
	cur, mode, exists, err := readOptional(r.config)
	if err != nil {
		return res, fmt.Errorf("install: read containerd config %s: %w", r.config, err)
	}
	if mode == 0 {
		mode = 0o644
	}
	want, err := AddRuntime(cur, r.Runtime)
	if err != nil {
		return res, fmt.Errorf("install: containerd config %s: %w", r.config, err)
	}
	// Validate everything before writing anything.
	shimCfg, err := prepareShimConfig(r)
	if err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	if r.ShimSource != "" {
		if st, err := os.Stat(r.ShimSource); err != nil || !st.Mode().IsRegular() {
			return res, fmt.Errorf("install: shim %s: not a regular file (%v)", r.ShimSource, err)
		}
	}

	// 1. The shim first, so containerd never knows a handler whose binary is missing.
	if r.ShimSource != "" {
		changed, err := copyShim(r.ShimSource, r.shim)
		if err != nil {
			return res, fmt.Errorf("install: %w", err)
		}
		res.ShimChanged = changed
		if changed {
			r.log.Info("installed shim", "path", r.shim, "from", r.ShimSource)
		}
	}

	// The shim's node config before containerd can start the shim.
	changed, err := writeShimConfig(r, shimCfg)
	if err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	res.ShimConfigChanged = changed
	if changed {
		r.log.Info("wrote shim node config", "path", r.shimConfig, "tees", r.TEEs)
	}

	// 2. The config, with a backup of the original.
	if !bytes.Equal(cur, want) {
		_, _, managed, err := findBlock(cur)
		if err != nil {
			return res, fmt.Errorf("install: containerd config %s: %w", r.config, err)
		}
		_, _, haveBackup, err := readOptional(r.backup)
		if err != nil {
			return res, fmt.Errorf("install: read backup %s: %w", r.backup, err)
		}
		_, _, haveAbsent, err := readOptional(r.absent)
		if err != nil {
			return res, fmt.Errorf("install: read backup marker %s: %w", r.absent, err)
		}
		// A config without our block is the original: back it up (replacing a stale backup
		// from an earlier install whose config was since replaced, e.g. by a package upgrade).
		switch {
		case !managed:
			if err := writeBackup(r, cur, mode, exists); err != nil {
				return res, err
			}
			res.BackupWritten = true
		case !haveBackup && !haveAbsent:
			// Never back up a config holding our own block as "the original".
			r.log.Warn("containerd config has a sealpod block but no backup: uninstall will remove the block only", "path", r.config, "backup", r.backup)
		}
		if err := os.MkdirAll(filepath.Dir(r.config), 0o755); err != nil {
			return res, fmt.Errorf("install: create %s: %w", filepath.Dir(r.config), err)
		}
		if err := markPending(r); err != nil {
			return res, fmt.Errorf("install: %w", err)
		}
		if err := atomicfile.Write(r.config, want, mode); err != nil {
			return res, fmt.Errorf("install: containerd config: %w", err)
		}
		res.ConfigChanged = true
		r.log.Info("added runtime handler to containerd config", "path", r.config, "handler", handlerOf(r.Runtime), "backup", r.backup)
	}

	// 3. Restart containerd only when its config changed (now or in a run whose restart failed).
	if err := restartIfNeeded(ctx, r, &res); err != nil {
		return res, fmt.Errorf("install: %w", err)
	}

	// 4. The readiness check, per TEE: only the TEEs whose pods can run here are labelled.
	ready := r.TEEs
	var notReady error
	if r.Readiness != nil {
		ready, res.Checks, notReady, err = checkBeforeLabel(ctx, r)
		if err != nil {
			return res, fmt.Errorf("install: %w", err)
		}
	}

	// 5. The labels last: the scheduler sends pods only once the handler works.
	if r.Labeler != nil && len(r.TEEs) > 0 {
		if err := r.Labeler.SetTEELabels(ctx, ready); err != nil {
			if notReady != nil {
				return res, fmt.Errorf("install: %w; and removing the labels: %v", notReady, err)
			}
			return res, fmt.Errorf("install: %w", err)
		}
		res.Labeled, res.LabeledTEEs = len(ready) > 0, ready
		r.log.Info("labelled node", "labels", TEELabelPrefix+"<tee>=true", "tees", ready)
	}
	if notReady != nil {
		return res, fmt.Errorf("install: %w", notReady)
	}
	return res, nil
}

// checkBeforeLabel runs the readiness check with Install's paths for each of the node's TEEs.
// It returns the TEEs that are ready, the reports, and, when none is, the TEEs' NotReadyErrors
// joined (err is for bad options).
func checkBeforeLabel(ctx context.Context, r resolved) (ready []TEE, reps []*CheckReport, notReady, err error) {
	co := *r.Readiness
	if co.TEE != "" {
		return nil, nil, nil, fmt.Errorf("readiness check: TEE %s set: Install checks each of its TEEs %q", co.TEE, r.TEEs)
	}
	if co.HostRoot == "" {
		co.HostRoot = r.HostRoot
	}
	if co.ContainerdConfig == "" {
		co.ContainerdConfig = r.ConfigPath
	}
	if co.ShimDir == "" {
		co.ShimDir = r.ShimDir
	}
	if co.ShimConfigPath == "" {
		co.ShimConfigPath = r.ShimConfigFile
	}
	if co.Handler == "" {
		co.Handler = handlerOf(r.Runtime)
	}
	if len(r.TEEs) == 0 {
		return nil, nil, nil, errors.New("readiness check: no TEE to check (Options.TEEs is empty)")
	}
	var fails []error
	for _, t := range r.TEEs {
		co.TEE = t
		rep, err := Check(ctx, co)
		if err != nil {
			return nil, reps, nil, fmt.Errorf("readiness check for TEE %s: %w", t, err)
		}
		reps = append(reps, rep)
		for _, it := range rep.Items {
			switch {
			case it.Status != CheckFail:
			case it.Scope == ScopeCluster:
				r.log.Warn("readiness: cluster item failed (does not hold back the node label)", "tee", string(t), "item", it.Name, "detail", it.Detail, "fix", it.Fix)
			default:
				r.log.Error("readiness: node not ready", "tee", string(t), "item", it.Name, "detail", it.Detail, "fix", it.Fix)
			}
		}
		if e := rep.Err(ScopeNode); e != nil {
			fails = append(fails, e)
			r.log.Warn("node not ready for TEE: not labelled for it", "tee", string(t), "label", TEELabel(t))
			continue
		}
		ready = append(ready, t)
	}
	if len(ready) == 0 {
		return nil, reps, errors.Join(fails...), nil
	}
	return ready, reps, nil, nil
}

// markPending records that containerd must be restarted (only when the installer restarts it).
func markPending(r resolved) error {
	if r.Restarter == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(r.pending), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(r.pending), err)
	}
	return atomicfile.Write(r.pending, nil, 0o644)
}

// restartIfNeeded restarts containerd when the config changed in this run or a restart is still
// pending from an earlier run, then clears the marker.
func restartIfNeeded(ctx context.Context, r resolved, res *Result) error {
	if r.Restarter == nil {
		return nil
	}
	_, _, pending, err := readOptional(r.pending)
	if err != nil {
		return fmt.Errorf("read %s: %w", r.pending, err)
	}
	if !res.ConfigChanged && !pending {
		return nil
	}
	if err := r.Restarter.Restart(ctx); err != nil {
		return fmt.Errorf("%w (will retry on the next run)", err)
	}
	res.Restarted = true
	r.log.Info("restarted containerd", "pending_from_earlier_run", pending && !res.ConfigChanged)
	if err := os.Remove(r.pending); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", r.pending, err)
	}
	return nil
}

func writeBackup(r resolved, cur []byte, mode fs.FileMode, exists bool) error {
	if err := os.MkdirAll(filepath.Dir(r.backup), 0o755); err != nil {
		return fmt.Errorf("install: create %s: %w", filepath.Dir(r.backup), err)
	}
	if exists {
		if err := atomicfile.Write(r.backup, cur, mode); err != nil {
			return fmt.Errorf("install: backup: %w", err)
		}
		if err := os.Remove(r.absent); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("install: remove stale marker %s: %w", r.absent, err)
		}
		return nil
	}
	if err := atomicfile.Write(r.absent, nil, 0o644); err != nil {
		return fmt.Errorf("install: backup marker: %w", err)
	}
	if err := os.Remove(r.backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("install: remove stale backup %s: %w", r.backup, err)
	}
	return nil
}

func handlerOf(o RuntimeOptions) string {
	if o.Handler == "" {
		return HandlerName
	}
	return o.Handler
}

// copyShim writes src to dst (0755, atomically) unless dst already has the same bytes.
func copyShim(src, dst string) (bool, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("read shim %s: %w", src, err)
	}
	if len(data) == 0 {
		return false, fmt.Errorf("read shim %s: empty file", src)
	}
	old, mode, exists, err := readOptional(dst)
	if err != nil {
		return false, fmt.Errorf("read installed shim %s: %w", dst, err)
	}
	if exists && bytes.Equal(old, data) && mode == 0o755 {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", filepath.Dir(dst), err)
	}
	if err := atomicfile.Write(dst, data, 0o755); err != nil {
		return false, fmt.Errorf("install shim: %w", err)
	}
	return true, nil
}

// Uninstall undoes Install: it removes the node label, puts containerd's config back (the
// original bytes from the backup when the config was not edited since Install; otherwise it
// removes only the managed block), restarts containerd when the config changed, removes the
// shim (RemoveShim) and the backup. Running Uninstall on a node without Sealpod changes nothing.
func Uninstall(ctx context.Context, opts Options) (Result, error) {
	r, err := opts.resolve()
	if err != nil {
		return Result{}, err
	}
	res := Result{ConfigPath: r.config, BackupPath: r.backup, ShimPath: r.shim}

	if r.Labeler != nil {
		if err := r.Labeler.SetTEELabels(ctx, nil); err != nil {
			return res, fmt.Errorf("uninstall: %w", err)
		}
		res.Labeled = true
	}

	cur, mode, exists, err := readOptional(r.config)
	if err != nil {
		return res, fmt.Errorf("uninstall: read containerd config %s: %w", r.config, err)
	}
	orig, origMode, haveBackup, err := readOptional(r.backup)
	if err != nil {
		return res, fmt.Errorf("uninstall: read backup %s: %w", r.backup, err)
	}
	_, _, haveAbsent, err := readOptional(r.absent)
	if err != nil {
		return res, fmt.Errorf("uninstall: read backup marker %s: %w", r.absent, err)
	}
	stripped, err := RemoveRuntime(cur)
	if err != nil {
		return res, fmt.Errorf("uninstall: containerd config %s: %w", r.config, err)
	}
	if exists && !bytes.Equal(stripped, cur) || (exists && haveAbsent) {
		if err := markPending(r); err != nil {
			return res, fmt.Errorf("uninstall: %w", err)
		}
	}
	switch {
	case exists && haveAbsent && len(stripped) == 0:
		// There was no config before Install and nothing was added since: remove the file.
		if err := os.Remove(r.config); err != nil {
			return res, fmt.Errorf("uninstall: remove %s: %w", r.config, err)
		}
		res.ConfigChanged, res.Restored = true, true
	case exists && haveBackup && (bytes.Equal(stripped, orig) || bytes.Equal(stripped, append(orig, '\n'))):
		// Unchanged since Install: restore the original bytes and mode exactly.
		if !bytes.Equal(cur, orig) || mode != origMode {
			if err := atomicfile.Write(r.config, orig, origMode); err != nil {
				return res, fmt.Errorf("uninstall: restore containerd config: %w", err)
			}
			res.ConfigChanged = true
		}
		res.Restored = true
	case exists && !bytes.Equal(stripped, cur):
		if haveBackup || haveAbsent {
			r.log.Warn("containerd config was edited after install: removing only the sealpod block, not restoring the backup", "path", r.config, "backup", r.backup)
		}
		if err := atomicfile.Write(r.config, stripped, mode); err != nil {
			return res, fmt.Errorf("uninstall: containerd config: %w", err)
		}
		res.ConfigChanged = true
	}
	if res.ConfigChanged {
		r.log.Info("removed runtime handler from containerd config", "path", r.config, "restored", res.Restored)
	}

	if err := restartIfNeeded(ctx, r, &res); err != nil {
		return res, fmt.Errorf("uninstall: %w", err)
	}

	for _, p := range []string{r.backup, r.absent, r.pending} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("uninstall: remove %s: %w", p, err)
		}
	}
	if r.RemoveShim {
		changed, err := removeShimConfig(r)
		if err != nil {
			return res, fmt.Errorf("uninstall: %w", err)
		}
		res.ShimConfigChanged = changed
		switch err := os.Remove(r.shim); {
		case err == nil:
			res.ShimChanged = true
			r.log.Info("removed shim", "path", r.shim)
		case !errors.Is(err, fs.ErrNotExist):
			return res, fmt.Errorf("uninstall: remove shim %s: %w", r.shim, err)
		}
	}
	return res, nil
}
