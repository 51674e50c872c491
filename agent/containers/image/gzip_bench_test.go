package image

import (
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"math/rand/v2"
	"testing"
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
	var buf bytes.Buffer
	w := stdgzip.NewWriter(&buf)
	if _, err := w.Write(raw); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	gz := buf.Bytes()
	b.Run("layer-decompressor", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			r, done, err := decompress(bufio.NewReader(bytes.NewReader(gz)))
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
