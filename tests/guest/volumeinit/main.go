// Command volumeinit is a test-only static /init for the sealed-volume guest test
// (tests/guest/volume_test.go): it links agent/volume and runs one step of the scenario on the
// virtio disks the test attaches (found by serial: voldata, volblock, volforeign, volgen, and
// in step 2 volgenold and volgenempty), then powers the VM off. Build it with CGO_ENABLED=0.
//
// Environment (the kernel passes unknown name=value cmdline words to init):
//
//	SEALPOD_VOLTEST_STEP=1|2
//	SEALPOD_VOLTEST_CANARY=<token>  ([A-Za-z0-9-], 16..64 bytes)
//	SEALPOD_VOLTEST_BROKER=<identity>=<committed>:<pending>,...  (step 2: the broker's state
//	                                 as step 1 left it; the test plays the broker between boots)
//
// The broker's generations are an in-memory fake (memBroker, the kbs protocol: Begin keeps one
// pending generation until Commit); each step ends by printing its state ("broker <identity>
// <committed> <pending>") for the next boot.
//
// Step 1: first use formats and mounts; a file of the canary token is written; close; reopen
// reads it back; the ciphertext of the file's first sector is reported (read below dm-crypt,
// from the dm-integrity device: the host then finds and changes it in the backing file);
// opening with another ordinal, namespace, claim or secret is refused as a wrong identity, and
// the right identity still reads the canary afterwards (a refusal never reformats). On
// volblock (empty): an open without format permission is ErrNotFormatted; with it, a block
// volume (volumeMode Block) is formatted, written, closed, reopened and read. On volforeign
// (data the host wrote, not a volume): open is ErrUnknownContent and nothing is written.
// On volgen: first use at generation 1 (the host then keeps a copy of the backing file).
// Step 2 (after the host changed one byte of the file's ciphertext on voldata and one byte of
// volblock's dm-integrity superblock): voldata opens and reading the file fails with EIO;
// volblock is refused (superblock MAC) and not reformatted. volgen reopens at generation 2;
// a crash after Begin (no header write) and a crash after the header write (no Commit) both
// leave a volume that the next open accepts and commits; volgenold (the host's copy at
// generation 1, attached under the same claim) and volgenempty (an empty disk for the same
// claim) are refused with ErrRollback; volgen still opens afterwards.
//
// Console lines (all prefixed "sealpod-voltest: "): step-specific lines, then "done", or
// "FAIL <error>". The canary token and keys never go to the console.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/internal/guestinit"

	"github.com/sealpod/sealpod/agent/volume"
)

const (
	prefix = "sealpod-voltest: "
	mnt    = "/run/vol/data"
	// canaryRepeat makes the file span several sectors.
	canaryRepeat = 2048
)

var canaryRE = regexp.MustCompile(`^[A-Za-z0-9-]{16,64}$`)

// The test secret: fixed, test-only (production secrets come from the broker).
func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// disk is the voldata disk's node.
var disk string

// Claim identities ("<namespace>/<claim>"): a StatefulSet claim (template data, set db,
// ordinal 0), a plain PVC for the Block volume, and the rollback scenario's claim.
const (
	id      = "db/data-db-0"
	blockID = "db/raw"
	genID   = "db/state"
)

// broker is this boot's fake of the broker's generations.
var broker = &memBroker{}

func opts() volume.Options {
	return volume.Options{Name: "data", MountPoint: mnt, AllowFormat: true, Generations: broker}
}

var say = guestinit.Console(prefix).Say

func main() { guestinit.Console(prefix).Main(run) }

func run() error {
	if err := guestinit.MountEarly(unix.MS_NOSUID | unix.MS_NOEXEC); err != nil {
		return err
	}
	canary := os.Getenv("SEALPOD_VOLTEST_CANARY")
	if !canaryRE.MatchString(canary) {
		return errors.New("SEALPOD_VOLTEST_CANARY missing or malformed")
	}
	content := bytes.Repeat([]byte(canary), canaryRepeat)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var err error
	if disk, err = guestinit.DiskBySerial("voldata"); err != nil {
		return err
	}
	if err := broker.parse(os.Getenv("SEALPOD_VOLTEST_BROKER")); err != nil {
		return err
	}
	switch os.Getenv("SEALPOD_VOLTEST_STEP") {
	case "1":
		if err := step1(ctx, content, canary); err != nil {
			return err
		}
		if err := otherDisks(ctx, content); err != nil {
			return err
		}
		err = genStep1(ctx)
	case "2":
		if err := step2(ctx, content); err != nil {
			return err
		}
		err = genStep2(ctx)
	default:
		return errors.New("SEALPOD_VOLTEST_STEP must be 1 or 2")
	}
	if err != nil {
		return err
	}
	broker.report()
	return nil
}

