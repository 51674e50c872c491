// Command sealpod-kbs is the Sealpod key broker: it verifies TEE evidence and releases workload
// keys and certificates to attested guests.
package main

import (
	"os"

	"github.com/sealpod/sealpod/kbs/internal/cli"
)

func main() { os.Exit(cli.Execute()) }
