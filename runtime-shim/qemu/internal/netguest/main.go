// Command netguest is a tiny static /init for runtime-shim/qemu's network boot test: it
// mounts /proc, /sys and /dev, loads the initrd's kernel modules (agent/kmod), applies the
// guest network configuration the host computed (runtime-shim/netns → agent/netconfig.Apply,
// the agent's own code), opens a TCP connection to a peer, sends a line, prints the answer on
// the console and powers the VM off. Build it with CGO_ENABLED=0.
//
// Environment (unknown name=value words of the kernel command line):
//
//	SEALPOD_NET   the api.NetworkConfig, protobuf, base64 (URL alphabet, no padding)
//	SEALPOD_PEER  host:port to connect to
//
// Console lines, prefixed "sealpod-netguest: ": "network applied", "got <line>", "done", or
// "FAIL <error>".
package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealpod/sealpod/internal/guestinit"
	"google.golang.org/protobuf/proto"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/kmod"
	"github.com/sealpod/sealpod/agent/netconfig"
)

const prefix = "sealpod-netguest: "

var say = guestinit.Console(prefix).Say

func main() { guestinit.Console(prefix).Main(run) }

func run() error {
	if err := guestinit.MountEarly(unix.MS_NOSUID); err != nil {
		return err
	}
	dir, err := kmod.DefaultDir()
	if err != nil {
		return err
	}
	if _, err := kmod.LoadAll(dir); err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(os.Getenv("SEALPOD_NET"))
	if err != nil {
		return fmt.Errorf("SEALPOD_NET: %w", err)
	}
	cfg := &api.NetworkConfig{}
	if err := proto.Unmarshal(raw, cfg); err != nil {
		return fmt.Errorf("SEALPOD_NET: %w", err)
	}
	os.MkdirAll("/etc", 0o755)
	if err := netconfig.Apply(cfg, "/etc"); err != nil {
		return err
	}
	say("network applied")
	var conn net.Conn
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err = net.DialTimeout("tcp", os.Getenv("SEALPOD_PEER"), 5*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dial %s: %w", os.Getenv("SEALPOD_PEER"), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(conn, "hello from %s\n", conn.LocalAddr()); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	say("got %s", strings.TrimSpace(line))
	return nil
}