func step1(ctx context.Context, content []byte, canary string) error {
	start := time.Now()
	v, err := volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return err
	}
	say("opened formatted=%v generation=%d sectors=%d in %s", v.Formatted, v.Generation, v.Sectors, time.Since(start).Round(time.Millisecond))
	if !v.Formatted || v.Generation != 1 {
		return errors.Join(fmt.Errorf("first open of an empty disk: formatted=%v generation %d", v.Formatted, v.Generation), v.Close())
	}
	if err := writeSync(filepath.Join(v.MountPoint, "canary"), content); err != nil {
		return errors.Join(err, v.Close())
	}
	if err := v.Close(); err != nil {
		return err
	}

	v, err = volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	got, err := os.ReadFile(filepath.Join(v.MountPoint, "canary"))
	if err != nil || !bytes.Equal(got, content) || v.Generation != 2 {
		return errors.Join(fmt.Errorf("reopen: generation %d, canary read back wrong (%d bytes, %v)", v.Generation, len(got), err), v.Close())
	}
	say("reopened formatted=%v generation=%d canary ok", v.Formatted, v.Generation)
	cipher, err := cipherOfCanary(v.Device, canary)
	if err != nil {
		return errors.Join(err, v.Close())
	}
	say("cipher %s", hex.EncodeToString(cipher))
	if err := v.Close(); err != nil {
		return err
	}

	for _, c := range []struct {
		name   string
		secret []byte
		id     string
	}{
		{"ordinal", secret(1), "db/data-db-1"},
		{"namespace", secret(1), "db2/data-db-0"},
		{"claim", secret(1), "db/logs-db-0"},
		{"secret", secret(2), id},
	} {
		v, err := volume.Open(ctx, disk, c.secret, c.id, opts())
		if err == nil {
			return errors.Join(fmt.Errorf("other %s: volume opened", c.name), v.Close())
		}
		if !errors.Is(err, volume.ErrWrongIdentity) {
			return fmt.Errorf("other %s: want ErrWrongIdentity, got %w", c.name, err)
		}
		say("other %s refused: wrong identity", c.name)
	}
	// The refusals did not reformat: the right identity still reads the canary.
	v, err = volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return fmt.Errorf("open after refusals: %w", err)
	}
	got, err = os.ReadFile(filepath.Join(v.MountPoint, "canary"))
	if err != nil || !bytes.Equal(got, content) || v.Formatted {
		return errors.Join(fmt.Errorf("after refusals: canary read back wrong (formatted=%v, %v)", v.Formatted, err), v.Close())
	}
	say("after refusals canary ok")
	return v.Close()
}

func step2(ctx context.Context, content []byte) error {
	blk, err := guestinit.DiskBySerial("volblock")
	if err != nil {
		return err
	}
	if _, err := volume.Open(ctx, blk, secret(1), blockID, volume.Options{Name: "raw", Mode: volume.ModeBlock, AllowFormat: true, Generations: broker}); !errors.Is(err, volume.ErrWrongIdentity) {
		return fmt.Errorf("tampered superblock: want ErrWrongIdentity, got %v", err)
	}
	say("tampered superblock refused")
	v, err := volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return err
	}
	defer v.Close()
	got, err := os.ReadFile(filepath.Join(v.MountPoint, "canary"))
	switch {
	case errors.Is(err, syscall.EIO):
		say("read error EIO")
		return nil
	case err != nil:
		return fmt.Errorf("read: want EIO, got %w", err)
	case bytes.Equal(got, content):
		return errors.New("changed ciphertext read back as the original data")
	default:
		return errors.New("changed ciphertext read back as different data")
	}
}

