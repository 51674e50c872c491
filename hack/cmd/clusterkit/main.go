// Command clusterkit is the Go side of the local Kubernetes cluster (hack/k8s, docs/cluster.md):
// the cluster's PKI and kubeconfigs, containerd's standalone config, a TCP forwarder that makes
// the loopback devregistry reachable from pods, the node-installer image and the cluster DNS
// (CoreDNS's Corefile, the kube-dns Service).
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "clusterkit:", err)
		os.Exit(1)
	}
}
