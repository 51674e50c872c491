// Command volumeinit is a test-only static /init for the sealed-volume guest test
// (tests/guest/volume_test.go): it links agent/volume and runs one step of the scenario on the
// virtio disks the test attaches (found by serial: voldata, volblock, volforeign), then powers
// the VM off. Build it with CGO_ENABLED=0.
//
// Environment (the kernel passes unknown name=value cmdline words to init):
//
//	SEALPOD_VOLTEST_STEP=1|2
//	SEALPOD_VOLTEST_CANARY=<token>  ([A-Za-z0-9-], 16..64 bytes)
//
// Step 1: first use formats and mounts; a file of the canary token is written; close; reopen
// reads it back; the ciphertext of the file's first sector is reported (read below dm-crypt,
// from the dm-integrity device: the host then finds and changes it in the backing file);
// opening with another ordinal, namespace, claim or secret is refused as a wrong identity, and
// the right identity still reads the canary afterwards (a refusal never reformats). On
// volblock (empty): an open without format permission is ErrNotFormatted; with it, a block
// volume (volumeMode Block) is formatted, written, closed, reopened and read. On volforeign
// (data the host wrote, not a volume): open is ErrUnknownContent and nothing is written.
// Step 2 (after the host changed one byte of the file's ciphertext on voldata and one byte of
// volblock's dm-integrity superblock): voldata opens and reading the file fails with EIO;
// volblock is refused (superblock MAC) and not reformatted.
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

var id = volume.ClaimID{Namespace: "db", Claim: "data", Ordinal: 0}

func opts() volume.Options {
	return volume.Options{Name: "data", MountPoint: mnt, AllowFormat: true}
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
	if disk, err = diskBySerial("voldata"); err != nil {
		return err
	}
	switch os.Getenv("SEALPOD_VOLTEST_STEP") {
	case "1":
		if err := step1(ctx, content, canary); err != nil {
			return err
		}
		return otherDisks(ctx, content)
	case "2":
		return step2(ctx, content)
	}
	return errors.New("SEALPOD_VOLTEST_STEP must be 1 or 2")
}

func step1(ctx context.Context, content []byte, canary string) error {
	start := time.Now()
	v, err := volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return err
	}
	say("opened formatted=%v sectors=%d in %s", v.Formatted, v.Sectors, time.Since(start).Round(time.Millisecond))
	if !v.Formatted {
		return errors.New("first open of an empty disk did not format")
	}
	if err := writeSync(filepath.Join(v.Path, "canary"), content); err != nil {
		return errors.Join(err, v.Close())
	}
	if err := v.Close(); err != nil {
		return err
	}

	v, err = volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	got, err := os.ReadFile(filepath.Join(v.Path, "canary"))
	if err != nil || !bytes.Equal(got, content) {
		return errors.Join(fmt.Errorf("reopen: canary read back wrong (%d bytes, %v)", len(got), err), v.Close())
	}
	say("reopened formatted=%v canary ok", v.Formatted)
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
		id     volume.ClaimID
	}{
		{"ordinal", secret(1), volume.ClaimID{Namespace: "db", Claim: "data", Ordinal: 1}},
		{"namespace", secret(1), volume.ClaimID{Namespace: "db2", Claim: "data", Ordinal: 0}},
		{"claim", secret(1), volume.ClaimID{Namespace: "db", Claim: "logs", Ordinal: 0}},
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
	got, err = os.ReadFile(filepath.Join(v.Path, "canary"))
	if err != nil || !bytes.Equal(got, content) || v.Formatted {
		return errors.Join(fmt.Errorf("after refusals: canary read back wrong (formatted=%v, %v)", v.Formatted, err), v.Close())
	}
	say("after refusals canary ok")
	return v.Close()
}

func step2(ctx context.Context, content []byte) error {
	blk, err := diskBySerial("volblock")
	if err != nil {
		return err
	}
	bid := volume.ClaimID{Namespace: "db", Claim: "raw", Ordinal: volume.NoOrdinal}
	if _, err := volume.Open(ctx, blk, secret(1), bid, volume.Options{Name: "raw", Mode: volume.ModeBlock, AllowFormat: true}); !errors.Is(err, volume.ErrWrongIdentity) {
		return fmt.Errorf("tampered superblock: want ErrWrongIdentity, got %v", err)
	}
	say("tampered superblock refused")
	v, err := volume.Open(ctx, disk, secret(1), id, opts())
	if err != nil {
		return err
	}
	defer v.Close()
	got, err := os.ReadFile(filepath.Join(v.Path, "canary"))
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
	blk, err := diskBySerial("volblock")
	if err != nil {
		return err
	}
	bid := volume.ClaimID{Namespace: "db", Claim: "raw", Ordinal: volume.NoOrdinal}
	bopts := volume.Options{Name: "raw", Mode: volume.ModeBlock}
	if _, err := volume.Open(ctx, blk, secret(1), bid, bopts); !errors.Is(err, volume.ErrNotFormatted) {
		return fmt.Errorf("empty disk without format permission: want ErrNotFormatted, got %v", err)
	}
	say("block without format permission refused: not formatted")
	bopts.AllowFormat = true
	v, err := volume.Open(ctx, blk, secret(1), bid, bopts)
	if err != nil {
		return fmt.Errorf("block volume: %w", err)
	}
	if !v.Formatted || v.Path != v.Device {
		return errors.Join(fmt.Errorf("block volume: formatted=%v path %s device %s", v.Formatted, v.Path, v.Device), v.Close())
	}
	const at = 1 << 20
	if err := writeAtSync(v.Path, content, at); err != nil {
		return errors.Join(err, v.Close())
	}
	if err := v.Close(); err != nil {
		return err
	}
	if v, err = volume.Open(ctx, blk, secret(1), bid, bopts); err != nil {
		return fmt.Errorf("block volume reopen: %w", err)
	}
	got := make([]byte, len(content))
	f, err := os.Open(v.Path)
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

	foreign, err := diskBySerial("volforeign")
	if err != nil {
		return err
	}
	if _, err := volume.Open(ctx, foreign, secret(1), id, volume.Options{Name: "foreign", MountPoint: "/run/vol/foreign", AllowFormat: true}); !errors.Is(err, volume.ErrUnknownContent) {
		return fmt.Errorf("foreign disk: want ErrUnknownContent, got %v", err)
	}
	say("foreign disk refused: unknown content")
	return nil
}

// diskBySerial finds the virtio disk whose serial the test set (/sys/block/vd*/serial).
func diskBySerial(serial string) (string, error) {
	files, _ := filepath.Glob("/sys/block/vd*/serial")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == serial {
			return "/dev/" + filepath.Base(filepath.Dir(f)), nil
		}
	}
	return "", fmt.Errorf("no virtio disk with serial %s", serial)
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

// cipherOfCanary finds the first sector of the decrypted device that starts with the canary
// and returns the first 32 bytes of the same sector on the dm-integrity device below dm-crypt:
// the ciphertext as stored in the backing file.
func cipherOfCanary(cryptDev, canary string) ([]byte, error) {
	plain, err := os.ReadFile(cryptDev)
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
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
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