func otherDisks(ctx context.Context, content []byte) error {
	blk, err := guestinit.DiskBySerial("volblock")
	if err != nil {
		return err
	}
	bopts := volume.Options{Name: "raw", Mode: volume.ModeBlock, Generations: broker}
	if _, err := volume.Open(ctx, blk, secret(1), blockID, bopts); !errors.Is(err, volume.ErrNotFormatted) {
		return fmt.Errorf("empty disk without format permission: want ErrNotFormatted, got %v", err)
	}
	say("block without format permission refused: not formatted")
	bopts.AllowFormat = true
	v, err := volume.Open(ctx, blk, secret(1), blockID, bopts)
	if err != nil {
		return fmt.Errorf("block volume: %w", err)
	}
	size, err := deviceSize(v.Device)
	if err != nil || !v.Formatted || v.MountPoint != "" || size != int64(v.Sectors)*512 {
		return errors.Join(fmt.Errorf("block volume: formatted=%v mount point %q, %d sectors, device %d bytes (%v)", v.Formatted, v.MountPoint, v.Sectors, size, err), v.Close())
	}
	const at = 1 << 20
	if err := writeAtSync(v.Device, content, at); err != nil {
		return errors.Join(err, v.Close())
	}
	if err := v.Close(); err != nil {
		return err
	}
	if v, err = volume.Open(ctx, blk, secret(1), blockID, bopts); err != nil {
		return fmt.Errorf("block volume reopen: %w", err)
	}
	got := make([]byte, len(content))
	f, err := os.Open(v.Device)
	if err == nil {
		_, err = f.ReadAt(got, at)
		f.Close()
	}
	if err != nil || v.Formatted || !bytes.Equal(got, content) {
		return errors.Join(fmt.Errorf("block volume reopen: formatted=%v, canary wrong (%v)", v.Formatted, err), v.Close())
	}
	if err := v.Close(); err != nil {
		return err
	}
	say("block volume canary ok")

	foreign, err := guestinit.DiskBySerial("volforeign")
	if err != nil {
		return err
	}
	if _, err := volume.Open(ctx, foreign, secret(1), id, volume.Options{Name: "foreign", MountPoint: "/run/vol/foreign", AllowFormat: true, Generations: broker}); !errors.Is(err, volume.ErrUnknownContent) {
		return fmt.Errorf("foreign disk: want ErrUnknownContent, got %v", err)
	}
	say("foreign disk refused: unknown content")
	return nil
}

// deviceSize is a block device's size in bytes.
func deviceSize(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, 2)
}

func writeAtSync(p string, b []byte, off int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cipherOfCanary finds the first sector of the user device that starts with the canary and
// returns the first 32 bytes of the same sector on the dm-integrity device below dm-crypt
// (HeaderSize further on: the user device starts after the volume header): the ciphertext as
// stored in the backing file.
func cipherOfCanary(userDev, canary string) ([]byte, error) {
	plain, err := os.ReadFile(userDev)
	if err != nil {
		return nil, err
	}
	off := -1
	for i := 0; i+len(canary) <= len(plain); i += 512 {
		if bytes.HasPrefix(plain[i:], []byte(canary)) {
			off = i
			break
		}
	}
	if off < 0 {
		return nil, errors.New("canary not found on the decrypted device")
	}
	integ, err := dmNode("sealpod-data-integrity")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(integ, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := aligned(512)
	if _, err := f.ReadAt(buf, int64(off)+volume.HeaderSize); err != nil {
		return nil, fmt.Errorf("read %s: %w", integ, err)
	}
	return append([]byte(nil), buf[:32]...), nil
}

// dmNode finds /dev/dm-N of the device-mapper device with the given name.
func dmNode(name string) (string, error) {
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(n))), nil
		}
	}
	return "", fmt.Errorf("no device-mapper device %s", name)
}

func aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := (4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)) % 4096
	return b[off : off+n]
}

// memBroker is the broker's generation protocol in memory (kbs volume begin/commit): Begin
// keeps one pending generation per identity until Commit(pending). crashAfterBegin and
// crashBeforeCommit make the next Begin or Commit for that identity fail as a crash would
// (Begin after recording the pending generation; Commit without committing).
type memBroker struct {
	gens                               map[string]*[2]uint64 // committed, pending (0 = none)
	crashAfterBegin, crashBeforeCommit string
}

var errCrash = errors.New("simulated crash")

func (b *memBroker) get(identity string) *[2]uint64 {
	if b.gens == nil {
		b.gens = map[string]*[2]uint64{}
	}
	g := b.gens[identity]
	if g == nil {
		g = &[2]uint64{}
		b.gens[identity] = g
	}
	return g
}

func (b *memBroker) Begin(_ context.Context, identity string) (uint64, uint64, error) {
	g := b.get(identity)
	if g[1] == 0 {
		g[1] = g[0] + 1
	}
	if b.crashAfterBegin == identity {
		b.crashAfterBegin = ""
		return 0, 0, errCrash
	}
	return g[0], g[1], nil
}

func (b *memBroker) Commit(_ context.Context, identity string, gen uint64) error {
	if b.crashBeforeCommit == identity {
		b.crashBeforeCommit = ""
		return errCrash
	}
	g := b.get(identity)
	if gen != g[1] {
		return fmt.Errorf("commit %d: pending is %d", gen, g[1])
	}
	g[0], g[1] = gen, 0
	return nil
}

