package snp

import (
	"encoding/binary"
	mrand "math/rand"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/api"
)

func TestTmpHang(t *testing.T) {
	s := librarySigner(t)
	table, _ := s.CertTableBytes()
	var zero fields
	rep := rawReport(t, zero, s.Keys.Vcek)
	r := mrand.New(mrand.NewSource(time.Now().UnixNano()))
	for i := 0; i < 200000; i++ {
		a := append([]byte(nil), rep...)
		b := append([]byte(nil), table...)
		for j := 0; j < 4; j++ {
			switch r.Intn(4) {
			case 0:
				a[r.Intn(len(a))] = byte(r.Intn(256))
			case 1:
				if len(b) > 4 {
					binary.LittleEndian.PutUint32(b[r.Intn(len(b)-4):], r.Uint32())
				}
			case 2:
				b = b[:r.Intn(len(b)+1)]
			case 3:
				binary.LittleEndian.PutUint32(a[r.Intn(len(a)-4):], r.Uint32())
			}
		}
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
				os.Exit(3)
			}
		}()
		Parse(&api.SNPEvidence{Report: a, CertTable: b})
		close(done)
	}
}
