package guestinit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDiskBySerial(t *testing.T) {
	sys := t.TempDir()
	for dev, serial := range map[string]string{"vda": "vb-plain\n", "vdb": "vb-sealed\n", "sda": "scsi\n"} {
		if err := os.MkdirAll(filepath.Join(sys, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, dev, "serial"), []byte(serial), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ serial, want string }{
		{"vb-plain", "/dev/vda"},
		{"vb-sealed", "/dev/vdb"},
		{"scsi", ""}, // not a virtio disk
		{"vb", ""},   // whole serial only
		{"", ""},
	} {
		got, err := diskBySerial(sys, tc.serial)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("diskBySerial(%q) = %q, %v; want %q", tc.serial, got, err, tc.want)
		}
	}
}
