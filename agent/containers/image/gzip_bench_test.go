package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BenchmarkGunzip compares the layer decompressor (decompress: klauspost's gzip) with
// compress/gzip on the same 8 MiB of half-compressible data; the ratio of the two ns/op is
// the speed-up (1.4x on a 14 MB Go binary natively, 2026-12-06).
func BenchmarkGunzip(b *testing.B) {
	raw := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range raw {
		if i%2 == 0 {
			raw[i] = byte(rng.IntN(256))
		} else {
			raw[i] = byte(i >> 10)
		}
	}
	gz := gzipped(b, raw)
	b.Run("layer-decompressor", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			r, _, done, err := decompress(bufio.NewReader(bytes.NewReader(gz)))
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(raw)) {
				b.Fatalf("%d bytes, %v", n, err)
			}
			done()
		}
	})
	b.Run("compress-gzip", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			r, err := stdgzip.NewReader(bytes.NewReader(gz))
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(raw)) {
				b.Fatalf("%d bytes, %v", n, err)
			}
		}
	})
}

// BenchmarkApplyLayer streams one gzip layer through applyLayer as Unpack does (digest
// check, decompression, extraction into a fresh directory): the test binary itself as the
// layer's one file, as a Go workload's image holds one. Under emulation it shows what a
// pod's unpack costs per MiB (run the test binary under qemu-x86_64 -cpu max).
func BenchmarkApplyLayer(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	body, err := os.ReadFile(exe)
	if err != nil {
		b.Fatal(err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		b.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	gz := gzipped(b, tb.Bytes())
	want := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(gz))}
	diffID := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(tb.Bytes()))}
	b.SetBytes(int64(tb.Len()))
	for b.Loop() {
		b.StopTimer()
		a, err := newApplier(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := applyLayer(a, fetched{rc: io.NopCloser(bytes.NewReader(gz))}, want, diffID); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		a.Close()
		b.StartTimer()
	}
}
