// Command workload is the container image of the end-to-end guest suite (tests/guest): a tiny
// static binary that devregistry packs into an image. Modes (first argument):
//
//	report   prints a greeting, $SEALPOD_GREETING and the workload certificate chain from
//	         $SEALPOD_TLS_DIR/cert.pem, then exits with status 7
//	serve    prints "serving" and waits for SIGTERM (then exits 0)
//	probe    prints "probe ok" and exits 0 (the sealed exec allow-list names this argv)
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	mode := "report"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "report":
		fmt.Println("hello from the sealed pod")
		fmt.Println("greeting=" + os.Getenv("SEALPOD_GREETING"))
		cert, err := os.ReadFile(filepath.Join(os.Getenv("SEALPOD_TLS_DIR"), "cert.pem"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "workload:", err)
			os.Exit(1)
		}
		os.Stdout.Write(cert)
		fmt.Fprintln(os.Stderr, "report done")
		os.Exit(7)
	case "serve":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("serving")
		<-sig
		fmt.Println("terminated")
	case "probe":
		fmt.Println("probe ok")
	default:
		fmt.Fprintln(os.Stderr, "workload: unknown mode", mode)
		os.Exit(2)
	}
}
