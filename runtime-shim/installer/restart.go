package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Restarter restarts containerd so that it reads the new config.
type Restarter interface {
	Restart(ctx context.Context) error
}

// CommandRestarter runs a command (argv, no shell) to restart containerd.
type CommandRestarter struct {
	Argv []string
}

// Restart runs the command; its output is part of the error on failure.
func (c CommandRestarter) Restart(ctx context.Context) error {
	if len(c.Argv) == 0 {
		return errors.New("restart containerd: empty command")
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("restart containerd: %s: %w: %s", strings.Join(c.Argv, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// ErrNoRestartMethod: no systemd on the host and no restart command given.
var ErrNoRestartMethod = errors.New("no way to restart containerd: host has no systemd; give --restart-cmd or --no-restart")

// SystemdRestarter returns the restarter for a host running systemd. With hostRoot "/" it runs
// `systemctl restart containerd`; otherwise (in the DaemonSet, hostPID) it enters the mount
// namespace of the host's PID 1 with `nsenter --target 1 --mount`, so systemctl is the host's.
func SystemdRestarter(hostRoot, unit string) (Restarter, error) {
	if hostRoot == "" {
		hostRoot = "/"
	}
	if unit == "" {
		unit = "containerd"
	}
	if _, err := os.Stat(filepath.Join(hostRoot, "run/systemd/system")); err != nil {
		return nil, fmt.Errorf("%w (no %s)", ErrNoRestartMethod, filepath.Join(hostRoot, "run/systemd/system"))
	}
	if filepath.Clean(hostRoot) == "/" {
		return CommandRestarter{Argv: []string{"systemctl", "restart", unit}}, nil
	}
	return CommandRestarter{Argv: []string{"nsenter", "--target", "1", "--mount", "--", "systemctl", "restart", unit}}, nil
}
