package registry_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealpod/sealpod/kbs/audit"
	"github.com/sealpod/sealpod/kbs/registry"
	"github.com/sealpod/sealpod/kbs/store"
	"github.com/sealpod/sealpod/kbs/store/bolt"
)

const crashChildEnv = "SEALPOD_KBS_CRASH_CHILD"

var crashStoreKey = bytes.Repeat([]byte{9}, store.KeySize)

// TestCrashChild is the child process of TestCrashSafety: it registers workloads from
// several goroutines forever, printing "ACK <id>" once each Put has returned.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("child process of TestCrashSafety only")
	}
	keyDER, err := os.ReadFile(filepath.Join(dir, "signer.der"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(dir, "kbs.db"), crashStoreKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(st, k)
	log := audit.New(st)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("w-%d-%d", g, i)
				if _, err := reg.Put(ctx, validWorkload(id), "crash-test"); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(3)
				}
				if err := log.Append(ctx, audit.Event{Kind: audit.KindAdmin, Workload: id, Result: audit.ResultOK}); err != nil {
					fmt.Fprintln(os.Stderr, "audit:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "ACK %s\n", id)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashSafety kills (SIGKILL) a process while it registers workloads and checks that
// every acknowledged registration survives, the store opens cleanly and the history verifies.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	for round := range 2 {
		dir := t.TempDir()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalECPrivateKey(key)
		if err := os.WriteFile(filepath.Join(dir, "signer.der"), der, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]bool{}
		sc := bufio.NewScanner(stdout)
		killAfter := 40 + 37*round
		killed := false
		deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
		for sc.Scan() {
			line := sc.Text()
			id, ok := strings.CutPrefix(line, "ACK ")
			if !ok {
				continue // test framework output
			}
			acked[id] = true
			if !killed && len(acked) >= killAfter {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		deadline.Stop()
		werr := cmd.Wait()
		if !killed {
			t.Fatalf("child ended before being killed (%d acks): %v\n%s", len(acked), werr, stderr.String())
		}
		if ws, ok := werr.(*exec.ExitError); !ok || ws.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child did not die of SIGKILL: %v\n%s", werr, stderr.String())
		}
		st, err := bolt.Open(filepath.Join(dir, "kbs.db"), crashStoreKey, nil)
		if err != nil {
			t.Fatalf("reopen after SIGKILL: %v", err)
		}
		reg := registry.New(st, key)
		ctx := context.Background()
		for id := range acked {
			if _, err := reg.Get(ctx, id); err != nil {
				t.Errorf("acknowledged workload %s lost: %v", id, err)
			}
		}
		hist, err := reg.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		head, err := registry.VerifyHistory(hist, key.Public())
		if err != nil {
			t.Fatalf("history after crash: %v", err)
		}
		if h, _ := reg.Head(ctx); h != head {
			t.Fatalf("stored head %v != history head %v", h, head)
		}
		ws, _ := reg.List(ctx)
		if len(ws) != len(hist) || len(ws) < len(acked) {
			t.Fatalf("%d workloads, %d history entries, %d acked", len(ws), len(hist), len(acked))
		}
		// The store still accepts writes.
		if _, err := reg.Put(ctx, validWorkload("after-crash"), "t"); err != nil {
			t.Fatal(err)
		}
		st.Close()
		t.Logf("round %d: %d acknowledged, %d committed before SIGKILL", round, len(acked), len(hist))
	}
}
