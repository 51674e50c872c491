// Package etcdtest starts a real single-member etcd server (the Debian etcd-server binary)
// for tests, on 127.0.0.1 random ports with its data in t.TempDir().
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/internal/testdeps"
)

// Binary is where Debian's etcd-server package installs etcd.
const Binary = "/usr/bin/etcd"

func binary() string {
	if p := os.Getenv("SEALPOD_ETCD_BINARY"); p != "" {
		return p
	}
	if _, err := os.Stat(Binary); err == nil {
		return Binary
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts etcd and returns its client endpoint ("127.0.0.1:port"). It skips the test
// only when no etcd binary is installed (apt-get install -y etcd-server). The server is
// stopped when the test ends.
func Start(t *testing.T) string {
	t.Helper()
	bin := binary()
	if bin == "" {
		testdeps.Missing(t, "etcd binary not found (install it: apt-get install -y etcd-server; or set SEALPOD_ETCD_BINARY)")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ep, err := start(t, bin)
		if err == nil {
			return ep
		}
		lastErr = err
	}
	t.Fatalf("start etcd: %v", lastErr)
	return ""
}

func start(t *testing.T, bin string) (string, error) {
	cport, pport := freePort(t), freePort(t)
	client := fmt.Sprintf("http://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin,
		"--name", "sealpod-test",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "sealpod-test="+peer,
		"--initial-cluster-state", "new",
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Logf("etcd exited after SIGTERM: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Logf("etcd ignored SIGTERM for 10s, killed: %v", <-exited)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Cleanup(stop)
				return strings.TrimPrefix(client, "http://"), nil
			}
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("etcd exited: %v\n%s", err, log)
		case <-ctx.Done():
			stop()
			log, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("etcd not healthy within 20s\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
