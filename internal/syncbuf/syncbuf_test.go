package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers and readers at once lose no write (run with -race to check the locking too).
func TestConcurrentWriteAndString(t *testing.T) {
	const writers, lines = 4, 200
	var b Buffer
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				if n, err := b.Write([]byte("line\n")); n != 5 || err != nil {
					t.Errorf("Write = %d, %v", n, err)
				}
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != writers*lines {
		t.Errorf("%d lines, want %d", got, writers*lines)
	}
}
