package shim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	shimv2 "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/sirupsen/logrus"

	"github.com/sealpod/sealpod/runtime-shim/config"
)

// RuntimeName is the containerd runtime type of the shim (binary containerd-shim-sealpod-v2).
const RuntimeName = "io.containerd.sealpod.v2"

// Manager starts one shim process per pod (grouping by the CRI sandbox id) and cleans up
// after a dead one.
type Manager struct{}

// Name is the runtime name.
func (Manager) Name() string { return RuntimeName }

// Start is `containerd-shim-sealpod-v2 start`: it returns the socket of the pod's shim,
// starting that shim if this is the pod's first task. The working directory is the bundle.
func (Manager) Start(ctx context.Context, id string, opts shimv2.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	grouping := id
	if sp, err := readSpec(cwd); err == nil {
		if g := sp.Annotations[AnnotationSandboxID]; g != "" {
			grouping = g
		}
	}
	address, err := shimv2.SocketAddress(ctx, opts.Address, grouping)
	if err != nil {
		return "", err
	}
	socket, err := shimv2.NewSocket(address)
	if err != nil {
		if !shimv2.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket %s: %w", address, err)
		}
		// The pod's shim is already running: this task joins it.
		if shimv2.CanConnect(address) {
			if err := shimv2.WriteAddress("address", address); err != nil {
				return "", fmt.Errorf("write address of the running shim: %w", err)
			}
			return address, nil
		}
		if err := shimv2.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove stale shim socket %s: %w", address, err)
		}
		if socket, err = shimv2.NewSocket(address); err != nil {
			return "", fmt.Errorf("create shim socket %s: %w", address, err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = shimv2.RemoveSocket(address)
		}
	}()
	if err := shimv2.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start shim: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return address, nil
}

// Stop is `containerd-shim-sealpod-v2 delete`: containerd cleans up after a shim that died.
// It unmounts the task's rootfs and, for a sandbox, kills a QEMU the dead shim left behind.
func (Manager) Stop(ctx context.Context, id string) (shimv2.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shimv2.StopStatus{}, err
	}
	bundleDir := filepath.Join(filepath.Dir(cwd), id)
	_ = mount.UnmountAll(filepath.Join(bundleDir, "rootfs"), 0)
	cfgPath := config.Path()
	if b, err := os.ReadFile(filepath.Join(bundleDir, ConfigPathFile)); err == nil {
		cfgPath = string(b)
	}
	if cfg, err := config.Load(cfgPath); err == nil {
		dir := filepath.Join(cfg.StateDir, id)
		killStale(dir)
		_ = os.RemoveAll(dir)
	}
	return shimv2.StopStatus{Pid: 0, ExitStatus: 128 + int(syscall.SIGKILL), ExitedAt: time.Now()}, nil
}

// Register registers the task service as the shim's TTRPC plugin; call before shimv2.RunManager.
func Register() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			// The shim library points logrus at containerd's log FIFO; slog writes there too.
			var out io.Writer = logrus.StandardLogger().Out
			log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo})).With("shim", RuntimeName, "pid", os.Getpid())
			return NewService(ic.Context, pp.(shimv2.Publisher), ss.(shutdown.Service), log), nil
		},
	})
}

// Run is the shim binary's main.
func Run() {
	Register()
	shimv2.RunManager(context.Background(), Manager{})
}
