package volume

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/testdeps"
)

func TestOpenRejectsBeforeTouchingTheDevice(t *testing.T) {
	g := &fakeBroker{}
	good := Options{Name: "data", MountPoint: "/run/v/data", AllowFormat: true, Generations: g}
	const id = "db/data"
	cases := []struct {
		name string
		id   string
		opts Options
		want string
	}{
		{"empty name", id, Options{MountPoint: "/m", Generations: g}, "name"},
		{"name syntax", id, Options{Name: "Data", MountPoint: "/m", Generations: g}, "name"},
		{"name too long", id, Options{Name: strings.Repeat("a", 41), MountPoint: "/m", Generations: g}, "name"},
		{"relative mount", id, Options{Name: "data", MountPoint: "m", Generations: g}, "mount point"},
		{"unclean mount", id, Options{Name: "data", MountPoint: "/m/../etc", Generations: g}, "mount point"},
		{"block with mount", id, Options{Name: "data", Mode: ModeBlock, MountPoint: "/m", Generations: g}, "mount point"},
		{"mode", id, Options{Name: "data", Mode: 7, Generations: g}, "mode"},
		{"no generations", id, Options{Name: "data"}, "no generations"},
		{"identity", "db/", good, "claim"},
		{"identity without namespace", "data", good, "<namespace>/<claim>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A device path that must never be opened: validation comes first.
			_, err := Open(context.Background(), "/nonexistent/device", testSecret(), c.id, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, os.ErrNotExist) {
				t.Fatalf("err = %v, want a %s error", err, c.want)
			}
		})
	}
	if g.begins != 0 {
		t.Fatalf("Begin called %d times for refused options", g.begins)
	}
}

func TestOpenRefusesNonBlockDevice(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &fakeBroker{}
	_, err := Open(context.Background(), p, testSecret(), "db/data", Options{Name: "data", Generations: g})
	if err == nil || !strings.Contains(err.Error(), "not a block device") || !strings.Contains(err.Error(), "open volume data (db/data) on "+p) {
		t.Fatalf("err = %v", err)
	}
	if g.begins != 0 {
		t.Fatal("Begin called for a device that is refused")
	}
}

// TestFormatExt4 runs the first-use mkfs on an image file and checks it with e2fsck, and that
// every group's inodes fill whole inode-table blocks (the
// kernel's lazy itable init refuses a partial block and remounts read-only; e2fsck does not
// mind, the e2e StatefulSet found it).
func TestFormatExt4(t *testing.T) {
	e2fsck := testdeps.Binary(t, "e2fsck", "apt-get install -y e2fsprogs")
	for _, size := range []int64{14 << 20, 31<<20 + 7*512, 11432 * 8192, 1 << 30} { // 11432 inodes: the e2e volume's size
		p := filepath.Join(t.TempDir(), "disk")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := mkfs(p, size); err != nil {
			t.Fatalf("mkfs %d bytes: %v", size, err)
		}
		out, err := exec.Command(e2fsck, "-f", "-n", p).CombinedOutput()
		if err != nil {
			t.Fatalf("e2fsck on %d bytes: %v\n%s", size, err, out)
		}
		dump, err := exec.Command(filepath.Join(filepath.Dir(e2fsck), "dumpe2fs"), "-h", p).CombinedOutput()
		if err != nil {
			t.Fatalf("dumpe2fs: %v\n%s", err, dump)
		}
		for _, want := range []string{"has_journal", "extent", "Block size:               4096"} {
			if !strings.Contains(string(dump), want) {
				t.Errorf("%d bytes: dumpe2fs lacks %q:\n%s", size, want, dump)
			}
		}
		field := func(name string) int {
			m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)$`).FindSubmatch(dump)
			if m == nil {
				t.Fatalf("%d bytes: dumpe2fs lacks %q:\n%s", size, name, dump)
			}
			n, _ := strconv.Atoi(string(m[1]))
			return n
		}
		perGroup, inodeSize, tableBlocks := field("Inodes per group"), field("Inode size"), field("Inode blocks per group")
		if perGroup*inodeSize != tableBlocks*4096 {
			t.Errorf("%d bytes: %d inodes of %d bytes per group do not fill %d inode-table blocks", size, perGroup, inodeSize, tableBlocks)
		}
	}
}

func TestFormatCancelled(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := format(ctx, p, p, MinDeviceSize, ModeBlock); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
