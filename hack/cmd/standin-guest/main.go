// Command standin-guest writes a stand-in guest bundle (text files for kernel and initrd,
// real measurements of them) for the demo until `make guest` builds the measured guest.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sealpod/sealpod/imagebuilder/bundle/bundletest"
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
