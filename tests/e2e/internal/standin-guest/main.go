// Command standin-guest writes a stand-in guest bundle (text files for kernel and initrd,
// real measurements of them). tests/e2e seals the shared real-world manifests with it and
// dry-runs the output against the API server; nothing sealed with it boots
// (`go run ./tests/e2e/internal/standin-guest --out DIR`).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sealpod/sealpod/guest-image/bundletest"
)

func main() {
	out := flag.String("out", "", "directory to write the bundle into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "standin-guest: --out is required")
		os.Exit(2)
	}
	if err := bundletest.WriteDir(*out); err != nil {
		fmt.Fprintln(os.Stderr, "standin-guest:", err)
		os.Exit(1)
	}
}
