package shim

import (
	"fmt"
	"os"
	"sync"
)

// consoleKeep is how much guest console output the shim keeps on the node, across the
// current log and the one before it.
const consoleKeep = 1 << 20

// consoleLog is the guest console in the state directory (tmpfs on most nodes), bounded: it
// writes path until it holds half of keep, then moves it to path.1 (replacing the older half)
// and starts again, so at most keep bytes are on disk and the newest output is kept. What is
// dropped is counted, and each new file starts with the count so far.
type consoleLog struct {
	path string
	half int64

	mu      sync.Mutex
	f       *os.File
	size    int64
	dropped int64
}

func openConsoleLog(path string, keep int64) (*consoleLog, error) {
	c := &consoleLog{path: path, half: keep / 2}
	_ = os.Remove(path + ".1")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console log %s: %w", path, err)
	}
	c.f = f
	return c, nil
}

// Write never fails for the caller (QEMU's output must keep being drained); bytes that do not
// fit are dropped and counted.
func (c *consoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := int64(len(p))
	if c.f == nil {
		c.dropped += n
		return len(p), nil
	}
	if c.size+n > c.half {
		c.rotate()
	}
	if room := c.half - c.size; n > room { // one write larger than a half: keep its end
		c.dropped += n - room
		p = p[n-room:]
	}
	if c.f != nil {
		w, _ := c.f.Write(p)
		c.size += int64(w)
		c.dropped += int64(len(p) - w)
	}
	return int(n), nil
}

// rotate moves the current file to path.1, dropping the previous path.1 (caller holds mu).
func (c *consoleLog) rotate() {
	if st, err := os.Stat(c.path + ".1"); err == nil {
		c.dropped += st.Size()
	}
	c.f.Close()
	c.f = nil
	if err := os.Rename(c.path, c.path+".1"); err != nil {
		return // c.f stays nil: the rest is dropped and counted
	}
	f, err := os.OpenFile(c.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	c.f, c.size = f, 0
	if c.dropped > 0 {
		w, _ := fmt.Fprintf(f, "sealpod: console log rotated, %d bytes of earlier output dropped (%d kept at most)\n", c.dropped, 2*c.half)
		c.size += int64(w)
	}
}

// Dropped is the number of console bytes dropped so far.
func (c *consoleLog) Dropped() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

func (c *consoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}
