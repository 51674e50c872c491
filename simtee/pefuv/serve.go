package pefuv

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/sealpod/sealpod/agent/simsp"
	"github.com/sealpod/sealpod/imagebuilder/pefseal"
	"github.com/sealpod/sealpod/internal/tee"
	"github.com/sealpod/sealpod/simtee/internal/spchan"
)

// Files are the files of a sim-pef launch as the node has them: the bundle's vmlinux and
// initrd, the workload's ESM cpio from the secure image (/sealpod/pef/<workload>.cpio) and the
// command line the VM boots with.
type Files struct {
	Kernel  string // vmlinux ELF
	ESMCpio string // svm-tools' cpio holding the blob
	Initrd  string // the guest's initrd
	Cmdline string
}

// Launch prepares a sim-pef boot: it writes the initrd the VM boots (the ESM cpio followed by
// the guest's initrd, as `svm-tool svm add` lays it out) to out and runs EnterSecureMode on
// exactly the kernel, that initrd and the command line. On any error (another host's blob, a
// changed kernel, initrd or command line, no blob) out is removed and the VM must not start.
// The shim and tests/guest both launch through it.
func (u *Ultravisor) Launch(f Files, out string) (*SVM, error) {
	kernel, err := os.ReadFile(f.Kernel)
	if err != nil {
		return nil, fmt.Errorf("sim-pef launch: kernel: %w", err)
	}
	cpio, err := os.ReadFile(f.ESMCpio)
	if err != nil {
		return nil, fmt.Errorf("sim-pef launch: ESM cpio: %w", err)
	}
	if _, _, err := pefseal.SplitInitrd(cpio); err != nil {
		return nil, fmt.Errorf("sim-pef launch: ESM cpio %s: %w", f.ESMCpio, err)
	}
	initrd, err := os.ReadFile(f.Initrd)
	if err != nil {
		return nil, fmt.Errorf("sim-pef launch: initrd: %w", err)
	}
	boot := Boot{Kernel: kernel, Initrd: append(cpio, initrd...), Cmdline: f.Cmdline}
	svm, err := u.EnterSecureMode(boot)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(out, boot.Initrd, 0o600); err != nil {
		os.Remove(out)
		return nil, fmt.Errorf("sim-pef launch: write initrd: %w", err)
	}
	return svm, nil
}

// Serve answers the guest on conn (the agent/simsp port, simsp.PortName) for svm until ctx is
// done or the guest side closes: KindTEE with "sim-pef", KindESMFile with the named
// attachment (SVM.GetFile: once per boot). It stands for the UV_ESMB_GET_FILE ultracall of
// real hardware. Reports, quotes and malformed requests get an error answer; a framing error
// ends the session.
func Serve(ctx context.Context, conn io.ReadWriteCloser, svm *SVM, log *slog.Logger) error {
	return spchan.Serve(ctx, conn, "sim-pef", func(req *simsp.Request) *simsp.Response {
		return answer(req, svm)
	}, log)
}

// maxNameLen is the longest attachment name (imagebuilder/esm's syntax).
const maxNameLen = 31

func answer(req *simsp.Request, svm *SVM) *simsp.Response {
	if r := spchan.Triage(req, tee.SimPEF, "hands out ESM attachments", simsp.KindESMFile); r != nil {
		return r
	}
	if n := len(req.Name); n == 0 || n > maxNameLen {
		return &simsp.Response{Error: fmt.Sprintf("request name: %d bytes, want 1..%d", n, maxNameLen)}
	}
	data, err := svm.GetFile(req.Name) // its errors quote the (bounded) name with %q
	if err != nil {
		return &simsp.Response{Error: err.Error()}
	}
	return &simsp.Response{File: data}
}