// parse reads SEALPOD_VOLTEST_BROKER: <identity>=<committed>:<pending>, comma-separated.
func (b *memBroker) parse(s string) error {
	if s == "" {
		return nil
	}
	for e := range strings.SplitSeq(s, ",") {
		idn, gens, ok1 := strings.Cut(e, "=")
		cs, ps, ok2 := strings.Cut(gens, ":")
		c, err1 := strconv.ParseUint(cs, 10, 64)
		p, err2 := strconv.ParseUint(ps, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil || volume.ValidateIdentity(idn) != nil {
			return fmt.Errorf("SEALPOD_VOLTEST_BROKER: bad entry %q", e)
		}
		*b.get(idn) = [2]uint64{c, p}
	}
	return nil
}

// report prints the broker's state for the next boot.
func (b *memBroker) report() {
	ids := make([]string, 0, len(b.gens))
	for k := range b.gens {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	for _, k := range ids {
		say("broker %s %d %d", k, b.gens[k][0], b.gens[k][1])
	}
}

func genOpts(name string) volume.Options {
	return volume.Options{Name: name, MountPoint: "/run/vol/" + name, AllowFormat: true, Generations: broker}
}

// genOpen opens the disk with serial under genID and checks its generation and that the
// files in want are there; then it writes file add (if set) and closes.
func genOpen(ctx context.Context, serial, name string, gen uint64, want []string, add string) error {
	dev, err := guestinit.DiskBySerial(serial)
	if err != nil {
		return err
	}
	v, err := volume.Open(ctx, dev, secret(1), genID, genOpts(name))
	if err != nil {
		return err
	}
	if v.Generation != gen {
		return errors.Join(fmt.Errorf("%s: generation %d, want %d", serial, v.Generation, gen), v.Close())
	}
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(v.MountPoint, f)); err != nil {
			return errors.Join(fmt.Errorf("%s at generation %d: %w", serial, gen, err), v.Close())
		}
	}
	if add != "" {
		if err := writeSync(filepath.Join(v.MountPoint, add), []byte(add)); err != nil {
			return errors.Join(err, v.Close())
		}
	}
	return v.Close()
}

func genStep1(ctx context.Context) error {
	if err := genOpen(ctx, "volgen", "state", 1, nil, "gen1"); err != nil {
		return fmt.Errorf("gen volume first use: %w", err)
	}
	say("gen volume formatted generation=1")
	return nil
}

func genStep2(ctx context.Context) error {
	if err := genOpen(ctx, "volgen", "state", 2, []string{"gen1"}, "gen2"); err != nil {
		return fmt.Errorf("gen volume reopen: %w", err)
	}
	say("gen volume reopened generation=2")

	broker.crashAfterBegin = genID
	if err := genOpen(ctx, "volgen", "state", 0, nil, ""); !errors.Is(err, errCrash) {
		return fmt.Errorf("crash after begin: want the simulated crash, got %v", err)
	}
	if err := genOpen(ctx, "volgen", "state", 3, []string{"gen2"}, ""); err != nil {
		return fmt.Errorf("open after a crash after begin: %w", err)
	}
	say("crash after begin: next open ok generation=3")

	broker.crashBeforeCommit = genID
	if err := genOpen(ctx, "volgen", "state", 0, nil, ""); !errors.Is(err, errCrash) {
		return fmt.Errorf("crash before commit: want the simulated crash, got %v", err)
	}
	if g := broker.get(genID); g[0] != 3 || g[1] != 4 {
		return fmt.Errorf("crash before commit: broker at %d pending %d, want 3 pending 4", g[0], g[1])
	}
	if err := genOpen(ctx, "volgen", "state", 4, []string{"gen2"}, ""); err != nil {
		return fmt.Errorf("open after a crash before commit: %w", err)
	}
	if g := broker.get(genID); g[0] != 4 {
		return fmt.Errorf("open after a crash before commit: broker committed %d, want 4", g[0])
	}
	say("crash before commit: next open ok generation=4 committed")

	err := genOpen(ctx, "volgenold", "stateold", 0, nil, "")
	if !errors.Is(err, volume.ErrRollback) || !strings.Contains(err.Error(), "volume "+genID+": header generation 1 is older than the broker's committed generation 4") {
		return fmt.Errorf("older copy: want ErrRollback naming the claim, 1 and 4, got %v", err)
	}
	say("older copy refused: rollback (%s)", err)
	err = genOpen(ctx, "volgenempty", "stateempty", 0, nil, "")
	if !errors.Is(err, volume.ErrRollback) || !strings.Contains(err.Error(), "committed generation is 4") {
		return fmt.Errorf("emptied device: want ErrRollback, got %v", err)
	}
	say("emptied device refused: rollback")
	if err := genOpen(ctx, "volgen", "state", 5, []string{"gen1", "gen2"}, ""); err != nil {
		return fmt.Errorf("gen volume after refusals: %w", err)
	}
	say("gen volume after refusals generation=5")
	return nil
}
