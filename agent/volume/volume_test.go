package volume

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/testdeps"
)

func TestOpenRejectsBeforeTouchingTheDevice(t *testing.T) {
	good := Options{Name: "data", MountPoint: "/run/v/data", AllowFormat: true}
	id := ClaimID{"db", "data", 0}
	cases := []struct {
		name string
		id   ClaimID
		opts Options
		want string
	}{
		{"empty name", id, Options{MountPoint: "/m"}, "name"},
		{"name syntax", id, Options{Name: "Data", MountPoint: "/m"}, "name"},
		{"name too long", id, Options{Name: strings.Repeat("a", 41), MountPoint: "/m"}, "name"},
		{"relative mount", id, Options{Name: "data", MountPoint: "m"}, "mount point"},
		{"unclean mount", id, Options{Name: "data", MountPoint: "/m/../etc"}, "mount point"},
		{"block with mount", id, Options{Name: "data", Mode: ModeBlock, MountPoint: "/m"}, "mount point"},
		{"mode", id, Options{Name: "data", Mode: 7}, "mode"},
		{"identity", ClaimID{"db", "", 0}, good, "claim"},
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
}

func TestOpenRefusesNonBlockDevice(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), p, testSecret(), ClaimID{"db", "data", 0}, Options{Name: "data", MountPoint: "/run/v"})
	if err == nil || !strings.Contains(err.Error(), "not a block device") || !strings.Contains(err.Error(), "open volume data on "+p) {
		t.Fatalf("err = %v", err)
	}
}

// TestFormatExt4 runs the first-use format on an image file and checks it with e2fsck.
func TestFormatExt4(t *testing.T) {
	e2fsck := testdeps.Binary(t, "e2fsck", "apt-get install -y e2fsprogs")
	for _, size := range []int64{14 << 20, 31<<20 + 7*512, 1 << 30} {
		p := filepath.Join(t.TempDir(), "disk")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := format(context.Background(), p, size, ModeFilesystem); err != nil {
			t.Fatalf("format %d bytes: %v", size, err)
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
	}
}

func TestFormatCancelled(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := format(ctx, p, MinDeviceSize, ModeBlock); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
