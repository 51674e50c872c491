package guest_test

// Sealed volumes in the real guest (owner: agent/volume): the minimal kernel's dm-crypt and
// dm-integrity driven by agent/volume from a test-only /init (tests/guest/volumeinit), on
// extra virtio-blk disks backed by sparse files on the host. The broker's generations are a
// fake in the guest; the test carries its state from one boot to the next (the guest prints
// it, the next boot gets it on the kernel command line). Two boots:
//
//  1. first use formats; a canary file is written, read back after close and reopen; other
//     identities (ordinal, namespace, claim, secret) are refused without reformatting. A second
//     empty disk is refused without format permission, then used as a Block volume; a third
//     disk with host-written data is refused and left unchanged; a fourth (the rollback
//     claim) is formatted at generation 1. The host then checks that the canary is nowhere in
//     the backing files, parses the kernel-written dm-integrity superblock, finds the
//     ciphertext the guest reported and changes one byte, and keeps a copy of the fourth
//     disk's backing file (the "older copy").
//  2. (one byte of the Block volume's dm-integrity superblock changed too) the data volume
//     opens and reading the canary file fails with EIO (not other data); the Block volume is
//     refused (superblock MAC) and left as it was. The rollback claim reopens at generation 2;
//     after a simulated crash between Begin and the header write, and one between the header
//     write and Commit, the next open works (and commits); the older copy, attached as
//     another disk under the same claim, is refused with ErrRollback naming the claim and
//     both generations, and so is an empty disk for the same claim (left unwritten).
//
// Runs by default when qemu-system-x86_64 is installed; -short skips it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/volume"
	"github.com/sealpod/sealpod/imagebuilder/bundle"
	"github.com/sealpod/sealpod/internal/testdeps"
	"github.com/sealpod/sealpod/tests/qemuvm"
)

const volTestDiskSize = 32 << 20

func TestSealedVolume(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU boots")
	}
	if _, err := qemuvm.Available(); err != nil {
		testdeps.Missing(t, "%v", err)
	}
	dir := t.TempDir()
	initBin := bootGoBuild(t, dir, "github.com/sealpod/sealpod/tests/guest/volumeinit", "CGO_ENABLED=0")
	mkguest := bootGoBuild(t, dir, "github.com/sealpod/sealpod/guest-image/cmd/mkguest")
	guestDir := filepath.Join(dir, "guest")
	if b, err := exec.Command(mkguest, "--init", initBin, "--out", guestDir).CombinedOutput(); err != nil {
		t.Fatalf("mkguest: %v\n%s", err, b)
	}
	b, err := bundle.Load(guestDir)
	if err != nil {
		t.Fatal(err)
	}
	disks := volDisks{
		data:    makeSparse(t, filepath.Join(dir, "data.img"), volTestDiskSize),
		block:   makeSparse(t, filepath.Join(dir, "block.img"), volume.MinDeviceSize),
		foreign: makeSparse(t, filepath.Join(dir, "foreign.img"), volume.MinDeviceSize),
		gen:     makeSparse(t, filepath.Join(dir, "gen.img"), volume.MinDeviceSize),
	}
	diskPath := disks.data
	// The foreign disk holds data that is not a sealed volume: an ext2/3/4 superblock magic
	// (0xEF53 at 1080), as a host-formatted PV would.
	writeAt(t, disks.foreign, 1080, []byte{0x53, 0xef})
	foreignBefore, err := os.ReadFile(disks.foreign)
	if err != nil {
		t.Fatal(err)
	}
	canary := "sealpod-canary-" + rand.Text()[:20]

	console := volBoot(t, b, disks, 1, canary, "")
	for _, want := range []string{
		"block without format permission refused: not formatted", "block volume canary ok",
		"foreign disk refused: unknown content",
		"opened formatted=true generation=1", "reopened formatted=false generation=2 canary ok",
		"other ordinal refused: wrong identity", "other namespace refused: wrong identity",
		"other claim refused: wrong identity", "other secret refused: wrong identity",
		"after refusals canary ok", "gen volume formatted generation=1",
		"broker db/state 1 0",
	} {
		if !strings.Contains(console, "sealpod-voltest: "+want) {
			t.Errorf("boot 1: console lacks %q", want)
		}
	}
	brokerState := brokerLines(t, console)
	var cipher []byte
	for _, l := range strings.Split(console, "\n") {
		if rest, ok := strings.CutPrefix(l, "sealpod-voltest: cipher "); ok {
			if cipher, err = hex.DecodeString(strings.TrimSpace(rest)); err != nil || len(cipher) != 32 {
				t.Fatalf("boot 1: bad cipher line %q", l)
			}
		}
	}
	if cipher == nil {
		t.Fatalf("boot 1: no cipher line:\n%s", console)
	}

	if foreign, err := os.ReadFile(disks.foreign); err != nil || !bytes.Equal(foreign, foreignBefore) {
		t.Fatalf("the foreign disk changed (%v)", err)
	}
	blockImg, err := os.ReadFile(disks.block)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(diskPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"data": img, "block": blockImg} {
		if bytes.Contains(b, []byte(canary)) || bytes.Contains(b, []byte(canary[len(canary)-12:])) {
			t.Fatalf("the canary is in the %s backing file in clear", name)
		}
	}
	if strings.Contains(console, canary) {
		t.Fatal("the canary reached the console")
	}
	sb, err := volume.ParseSuperblock(img[:volume.SuperblockSize])
	if err != nil {
		t.Fatalf("kernel-written superblock: %v", err)
	}
	if sb.ProvidedDataSectors == 0 || sb.ProvidedDataSectors*512 >= volTestDiskSize {
		t.Fatalf("superblock provides %d sectors on a %d-byte disk", sb.ProvidedDataSectors, volTestDiskSize)
	}
	t.Logf("dm-integrity superblock: %+v", *sb)
	at := bytes.LastIndex(img, cipher)
	if at < 0 {
		t.Fatalf("reported ciphertext %x not found in the backing file", cipher)
	}
	flipByte(t, diskPath, int64(at+7))
	flipByte(t, disks.block, 50) // in the superblock salt
	blockBefore, err := os.ReadFile(disks.block)
	if err != nil {
		t.Fatal(err)
	}

	// The host keeps a copy of the rollback claim's disk at generation 1, to attach later as
	// an older copy; and adds an empty disk for the same claim.
	genImg, err := os.ReadFile(disks.gen)
	if err != nil {
		t.Fatal(err)
	}
	disks.genOld = filepath.Join(dir, "gen-old.img")
	if err := os.WriteFile(disks.genOld, genImg, 0o600); err != nil {
		t.Fatal(err)
	}
	disks.genEmpty = makeSparse(t, filepath.Join(dir, "gen-empty.img"), volume.MinDeviceSize)

	console = volBoot(t, b, disks, 2, canary, brokerState)
	if !strings.Contains(console, "sealpod-voltest: read error EIO") {
		t.Errorf("boot 2: changed block did not read as EIO")
	}
	for _, want := range []string{
		"gen volume reopened generation=2",
		"crash after begin: next open ok generation=3",
		"crash before commit: next open ok generation=4 committed",
		"older copy refused: rollback (open volume stateold (db/state) on /dev/vd",
		"volume db/state: header generation 1 is older than the broker's committed generation 4",
		"emptied device refused: rollback",
		"gen volume after refusals generation=5",
		"broker db/state 5 0",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("boot 2: console lacks %q", want)
		}
	}
	if empty, err := os.ReadFile(disks.genEmpty); err != nil || !bytes.Equal(empty, make([]byte, volume.MinDeviceSize)) {
		t.Errorf("boot 2: the refused empty disk was written (%v)", err)
	}
	if !strings.Contains(console, "sealpod-voltest: tampered superblock refused") {
		t.Errorf("boot 2: tampered superblock not refused")
	}
	if after, err := os.ReadFile(disks.block); err != nil || !bytes.Equal(after, blockBefore) {
		t.Errorf("boot 2: the refused Block volume changed (%v)", err)
	}
}

