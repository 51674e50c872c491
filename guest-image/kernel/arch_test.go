package kernel

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/guest-image/kernel/fakesource"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// testELF returns a minimal 64-bit ELF executable: header, one program header of type ptype
// with 16 bytes of file content, and the 16 bytes.
func testELF(machine elf.Machine, order binary.ByteOrder, ptype elf.ProgType) []byte {
	var b bytes.Buffer
	data := byte(elf.ELFDATA2LSB)
	if order == binary.BigEndian {
		data = byte(elf.ELFDATA2MSB)
	}
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), data, 1, 0})
	b.Write(make([]byte, 8))
	w := func(v any) { _ = binary.Write(&b, order, v) }
	w(uint16(elf.ET_EXEC))
	w(uint16(machine))
	w(uint32(1))
	w(uint64(0xc000000000000000)) // entry
	w(uint64(64))                 // phoff
	w(uint64(0))                  // shoff
	w(uint32(2))                  // flags: ELF ABI v2
	w(uint16(64))                 // ehsize
	w(uint16(56))                 // phentsize
	w(uint16(1))                  // phnum
	w(uint16(64))                 // shentsize
	w(uint16(0))                  // shnum
	w(uint16(0))                  // shstrndx
	w(uint32(ptype))
	w(uint32(elf.PF_R | elf.PF_X))
	w(uint64(120))                // offset
	w(uint64(0xc000000000000000)) // vaddr
	w(uint64(0))                  // paddr
	w(uint64(16))                 // filesz
	w(uint64(16))                 // memsz
	w(uint64(0x10000))            // align
	b.WriteString("sealpod-vmlinux!")
	return b.Bytes()
}

