package qemu

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFileMappings(t *testing.T) {
	const maps = `55d0c0a00000-55d0c0b00000 r--p 00000000 fd:01 123 /usr/bin/qemu-system-x86_64
7f00000000-7f00690000 r--p 00000000 00:2d 77 /run/sealpod/p1/guest/initrd.img
7f10000000-7f10001000 rw-p 00000000 00:00 0
7f20000000-7f20100000 rw-p 00000000 00:00 0                          [heap]
7f30000000-7f30010000 r--p 00000000 00:2d 78 /run/sealpod/p1/guest/initrd.img
7f40000000-7f40010000 r--p 00000000 00:2d 79 /run/sealpod/p1/guest/initrd.img (deleted)
7f50000000-7f50010000 r--p 00000000 00:2d 80 /run/a dir/with  spaces
7f60000000-7f60010000 r--p 00000000 00:2d 81     /run/sealpod/p1/guest/vmlinuz
`
	got, err := FileMappings(strings.NewReader(maps), "/run/sealpod/p1/guest/initrd.img", "/run/a dir/with  spaces", "/run/sealpod/p1/guest/vmlinuz", "[heap]", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []FileMapping{
		{0x7f00000000, 0x7f00690000, "/run/sealpod/p1/guest/initrd.img"},
		{0x7f20000000, 0x7f20100000, "[heap]"}, // exact names only: the caller passes file paths
		{0x7f30000000, 0x7f30010000, "/run/sealpod/p1/guest/initrd.img"},
		{0x7f50000000, 0x7f50010000, "/run/a dir/with  spaces"},
		{0x7f60000000, 0x7f60010000, "/run/sealpod/p1/guest/vmlinuz"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings %+v, want %+v", len(got), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"7f00-7e00 r--p 00000000 00:2d 77 /x\n", // end before start
		"zz-7f00 r--p 00000000 00:2d 77 /x\n",   // not hex
		"7f007f10 r--p 00000000 00:2d 77 /x\n",  // no dash
		"7f00- r--p 00000000 00:2d 77 /x\n",     // no end
		"-7f00 r--p 00000000 00:2d 77 /x\n",     // no start
		"7f00-7f10 r--p 00000000 00:2d 77 /x \n" + // trailing space is part of the name: no match, then
			"1-0 r--p 0 0 0 /x\n", // a bad range on the matching line
	} {
		if _, err := FileMappings(strings.NewReader(bad), "/x"); err == nil {
			t.Errorf("FileMappings(%q) = nil error", bad)
		}
	}
	// Bad lines of other files are not this parser's business.
	if got, err := FileMappings(strings.NewReader("zz-yy r--p 0 0 0 /other\n"), "/x"); err != nil || len(got) != 0 {
		t.Errorf("other file's bad line: %v, %v", got, err)
	}
}

// TestPrivateFileMappings: what ReleaseCode pages out is QEMU's private file mappings (binary,
// libraries, modules, boot files), nothing shared, anonymous, special, device, memfd or deleted.
func TestPrivateFileMappings(t *testing.T) {
	const maps = `55d0c0a00000-55d0c0b00000 r--p 00000000 fd:01 123 /usr/bin/qemu-system-x86_64
55d0c0b00000-55d0c1500000 r-xp 00100000 fd:01 123 /usr/bin/qemu-system-x86_64
55d0c1500000-55d0c1600000 rw-p 00b00000 fd:01 123 /usr/bin/qemu-system-x86_64
7f00000000-7f00690000 r--p 00000000 00:2d 77 /run/sealpod/p1/guest/initrd.img
7f10000000-7f10001000 rw-p 00000000 00:00 0
7f20000000-7f20100000 rw-p 00000000 00:00 0                          [heap]
7f30000000-7f30010000 rw-s 00000000 00:2d 78 /run/shared-file
7f40000000-7f40010000 r-xp 00000000 00:2d 79 /usr/lib/old.so (deleted)
7f50000000-7f50010000 rw-s 00000000 00:01 80 /memfd:ram0 (deleted)
7f60000000-7f60010000 rw-p 00000000 00:01 81 /memfd:anon
7f70000000-7f70010000 rw-s 00000000 00:05 82 /dev/zero
7f80000000-7f80010000 r-xp 00000000 fd:01 83 /usr/lib/x86_64-linux-gnu/a lib.so
7fff0000-7fff1000 r-xp 00000000 00:00 0                          [vdso]
`
	got, err := PrivateFileMappings(strings.NewReader(maps))
	if err != nil {
		t.Fatal(err)
	}
	want := []FileMapping{
		{0x55d0c0a00000, 0x55d0c0b00000, "/usr/bin/qemu-system-x86_64"},
		{0x55d0c0b00000, 0x55d0c1500000, "/usr/bin/qemu-system-x86_64"},
		{0x55d0c1500000, 0x55d0c1600000, "/usr/bin/qemu-system-x86_64"},
		{0x7f00000000, 0x7f00690000, "/run/sealpod/p1/guest/initrd.img"},
		{0x7f80000000, 0x7f80010000, "/usr/lib/x86_64-linux-gnu/a lib.so"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{
		"7f00-7e00 r--p 00000000 00:2d 77 /x\n",
		"zz-7f00 r-xp 00000000 00:2d 77 /usr/bin/x\n",
	} {
		if _, err := PrivateFileMappings(strings.NewReader(bad)); err == nil {
			t.Errorf("PrivateFileMappings(%q) = nil error", bad)
		}
	}
}

func FuzzPrivateFileMappings(f *testing.F) {
	f.Add([]byte("55d0c0a00000-55d0c0b00000 r-xp 00000000 fd:01 123 /usr/bin/qemu-system-x86_64\n7f20000000-7f20100000 rw-p 00000000 00:00 0 [heap]\n"))
	f.Add([]byte("7f50000000-7f50010000 rw-s 00000000 00:01 80 /memfd:ram0 (deleted)\n\n x"))
	f.Fuzz(func(t *testing.T, maps []byte) {
		ms, err := PrivateFileMappings(strings.NewReader(string(maps)))
		if err != nil {
			return
		}
		for _, m := range ms {
			if !strings.HasPrefix(m.Path, "/") || strings.HasPrefix(m.Path, "/dev/") || strings.HasPrefix(m.Path, "/memfd:") || m.End <= m.Start {
				t.Fatalf("mapping %+v", m)
			}
		}
	})
}

func FuzzFileMappings(f *testing.F) {
	f.Add([]byte("7f00000000-7f00690000 r--p 00000000 00:2d 77 /run/sealpod/p1/guest/initrd.img\n"), "/run/sealpod/p1/guest/initrd.img")
	f.Add([]byte("7f50000000-7f50010000 r--p 00000000 00:2d 80 /run/a dir/with  spaces\n[heap]\n\n"), "/run/a dir/with  spaces")
	f.Fuzz(func(t *testing.T, maps []byte, path string) {
		ms, err := FileMappings(strings.NewReader(string(maps)), path)
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.Path != path || m.End <= m.Start {
				t.Fatalf("mapping %+v for path %q", m, path)
			}
		}
	})
}

// TestPageOutFiles: a child process maps a file and reads every page; after PageOutFiles the
// mapping's resident size must drop (it is what the shim does to QEMU's initrd mapping).
func TestPageOutFiles(t *testing.T) {
	if p := os.Getenv("SEALPOD_TEST_MAPFILE"); p != "" {
		mapAndWait(p)
		return
	}
	file := filepath.Join(t.TempDir(), "initrd.img")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPageOutFiles$")
	cmd.Env = append(os.Environ(), "SEALPOD_TEST_MAPFILE="+file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait() // its exit status is the parity of what it read
	}()
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil || line != "mapped\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	pid := cmd.Process.Pid
	before := mappedRSS(t, pid, file)
	if before < 4<<20 {
		t.Fatalf("child's mapping of %s has %d bytes resident before, want the 8 MiB it read", file, before)
	}
	n, err := PageOutFiles(pid, file)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
			t.Fatalf("process_madvise needs CAP_SYS_NICE and Linux >= 5.10: %v", err)
		}
		t.Fatal(err)
	}
	after := mappedRSS(t, pid, file)
	t.Logf("advised %d bytes; resident %d → %d bytes", n, before, after)
	if n < 8<<20 || after > before/4 {
		t.Fatalf("advised %d bytes; resident %d → %d bytes: not paged out", n, before, after)
	}
	if n, err := PageOutFiles(pid, filepath.Join(t.TempDir(), "not-mapped")); n != 0 || err != nil {
		t.Errorf("a file the process does not map: %d, %v", n, err)
	}

	// PageOutCode (ReleaseCode) takes every private file mapping: read the file back in, then
	// page out without naming it.
	if _, err := stdin.Write([]byte("r")); err != nil {
		t.Fatal(err)
	}
	if line, err := out.ReadString('\n'); err != nil || line != "read\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	before = mappedRSS(t, pid, file)
	n, err = PageOutCode(pid)
	after = mappedRSS(t, pid, file)
	t.Logf("PageOutCode advised %d bytes; the file's resident %d → %d bytes", n, before, after)
	if err != nil || before < 4<<20 || n < 8<<20 || after > before/4 {
		t.Fatalf("PageOutCode: advised %d bytes (%v); resident %d → %d bytes", n, err, before, after)
	}
}

func mapAndWait(path string) {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	st, _ := f.Stat()
	b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	sum := 0
	for i := 0; i < len(b); i += 4096 {
		sum += int(b[i])
	}
	os.Stdout.WriteString("mapped\n")
	// "r" reads every page again; EOF (the parent closed stdin) ends the child.
	var one [1]byte
	for {
		if n, _ := os.Stdin.Read(one[:]); n == 0 {
			break
		}
		for i := 0; i < len(b); i += 4096 {
			sum += int(b[i])
		}
		os.Stdout.WriteString("read\n")
	}
	os.Exit(sum & 1) // the sum is used: the reads stay
}

// mappedRSS sums the Rss of pid's mappings of path (from smaps), in bytes.
func mappedRSS(t *testing.T, pid int, path string) uint64 {
	t.Helper()
	maps, err := readSmaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, m := range maps {
		if m.path == path {
			total += uint64(m.rss) << 10
		}
	}
	return total
}
