package shim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/runtime-shim/config"
	"github.com/sealpod/sealpod/runtime-shim/qemu"
	"github.com/sealpod/sealpod/simtee/pefuv"
)

// ESMCpioFile is the workload's ESM blob in svm-tools' cpio (secure image
// /sealpod/pef/<workload>.cpio), copied into the pod's guest directory.
const ESMCpioFile = "esm.cpio"

// maxESMCpio bounds the ESM cpio read from the secure image (the reader accepts blobs up to
// 1 MiB; the cpio adds headers and padding).
const maxESMCpio = 2 << 20

// simPEFService is the host side of sim-pef: the software ultravisor (simtee/pefuv) with the
// node's host key (node config simPEFKey) enters secure mode for exactly the kernel, initrd
// (the ESM cpio followed by the guest's initrd) and command line QEMU is about to boot, and
// refuses the boot if the blob is not for this host or a digest differs. The checked initrd
// replaces the guest directory's initrd.img, so QEMU boots the bytes that were checked. On
// the sim-sp port it hands the guest its attachments (on hardware: UV_ESMB_GET_FILE).
func simPEFService(cfg *config.Config, g *bundle.Bundle, log *slog.Logger) (*teeService, error) {
	key, err := pefuv.LoadHostKey(cfg.SimPEFKey)
	if err != nil {
		return nil, err
	}
	guest := qemu.GuestFromBundle(g)
	if guest.Initrd == "" {
		return nil, fmt.Errorf("sim-pef: the guest bundle %s has no initrd", g.Dir)
	}
	files := pefuv.Files{Kernel: guest.Kernel, ESMCpio: filepath.Join(g.Dir, ESMCpioFile), Initrd: guest.Initrd, Cmdline: guest.Cmdline}
	if _, err := os.Stat(files.ESMCpio); err != nil {
		return nil, fmt.Errorf("sim-pef: the secure image has no ESM blob for this workload (sealctl image create --tee sim-pef): %w", err)
	}
	out := filepath.Join(g.Dir, "initrd-pef.img")
	svm, err := pefuv.New(key, log).Launch(files, out)
	if err != nil {
		return nil, fmt.Errorf("sim-pef: refusing to boot: %w", err)
	}
	if err := os.Rename(out, guest.Initrd); err != nil {
		os.Remove(out)
		return nil, fmt.Errorf("sim-pef: %w", err)
	}
	log.Info("sim-pef: the simulated ultravisor opened the ESM blob", "lockbox", svm.Lockbox, "attachments", len(svm.Names()))
	return &teeService{name: "simulated PEF ultravisor", serve: func(ctx context.Context, conn io.ReadWriteCloser, log *slog.Logger) error {
		return pefuv.Serve(ctx, conn, svm, log)
	}}, nil
}
