package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sealpod/sealpod/runtime-shim/internal/qemuhelp"
)

// The hardware boundary: what a VM needs from the host beyond its command line. CheckHost
// runs before QEMU does, so a node that lacks KVM or a QEMU with the TEE's object gets an
// error naming the missing piece, not QEMU's exit status.

// ErrHostLacks is wrapped by the error of a start on a host that lacks what the VM needs.
var ErrHostLacks = errors.New("the host lacks what the VM needs")

// HostLacksError lists what the host lacks for a VM of a TEE.
type HostLacksError struct {
	TEE     TEE
	Missing []string // one entry per missing piece, each naming it
}

func (e *HostLacksError) Error() string {
	return fmt.Sprintf("%s VM cannot start on this host: %s (run `sealpod-node-installer check --tee %s`)", e.TEE, strings.Join(e.Missing, "; "), e.TEE)
}

// Unwrap makes errors.Is(err, ErrHostLacks) hold.
func (e *HostLacksError) Unwrap() error { return ErrHostLacks }

// DevKVM is the KVM device accel kvm needs.
const DevKVM = "/dev/kvm"

// TEEObject returns the -object type t's VM needs from QEMU and the first QEMU release that
// has it ("" for the emulated TEEs, which need none).
func TEEObject(t TEE) (object, since string) {
	switch t {
	case TEESNP:
		return "sev-snp-guest", "9.1"
	case TEETDX:
		return "tdx-guest", "10.1"
	case TEEPEF:
		return "pef-guest", "6.0"
	}
	return "", ""
}

// HostOptions say where CheckHost looks; zero values are the real host.
type HostOptions struct {
	// DevKVM is the KVM device (default DevKVM).
	DevKVM string
	// Objects lists the -object types of a QEMU binary (default QEMUObjects, cached per
	// binary).
	Objects func(binary string) ([]string, error)
}

// CheckHost reports, as a *HostLacksError naming each missing piece, whether this host lacks
// what cfg's VM needs: /dev/kvm for accel kvm (every hardware TEE), and the TEE's -object
// type in QEMU's `-object help`. A configuration error is returned as Command returns it.
func CheckHost(cfg Config, o HostOptions) error {
	cmd, err := cfg.Command()
	if err != nil {
		return err
	}
	if o.DevKVM == "" {
		o.DevKVM = DevKVM
	}
	if o.Objects == nil {
		o.Objects = cachedObjects
	}
	var missing []string
	if usesKVM(cmd.Args) {
		if err := checkKVMDevice(o.DevKVM); err != nil {
			missing = append(missing, fmt.Sprintf("no usable %s (%v): accel kvm needs KVM", o.DevKVM, err))
		}
	}
	if obj, since := TEEObject(cfg.TEE); obj != "" {
		objs, err := o.Objects(cmd.Path)
		switch {
		case err != nil:
			missing = append(missing, fmt.Sprintf("QEMU %s did not list its objects (%v): object %s needed", cmd.Path, err, obj))
		case !slices.Contains(objs, obj):
			missing = append(missing, fmt.Sprintf("QEMU %s lacks object %s (its -object help does not list it; QEMU >= %s has it)", cmd.Path, obj, since))
		}
	}
	if len(missing) > 0 {
		return &HostLacksError{TEE: cfg.TEE, Missing: missing}
	}
	return nil
}

// usesKVM reports whether a built command line runs under KVM.
func usesKVM(args []string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-machine" && strings.Contains(","+args[i+1]+",", ",accel=kvm,") {
			return true
		}
	}
	return false
}

// checkKVMDevice checks that path is a character device the shim can open read-write.
func checkKVMDevice(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("not a character device (%s)", st.Mode().Type())
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// ParseObjectHelp lists the object types of `qemu-system-* -object help` output.
func ParseObjectHelp(out []byte) []string { return qemuhelp.Objects(out) }

// QEMUObjects runs `binary -object help` (bounded in time and output) and lists the types.
func QEMUObjects(binary string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "-object", "help")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &capWriter{mu: &sync.Mutex{}, w: &out, limit: 1 << 20}, nil
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -object help: %w", binary, err)
	}
	return ParseObjectHelp(out.Bytes()), nil
}

// objectsCache keeps QEMUObjects per binary, keyed by its size and mtime: a pod start does
// not run QEMU twice, and a QEMU upgraded in place is asked again.
var objectsCache struct {
	sync.Mutex
	m map[string]cachedList
}

type cachedList struct {
	size  int64
	mtime time.Time
	objs  []string
}

func cachedObjects(binary string) ([]string, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	objectsCache.Lock()
	defer objectsCache.Unlock()
	if c, ok := objectsCache.m[path]; ok && c.size == st.Size() && c.mtime.Equal(st.ModTime()) {
		return c.objs, nil
	}
	objs, err := QEMUObjects(path)
	if err != nil {
		return nil, err
	}
	if objectsCache.m == nil {
		objectsCache.m = map[string]cachedList{}
	}
	objectsCache.m[path] = cachedList{size: st.Size(), mtime: st.ModTime(), objs: objs}
	return objs, nil
}
