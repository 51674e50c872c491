package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// pageReportingOrder is the sysfs parameter of the kernel's free page reporting (mm/
// page_reporting.c), built in with the virtio-balloon driver.
const pageReportingOrder = "/sys/module/page_reporting/parameters/page_reporting_order"

// PageReportingOrder is the order of the free blocks the guest reports: 3 = 32 KiB.
//
// With free page reporting (the sim VM's virtio-balloon, docs/runtime.md#qemu-memory) the
// guest tells QEMU which pages it freed, and QEMU gives them back to the host. Linux 6.1 sets
// the order at registration to pageblock_order, which without transparent huge pages is
// MAX_ORDER-1: only free 4 MiB blocks are reported, and the pages a booted guest has freed
// (the unpacked initramfs, the decompressor) are scattered, so QEMU kept them all: 56-58 MiB
// of guest RAM resident for 25 MiB in use. At order 3 the same boot leaves 40 MiB resident
// (runtime-shim/qemu TestMeasureRSS, 2026-12-06).
const PageReportingOrder = 3

// TunePageReporting lowers the reporting order to PageReportingOrder. A guest without free
// page reporting (no balloon device, as on SNP/TDX, or a kernel without it) is left alone.
func TunePageReporting() error { return tunePageReporting(pageReportingOrder) }

func tunePageReporting(path string) error {
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("page reporting order: %w", err)
	}
	if n, err := strconv.Atoi(string(bytes.TrimSpace(cur))); err == nil && n <= PageReportingOrder {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(PageReportingOrder)), 0); err != nil {
		return fmt.Errorf("page reporting order: %w", err)
	}
	return nil
}