// volDisks are the backing files of the test's virtio disks ("" = not attached).
type volDisks struct{ data, block, foreign, gen, genOld, genEmpty string }

// brokerLines turns the guest's "broker <identity> <committed> <pending>" lines into the next
// boot's SEALPOD_VOLTEST_BROKER value.
func brokerLines(t *testing.T, console string) string {
	t.Helper()
	var entries []string
	for _, l := range strings.Split(console, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "sealpod-voltest: broker ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 3 || volume.ValidateIdentity(f[0]) != nil {
			t.Fatalf("bad broker line %q", l)
		}
		entries = append(entries, f[0]+"="+f[1]+":"+f[2])
	}
	if len(entries) == 0 {
		t.Fatal("the guest reported no broker state")
	}
	return strings.Join(entries, ",")
}

func makeSparse(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// volBoot boots the guest with the disks attached (virtio-blk, found in the guest by serial)
// for one scenario step and returns its console; the step must end with "done".
func volBoot(t *testing.T, b *bundle.Bundle, disks volDisks, step int, canary, brokerState string) string {
	t.Helper()
	sockDir, cleanup, err := qemuvm.ShortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 4*bootTimeout)
	defer cancel()
	cfg := qemuvm.SimConfig(b, sockDir)
	cfg.Guest.Cmdline += " SEALPOD_VOLTEST_STEP=" + string(rune('0'+step)) + " SEALPOD_VOLTEST_CANARY=" + canary
	if brokerState != "" {
		cfg.Guest.Cmdline += " SEALPOD_VOLTEST_BROKER=" + brokerState
	}
	for i, d := range []struct{ path, serial string }{
		{disks.data, "voldata"}, {disks.block, "volblock"}, {disks.foreign, "volforeign"},
		{disks.gen, "volgen"}, {disks.genOld, "volgenold"}, {disks.genEmpty, "volgenempty"},
	} {
		if d.path == "" {
			continue
		}
		id := "vol" + string(rune('0'+i))
		cfg.ExtraArgs = append(cfg.ExtraArgs,
			"-drive", "file="+d.path+",format=raw,if=none,id="+id,
			"-device", "virtio-blk-pci,drive="+id+",serial="+d.serial)
	}
	start := time.Now()
	vm := qemuvm.StartT(t, ctx, cfg)
	line, err := vm.WaitMatch(ctx, "done or FAIL", func(l string) bool {
		return l == "sealpod-voltest: done" || strings.HasPrefix(l, "sealpod-voltest: FAIL")
	})
	if err != nil {
		t.Fatal(err)
	}
	if line != "sealpod-voltest: done" {
		t.Fatalf("boot %d: %s\n%s", step, line, vm.Console())
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("boot %d: guest did not power off cleanly: %v", step, err)
	}
	for _, l := range vm.Lines() {
		if strings.HasPrefix(l, "sealpod-voltest: ") {
			t.Logf("boot %d: %s", step, l)
		}
	}
	t.Logf("boot %d took %s", step, time.Since(start).Round(time.Second))
	return vm.Console()
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b := make([]byte, 1)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	writeAt(t, path, off, []byte{b[0] ^ 0x01})
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
