// Command mkguest builds the measured guest bundle (out/guest: vmlinuz, initrd.img, guest.json)
// from Debian's kernel package and a static /init binary. `make guest` runs it.
package main

import (
	"os"

	"github.com/sealpod/sealpod/guest-image/cmd/mkguest/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
