// Command containerd-shim-sealpod-v2 is Sealpod's containerd shim (runtime type
// io.containerd.sealpod.v2): one confidential micro-VM per Kubernetes pod. Node configuration:
// /etc/sealpod/shim.json or $SEALPOD_SHIM_CONFIG (see runtime-shim/config and docs/runtime.md).
package main

import "github.com/sealpod/sealpod/runtime-shim/shim"

func main() { shim.Run() }
