package qemu

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// QEMU keeps the -initrd file mapped for the life of the VM (fw_cfg serves it again on a
// reboot), so its page-cache pages count in QEMU's RSS: 6.7 MiB of the benchmark pod's 151
// MiB, though the guest has unpacked and freed its copy long before. Pod VMs run with
// -no-reboot: once the agent answers, the shim reclaims those pages with
// process_madvise(MADV_PAGEOUT) (clean file pages: dropped, read back from the file should
// QEMU ever touch them again). It changes nothing the guest sees.

// FileMapping is one mapping of a file in a process (from /proc/<pid>/maps).
type FileMapping struct {
	Start, End uint64
	Path       string
}

// maxMapsLine bounds a line of /proc/<pid>/maps (a path is at most PATH_MAX).
const maxMapsLine = 64 << 10

// FileMappings returns the mappings in maps (the format of /proc/<pid>/maps) whose path is one
// of paths, compared exactly.
func FileMappings(maps io.Reader, paths ...string) ([]FileMapping, error) {
	return selectMappings(maps, func(_, path string) bool { return path != "" && slices.Contains(paths, path) })
}

// selectMappings returns the mappings in maps that keep(perms, path) selects; a selected line's
// address range must parse.
func selectMappings(maps io.Reader, keep func(perms, path string) bool) ([]FileMapping, error) {
	sc := bufio.NewScanner(maps)
	sc.Buffer(make([]byte, 0, 4096), maxMapsLine)
	var out []FileMapping
	for sc.Scan() {
		rng, perms, path := mapsLine(sc.Text())
		if !keep(perms, path) {
			continue
		}
		lo, hi, ok := strings.Cut(rng, "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("maps: bad address range %q", rng)
		}
		out = append(out, FileMapping{Start: start, End: end, Path: path})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("maps: %w", err)
	}
	return out, nil
}

// mapsLine splits a line of /proc/<pid>/maps (or a mapping's first line in smaps): "start-end
// perms offset dev inode [path]". The path may contain spaces; it is "" for an anonymous
// mapping and for a line of fewer than six fields.
func mapsLine(line string) (rng, perms, path string) {
	rest := line
	var f [5]string
	for i := range f {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			f[i], rest = rest, ""
			continue
		}
		f[i], rest = rest[:j], rest[j:]
	}
	return f[0], f[1], strings.TrimLeft(rest, " ")
}

// PrivateFileMappings returns the private mappings of regular files in maps (the format of
// /proc/<pid>/maps): QEMU's binary, its shared libraries and modules, the files Start gave it.
// Not: anonymous and special mappings ([heap], [stack], …), shared mappings (whose dirty pages
// a page-out would write back), devices (/dev/…), memfds and deleted files.
func PrivateFileMappings(maps io.Reader) ([]FileMapping, error) {
	return selectMappings(maps, func(perms, path string) bool {
		return strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "/dev/") && !strings.HasPrefix(path, "/memfd:") &&
			!strings.HasSuffix(path, " (deleted)") && len(perms) == 4 && perms[3] == 'p'
	})
}

// PageOutFiles asks the kernel to reclaim the pages of process pid's mappings of paths
// (process_madvise MADV_PAGEOUT; needs CAP_SYS_NICE over the process, as the shim has). pid
// must be the caller's own child that it has not waited for, so that it cannot be reused. It
// returns how many bytes of mappings it advised.
func PageOutFiles(pid int, paths ...string) (uint64, error) {
	return pageOut(pid, "files", func(maps io.Reader) ([]FileMapping, error) { return FileMappings(maps, paths...) })
}

// pageOut advises MADV_PAGEOUT for the mappings of process pid that sel picks from its
// /proc/<pid>/maps (at most uioMaxIOV mappings per call); what names them in errors.
func pageOut(pid int, what string, sel func(maps io.Reader) ([]FileMapping, error)) (uint64, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, fmt.Errorf("page out %s of pid %d: pidfd: %w", what, pid, err)
	}
	defer unix.Close(fd)
	maps, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return 0, fmt.Errorf("page out %s of pid %d: %w", what, pid, err)
	}
	ms, err := sel(bytes.NewReader(maps))
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	// The iovecs name addresses in the other process: plain integers here.
	type remoteIovec struct{ base, len uintptr }
	iov := make([]remoteIovec, len(ms))
	var total uint64
	for i, m := range ms {
		iov[i] = remoteIovec{uintptr(m.Start), uintptr(m.End - m.Start)}
		total += m.End - m.Start
	}
	for i := 0; i < len(iov); i += uioMaxIOV {
		batch := iov[i:min(i+uioMaxIOV, len(iov))]
		_, _, e := unix.Syscall6(unix.SYS_PROCESS_MADVISE, uintptr(fd), uintptr(unsafe.Pointer(&batch[0])), uintptr(len(batch)), unix.MADV_PAGEOUT, 0, 0)
		if e != 0 {
			return 0, fmt.Errorf("page out %s of pid %d: process_madvise: %w", what, pid, e)
		}
	}
	return total, nil
}

// uioMaxIOV is the kernel's UIO_MAXIOV, the most iovecs one process_madvise takes.
const uioMaxIOV = 1024

// ReleaseCode pages out every private file mapping of QEMU (PrivateFileMappings): its binary,
// libraries and modules, and the boot files. Once the pod runs, most of that code (option
// parsing, machine and device set-up, ACPI tables, the boot loaders) is never run again, yet
// it stays resident: 13 of the benchmark pod's 142 MiB were QEMU's binary, 9 its libraries.
// The pages it still runs fault back in from the page cache (or the file), so the RSS that
// remains is QEMU's working set; pages other processes map stay (MADV_PAGEOUT leaves shared
// pages alone). Best effort, as ReleaseBootFiles.
func (vm *VM) ReleaseCode() (uint64, error) {
	if vm.exited() {
		return 0, fmt.Errorf("qemu pid %d: %w", vm.PID(), ErrNotRunning)
	}
	return PageOutCode(vm.PID())
}

// PageOutCode advises MADV_PAGEOUT for every private file mapping of process pid (see
// ReleaseCode; the same pidfd rules as PageOutFiles).
func PageOutCode(pid int) (uint64, error) { return pageOut(pid, "code", PrivateFileMappings) }

// ReleaseBootFiles pages out QEMU's mapping of the guest's initrd (and of the kernel, should
// this QEMU map it): the files Start gave QEMU, once the guest has booted; see PageOutFiles.
// Best effort: the VM runs on whatever it returns. A VM from StartCommand has none.
func (vm *VM) ReleaseBootFiles() (uint64, error) {
	if vm.exited() {
		return 0, fmt.Errorf("qemu pid %d: %w", vm.PID(), ErrNotRunning)
	}
	if len(vm.bootFiles) == 0 {
		return 0, nil
	}
	return PageOutFiles(vm.PID(), vm.bootFiles...)
}
