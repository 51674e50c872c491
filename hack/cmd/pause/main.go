// Command pause is the sandbox ("pause") image of the local cluster (hack/k8s, docs/cluster.md):
// it holds the pod's namespaces and exits 0 on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
