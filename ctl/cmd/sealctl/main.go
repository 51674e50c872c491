// Command sealctl is the workload owner's tool: it seals Kubernetes manifests into
// confidential workloads, administers the key broker and verifies deployments.
package main

import (
	"os"

	"github.com/sealpod/sealpod/ctl/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