func TestParseArch(t *testing.T) {
	for in, want := range map[string]Arch{"": ArchX86_64, "x86_64": ArchX86_64, "ppc64le": ArchPPC64LE} {
		if got, err := ParseArch(in); err != nil || got != want {
			t.Errorf("ParseArch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"amd64", "ppc64", "powerpc", "PPC64LE", "ppc64le "} {
		if _, err := ParseArch(in); !errors.Is(err, ErrUnknownArch) {
			t.Errorf("ParseArch(%q): %v, want ErrUnknownArch", in, err)
		}
	}
}

func TestCheckPPC64LEVmlinux(t *testing.T) {
	if err := CheckPPC64LEVmlinux(testELF(elf.EM_PPC64, binary.LittleEndian, elf.PT_LOAD)); err != nil {
		t.Fatalf("ppc64le ELF: %v", err)
	}
	for name, img := range map[string][]byte{
		"big-endian ppc64": testELF(elf.EM_PPC64, binary.BigEndian, elf.PT_LOAD),
		"x86-64":           testELF(elf.EM_X86_64, binary.LittleEndian, elf.PT_LOAD),
		"no PT_LOAD":       testELF(elf.EM_PPC64, binary.LittleEndian, elf.PT_NOTE),
		"bzImage":          append([]byte("MZ"), make([]byte, 600)...),
		"empty":            nil,
	} {
		if err := CheckPPC64LEVmlinux(img); !errors.Is(err, ErrNotVmlinux) {
			t.Errorf("%s: %v, want ErrNotVmlinux", name, err)
		}
	}
}

// TestIdentifyArch: the x86_64 cache key is computed exactly as before architectures existed
// (so the cached and golden x86 kernels stay valid), and ppc64le gets its own key, compiler
// and lock file.
func TestIdentifyArch(t *testing.T) {
	tarball := fakesource.Tarball(t, nil)
	ctx := testContext(t)
	x86 := BuildOptions{Tarball: tarball}
	if err := x86.defaults(); err != nil {
		t.Fatal(err)
	}
	bx, err := x86.identify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("gcc", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	gccVersion, _, _ := strings.Cut(string(out), "\n")
	k := sha256.Sum256([]byte(strings.Join([]string{"sealpod-minimal-kernel/1", bx.SourceSHA256, sha256Hex(MinimalConfig), gccVersion}, "\n")))
	if want := hex.EncodeToString(k[:12]); bx.Key != want || bx.Arch != "" || bx.Compiler != gccVersion {
		t.Fatalf("x86_64: key %s arch %q compiler %q; want the pre-architecture key %s, no arch, %q", bx.Key, bx.Arch, bx.Compiler, want, gccVersion)
	}
	if _, err := exec.LookPath(CrossCompilePPC64LE + "gcc"); err != nil {
		testdeps.Missing(t, "%sgcc (Debian gcc-powerpc64le-linux-gnu; make deps installs it): %v", CrossCompilePPC64LE, err)
	}
	ppc := BuildOptions{Tarball: tarball, Arch: ArchPPC64LE}
	if err := ppc.defaults(); err != nil {
		t.Fatal(err)
	}
	bp, err := ppc.identify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bp.Key == bx.Key || bp.Arch != ArchPPC64LE || !strings.HasPrefix(bp.Compiler, CrossCompilePPC64LE+"gcc") ||
		bp.FragmentSHA256 != sha256Hex(MinimalConfigPPC64LE) {
		t.Fatalf("ppc64le: %+v (x86_64 key %s)", bp, bx.Key)
	}
	if ArchPPC64LE.spec().lockFile == ArchX86_64.spec().lockFile {
		t.Error("ppc64le builds share the x86_64 lock: a 20-minute cross build would hold up the x86 kernel")
	}
}

// TestBuildPPC64LE builds the fake source for ppc64le: the fragment is applied from the start
// (allnoconfig with tiny-base.config + fragment), the image is the vmlinux ELF checked as
// such, kernel's make gets ARCH=powerpc and the cross compiler even when a calling make passed
// ARCH=ppc64le in MAKEFLAGS (make guest ARCH=ppc64le), and kernel.json records the arch.
func TestBuildPPC64LE(t *testing.T) {
	if _, err := exec.LookPath(CrossCompilePPC64LE + "gcc"); err != nil {
		testdeps.Missing(t, "%sgcc (Debian gcc-powerpc64le-linux-gnu; make deps installs it): %v", CrossCompilePPC64LE, err)
	}
	t.Setenv("MAKEFLAGS", "ARCH=ppc64le")
	t.Setenv("ARCH", "ppc64le")
	frag := []byte("CONFIG_PPC64=y\nCONFIG_PPC_SVM=y\n")
	o := BuildOptions{
		Arch: ArchPPC64LE, Tarball: fakesource.Tarball(t, testELF(elf.EM_PPC64, binary.LittleEndian, elf.PT_LOAD)),
		Fragment: frag, CacheDir: t.TempDir(), Jobs: 1,
	}
	b, err := BuildMinimal(testContext(t), o)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(b.BzImagePath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(b.BzImagePath(), "/vmlinux") || CheckPPC64LEVmlinux(img) != nil || sha256Hex(img) != b.BzImageSHA256 {
		t.Fatalf("image %s is not the checked vmlinux", b.BzImagePath())
	}
	for _, want := range []string{"CONFIG_EMBEDDED=y\n", "CONFIG_PPC_SVM=y\n", "ARCH=powerpc CROSS_COMPILE=" + CrossCompilePPC64LE + "\n"} {
		if !bytes.Contains(img, []byte(want)) {
			t.Errorf("the fake vmlinux lacks %q:\n%s", want, img[120:])
		}
	}
	again, err := openBuilt(b.Dir)
	if err != nil || again.Arch != ArchPPC64LE || again.BzImagePath() != b.BzImagePath() {
		t.Fatalf("reopened entry: %+v, %v", again, err)
	}
	if _, err := BuildBuiltin(testContext(t), o, Builtin{}); !errors.Is(err, ErrUnknownArch) {
		t.Errorf("built-in variant for ppc64le: %v, want a refusal", err)
	}
}

// TestMinimalConfigPPC64LE: the pseries fragment has what the guest needs to boot and run the
// agent: the Open Firmware entry (prom_init; without it the kernel traps at __boot_from_prom
// under SLOF), VSX (Go's ppc64le code uses it: without it the agent dies of SIGILL), secure-VM
// support and the radix MMU PEF requires, the hvc console and the x86 guest's devices.
func TestMinimalConfigPPC64LE(t *testing.T) {
	opts, err := ParseKconfig(MinimalConfigPPC64LE)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"CONFIG_PPC64=y", "CONFIG_CPU_LITTLE_ENDIAN=y", "CONFIG_PPC_PSERIES=y", "CONFIG_PPC_OF_BOOT_TRAMPOLINE=y",
		"CONFIG_ALTIVEC=y", "CONFIG_VSX=y", "CONFIG_PPC_SVM=y", "CONFIG_PPC_RADIX_MMU=y", "CONFIG_HVC_CONSOLE=y",
		"CONFIG_FRAME_WARN=2048", "CONFIG_VIRTIO_PCI=y", "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_VIRTIO_NET=y",
		"CONFIG_VIRTIO_BLK=y", "CONFIG_HW_RANDOM_VIRTIO=y", "CONFIG_DM_CRYPT=y", "CONFIG_DM_INTEGRITY=y",
		"CONFIG_EXT4_FS=y", "CONFIG_OVERLAY_FS=y", "CONFIG_CGROUPS=y", "CONFIG_SECCOMP_FILTER=y", "CONFIG_RD_LZ4=y",
		"# CONFIG_MODULES is not set", "# CONFIG_PPC_POWERNV is not set",
	} {
		name, _, _ := strings.Cut(want, "=")
		if want[0] == '#' {
			name = strings.Fields(want)[1]
		}
		if got, ok := opts[name]; !ok || got.String() != want {
			t.Errorf("minimal-ppc64le.config: %s missing (has %v)", want, got)
		}
	}
}
