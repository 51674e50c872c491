// Command sealpod-node-installer puts the Sealpod runtime on a node: it copies the shim, adds the
// sealpod runtime handler to containerd's config, restarts containerd and labels the node with
// its TEE; `uninstall` undoes it. It runs as a privileged DaemonSet (runtime-shim/deploy).
package main

import (
	"os"

	"github.com/sealpod/sealpod/runtime-shim/installer/cli"
)

func main() { os.Exit(cli.Execute()) }
