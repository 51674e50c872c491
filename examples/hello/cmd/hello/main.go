// Command hello is the demo workload: it prints a greeting, then serves it over HTTP (and
// HTTPS with the workload certificate when one is present in $TLS_DIR). Run as /pause (or
// `hello pause`) it is the
// demo node's sandbox (pause) process: it waits for SIGTERM/SIGINT.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if filepath.Base(os.Args[0]) == "pause" || (len(os.Args) > 1 && os.Args[1] == "pause") {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		return
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello from a sealed pod"
	}
	fmt.Println(greeting)
	if len(os.Args) > 1 && os.Args[1] == "once" {
		return
	}
	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, greeting)
		}),
	}
	var err error
	if dir := os.Getenv("TLS_DIR"); dir != "" {
		err = srv.ListenAndServeTLS(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	} else {
		err = srv.ListenAndServe()
	}
	fmt.Fprintln(os.Stderr, "hello:", err)
	os.Exit(1)
}
