package vsock

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// TestListenClose binds a vsock port and checks that Close interrupts a blocked Accept. (No
// data path here: the CI host has no vsock transport; the guest suite uses virtio-serial.)
func TestListenClose(t *testing.T) {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		testdeps.Missing(t, "no /dev/vsock on this machine")
	}
	l, err := Listen(0)
	if err != nil {
		testdeps.Missing(t, "vsock not usable here: %v", err)
	}
	if a := l.Addr().(Addr); a.Port == 0 || a.Network() != "vsock" {
		t.Fatalf("bound address %v", a)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt Accept")
	}
}
