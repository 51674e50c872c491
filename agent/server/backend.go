package server

import (
	"context"
	"io"
	"syscall"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Backend runs the containers of the pod (agent/containers in the agent; the server only
// sees this interface).
type Backend interface {
	// StartPod prepares the pod of an opened sealed spec (volumes, sealed files, the TLS
	// mount, pause process). It is called once, after a successful Unseal.
	StartPod(ctx context.Context, s *spec.Spec, o PodOptions) (Pod, error)
}

// PodOptions are what the agent adds to the sealed spec.
type PodOptions struct {
	// TLSDir holds cert.pem, key.pem and ca.pem (mounted at the sealed identity.tlsDir).
	TLSDir string
	// HostValues are the validated downward-API values from the host.
	HostValues map[string]string
}

// HostFile is one file of a host-provided volume (UpdateHostFiles): untrusted data.
type HostFile struct {
	Path string
	Mode uint32
	Data []byte
}

// Pod holds the pod's containers.
type Pod interface {
	// Create pulls the image of the sealed container name and creates it (not started).
	// hostEnv is the placeholder container's environment from the host (untrusted, checked
	// by syntax): host-provided Secret/ConfigMap keys are read from it.
	Create(ctx context.Context, name string, hostEnv map[string]string) (Container, error)
	// UpdateHostFiles replaces the content of a host-provided volume (untrusted files).
	UpdateHostFiles(ctx context.Context, volume string, files []HostFile) error
	// Delete kills, waits for and removes a created container.
	Delete(ctx context.Context, name string) error
	// AttachVolume makes an opened encrypted volume available to the containers created
	// after it (AttachVolume calls it once per volume, before any container uses it).
	AttachVolume(ctx context.Context, name string, v AttachedVolume) error
	// Close kills and removes everything.
	Close(ctx context.Context) error
}

// Process is a container's main process or an exec.
type Process interface {
	// Wait blocks until the process exits and returns its exit status (128+signal if killed).
	Wait(ctx context.Context) (int, error)
	Signal(sig syscall.Signal) error
	// Stdout, Stderr (nil with a tty: the terminal is on Stdout) and Stdin (nil without
	// stdin).
	Stdout() io.Reader
	Stderr() io.Reader
	Stdin() io.WriteCloser
}

// Container is a created container.
type Container interface {
	Process
	// TTY and OpenStdin report the sealed stdio flags.
	TTY() bool
	OpenStdin() bool
	Start() error
	Exec(ctx context.Context, id string, argv []string, tty, stdin bool) (Process, error)
	Stats(ctx context.Context) (*Stats, error)
}

// Stats are a container's resource usage.
type Stats struct {
	CPUUsageNS, MemoryUsageBytes, MemoryLimitBytes, Pids uint64
}
