package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/apt-show-*.txt are verbatim `apt-cache show --no-all-versions linux-image-amd64` and
// `apt-cache show linux-image-6.1.0-56-amd64=6.1.192-2` on Debian 12 (2026-11-22).

func TestParseStanzasAndKernelDependency(t *testing.T) {
	raw, err := os.ReadFile("testdata/apt-show-meta.txt")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseStanzas(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0]["Package"] != "linux-image-amd64" {
		t.Fatalf("stanzas: %+v", st)
	}
	p, err := KernelDependency(st[0])
	if err != nil {
		t.Fatal(err)
	}
	if p != (Package{Name: "linux-image-6.1.0-56-amd64", Version: "6.1.192-2"}) {
		t.Fatalf("dependency = %+v", p)
	}

	raw, err = os.ReadFile("testdata/apt-show-kernel.txt")
	if err != nil {
		t.Fatal(err)
	}
	st, err = ParseStanzas(raw)
	if err != nil {
		t.Fatal(err)
	}
	if st[0]["SHA256"] != "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1" {
		t.Fatalf("SHA256 = %q", st[0]["SHA256"])
	}
}

func TestKernelDependencyRejects(t *testing.T) {
	tests := map[string]string{
		"":                                      "no Depends",
		"kmod, linux-base":                      "no linux-image-* dependency",
		"linux-image-6.1.0-56-amd64 (>= 6.1.0)": "no exact version",
		"linux-image-6.1.0-56-amd64":            "no exact version",
	}
	for deps, want := range tests {
		s := Stanza{"Package": "linux-image-amd64"}
		if deps != "" {
			s["Depends"] = deps
		}
		if _, err := KernelDependency(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Depends %q: err = %v, want %q", deps, err, want)
		}
	}
}

