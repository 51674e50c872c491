// Command podapp is the workload of the node end-to-end suite (tests/node). Modes:
//
//	init    prints "init done" and exits 0 (the init container)
//	serve   prints "greeting: $SEALPOD_GREETING" and "pod namespace: $POD_NAMESPACE", keeps $SEALPOD_CANARY in memory without
//	        ever printing it, and exits 3 on SIGTERM (so the suite sees the exit code travel)
//	pause   the sandbox image's entrypoint: waits for SIGTERM/SIGINT, exits 0
//	probe   prints "probe ok" (exec target; the sealed policy does not allow it)
//	job     prints "job: $SEALPOD_GREETING" and exits 0 (a Job's container)
//	store   DIR: keeps $SEALPOD_CANARY in DIR/canary (a sealed volume): prints "store: canary written"
//	        when the file is new, "store: canary kept" when it holds the canary, "store: canary
//	        differs" otherwise and "store: read failed: ERR" when reading fails (never the value);
//	        then waits for SIGTERM and exits 0
//	mark    FILE: writes "marked" to FILE and exits 0 (a lifecycle hook's command)
//	realworld DIR: what a real-world pod relies on (issue 16): prints "poststart hook: ran" once
//	        DIR/poststart exists (written by its postStart hook; "not run" after 60 s), "runtime
//	        secret: sha256:HEX" of $RUNTIME_SECRET (a Secret created after sealing), "optional
//	        config: absent|present" for /etc/optional, and "api user: NAME" from a
//	        SelfSubjectReview made with the projected service-account token at
//	        $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT ("api error: ..." on failure); then
//	        waits for SIGTERM
//	resolve NAME...: prints the nameserver, search and options lines of /etc/resolv.conf as
//	        "resolv.conf: LINE", then "resolve NAME: ADDR,ADDR" (sorted; "resolve NAME: error: ..."
//	        after 60 s of failures) for each name, then "resolve: done"; then waits for SIGTERM
//	args    prints "args: " and its further arguments (host values expanded by the agent), then
//	        serves HTTP on :8080 where /healthz answers 200 only to the request header
//	        "Authorization: Bearer $SEALPOD_PROBE_TOKEN" (a sealed httpGet probe), 401 otherwise
package main

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	switch mode {
	case "init":
		fmt.Println("init done")
	case "serve":
		canary := os.Getenv("SEALPOD_CANARY")
		fmt.Println("greeting: " + os.Getenv("SEALPOD_GREETING"))
		fmt.Println("pod namespace: " + os.Getenv("POD_NAMESPACE"))
		// Only a fingerprint of the canary's length, never the value.
		fmt.Printf("canary held: %t\n", len(canary) > 0)
		<-sig
		sum := sha256.Sum256([]byte(canary))
		_ = sum
		fmt.Println("terminating")
		os.Exit(3)
	case "pause":
		<-sig
	case "probe":
		fmt.Println("probe ok")
	case "args":
		fmt.Println("args: " + strings.Join(os.Args[2:], " "))
		want := "Bearer " + os.Getenv("SEALPOD_PROBE_TOKEN")
		http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if len(want) <= len("Bearer ") || r.Header.Get("Authorization") != want {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		go func() {
			if err := http.ListenAndServe(":8080", nil); err != nil {
				fmt.Fprintln(os.Stderr, "podapp:", err)
				os.Exit(4)
			}
		}()
		<-sig
	case "job":
		fmt.Println("job: " + os.Getenv("SEALPOD_GREETING"))
	case "mark":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "podapp: mark FILE")
			os.Exit(2)
		}
		if err := os.WriteFile(os.Args[2], []byte("marked\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "podapp:", err)
			os.Exit(1)
		}
	case "realworld":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "podapp: realworld DIR")
			os.Exit(2)
		}
		realWorld(os.Args[2])
		<-sig
	case "resolve":
		resolveNames(os.Args[2:])
		<-sig
	case "store":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "podapp: store DIR")
			os.Exit(2)
		}
		fmt.Println("store: " + store(os.Args[2], os.Getenv("SEALPOD_CANARY")))
		<-sig
	default:
		fmt.Fprintln(os.Stderr, "podapp: unknown mode", mode)
		os.Exit(2)
	}
}

// store keeps canary in dir/canary and says what it found, never the value itself.
func store(dir, canary string) string {
	p := dir + "/canary"
	b, err := os.ReadFile(p)
	switch {
	case os.IsNotExist(err):
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "write failed: " + err.Error()
		}
		if _, err := f.WriteString(canary); err != nil {
			return "write failed: " + err.Error()
		}
		if err := f.Sync(); err != nil {
			return "write failed: " + err.Error()
		}
		if err := f.Close(); err != nil {
			return "write failed: " + err.Error()
		}
		return "canary written"
	case err != nil:
		return "read failed: " + err.Error()
	case string(b) == canary:
		return "canary kept"
	}
	return "canary differs"
}