func TestParseStanzasRejects(t *testing.T) {
	for _, in := range []string{" continuation first\n", "no colon here\n", "bad key: x\n"} {
		if _, err := ParseStanzas([]byte(in)); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
	st, err := ParseStanzas([]byte("A: 1\n\n\nB: 2\nDescription: short\n long line\n .\n"))
	if err != nil || len(st) != 2 {
		t.Fatalf("two stanzas: %v %v", st, err)
	}
	if got := st[1]["Description"]; got != "short\nlong line\n." {
		t.Errorf("continuation lines: %q", got)
	}
}

func TestParsePin(t *testing.T) {
	tests := map[string]bool{
		"linux-image-6.1.0-56-amd64=6.1.192-2": true,
		"linux-image-6.1.0-56-amd64":           false,
		"=6.1":                                 false,
		"linux image=1":                        false,
		"linux-image-x=1 2":                    false,
		"linux-image-x=1:2.3~rc1+b1":           true,
	}
	for in, ok := range tests {
		if _, err := ParsePin(in); (err == nil) != ok {
			t.Errorf("ParsePin(%q) err = %v, want ok=%v", in, err, ok)
		}
	}
}

// writeFakeModule writes a minimal relocatable x86-64 ELF file holding only a .modinfo section.
func writeFakeModule(t *testing.T, file, modinfo string) {
	t.Helper()
	shstr := "\x00.modinfo\x00.shstrtab\x00"
	dataOff := uint64(64)
	strOff := dataOff + uint64(len(modinfo))
	shOff := (strOff + uint64(len(shstr)) + 7) &^ 7
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: 1,
		Shoff: shOff, Ehsize: 64, Shentsize: 64, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], "\x7fELF\x02\x01\x01")
	binary.Write(&b, binary.LittleEndian, h)
	b.WriteString(modinfo)
	b.WriteString(shstr)
	for uint64(b.Len()) < shOff {
		b.WriteByte(0)
	}
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Off: dataOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	} {
		binary.Write(&b, binary.LittleEndian, s)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

const testRelease = "6.1.0-99-amd64"

func fakeModules(t *testing.T, mods map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, deps := range mods {
		name := NormalizeName(strings.TrimSuffix(filepath.Base(rel), ".ko"))
		info := "license=GPL\x00depends=" + deps + "\x00name=" + name + "\x00vermagic=" + testRelease + " SMP mod_unload \x00\x00\x00"
		writeFakeModule(t, filepath.Join(dir, rel), info)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/fs/ext4/ext4.ko\nkernel/drivers/virtio/virtio_anchor.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolve(t *testing.T) {
	dir := fakeModules(t, map[string]string{
		"kernel/drivers/virtio/virtio_ring.ko":                 "",
		"kernel/drivers/virtio/virtio.ko":                      "virtio_ring",
		"kernel/drivers/virtio/virtio_pci.ko":                  "virtio_ring,virtio_pci_modern_dev,virtio",
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko":       "",
		"kernel/drivers/char/hw_random/virtio-rng.ko":          "virtio,virtio_ring",
		"kernel/net/vmw_vsock/vsock.ko":                        "",
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko":   "virtio,vsock",
		"kernel/drivers/virt/coco/sev-guest/sev-guest.ko":      "",
		"kernel/drivers/cyclic/a.ko":                           "b",
		"kernel/drivers/cyclic/b.ko":                           "a",
		"kernel/drivers/broken/needs_missing.ko":               "not_there",
		"kernel/drivers/virtio/virtio_pci_legacy_dev_wrong.ko": "",
	})
	ix, err := NewIndex(dir, testRelease)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ix.Resolve([]string{"virtio_pci", "virtio-rng", "ext4", "sev-guest", "vmw_vsock_virtio_transport"}, []string{"tdx_guest", "vsock"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range r.Order {
		names = append(names, m.Name)
	}
	want := "virtio_ring virtio_pci_modern_dev virtio virtio_pci virtio_rng sev_guest vsock vmw_vsock_virtio_transport"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("order:\n got %s\nwant %s", got, want)
	}
	if strings.Join(r.Builtin, ",") != "ext4" || strings.Join(r.Absent, ",") != "tdx_guest" {
		t.Errorf("builtin %v absent %v", r.Builtin, r.Absent)
	}
	lo := string(r.LoadOrder())
	if !strings.HasPrefix(lo, "kernel/drivers/virtio/virtio_ring.ko\n") || !strings.Contains(lo, "kernel/drivers/char/hw_random/virtio-rng.ko\n") {
		t.Errorf("load-order:\n%s", lo)
	}

	for _, tc := range []struct {
		req  []string
		want error
	}{
		{[]string{"a"}, ErrDependencyCycle},
		{[]string{"needs_missing"}, ErrNoModule},
		{[]string{"tdx_guest"}, ErrNoModule},
	} {
		if _, err := ix.Resolve(tc.req, nil); !errors.Is(err, tc.want) {
			t.Errorf("Resolve(%v) err = %v, want %v", tc.req, err, tc.want)
		}
	}
}

func TestModuleChecks(t *testing.T) {
	dir := t.TempDir()
	writeFakeModule(t, filepath.Join(dir, "kernel/x/renamed.ko"), "name=other\x00vermagic="+testRelease+" SMP\x00")
	writeFakeModule(t, filepath.Join(dir, "kernel/x/oldkernel.ko"), "name=oldkernel\x00vermagic=5.10.0-1-amd64 SMP\x00")
	if err := os.WriteFile(filepath.Join(dir, "kernel/x/notelf.ko"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel/x/packed.ko.xz"), []byte("xz"), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := NewIndex(dir, testRelease)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"renamed":   ".modinfo name is \"other\"",
		"oldkernel": "does not match kernel release",
		"notelf":    "module notelf",
		"packed":    "compressed module",
	}
	for name, want := range tests {
		if _, err := ix.Module(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Module(%s) err = %v, want %q", name, err, want)
		}
	}
}

func TestParseModinfo(t *testing.T) {
	m, err := ParseModinfo([]byte("alias=a\x00alias=b\x00depends=\x00\x00\x00name=x\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m["alias"]) != 2 || m.first("depends") != "" || m.first("name") != "x" {
		t.Fatalf("%v", m)
	}
	if _, err := ParseModinfo([]byte("noequals\x00")); err == nil {
		t.Fatal("accepted an entry without =")
	}
}

func FuzzParseStanzas(f *testing.F) {
	for _, name := range []string{"testdata/apt-show-meta.txt", "testdata/apt-show-kernel.txt"} {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseStanzas(data)
		if err != nil {
			return
		}
		for _, s := range st {
			_, _ = KernelDependency(s)
		}
	})
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=virtio,virtio_ring\x00name=virtio_pci\x00vermagic=6.1.0-56-amd64 SMP \x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseModinfo(data)
		if err != nil {
			return
		}
		for k := range m {
			if k == "" || strings.ContainsRune(k, 0) {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}
