// Package kerneltest gives tests Debian's real guest kernel, from the shared guest cache
// ($HOME/.cache/sealpod/guest, see package kernel), downloading it on first use.
package kerneltest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sealpod/sealpod/guest-image/kernel"
	"github.com/sealpod/sealpod/internal/testdeps"
)

// Tree returns the unpacked kernel package the linux-image-amd64 metapackage currently names
// (the one `make guest` would use). When apt cannot resolve the metapackage (no apt lists) it
// uses the most recent tree already in the cache. It skips the test, saying why and how to
// fix it, only when the package cannot be fetched; any other failure (checksum, unpack, a
// malformed package) fails the test.
func Tree(t testing.TB) *kernel.Tree {
	t.Helper()
	dir, err := kernel.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	cache := &kernel.Cache{Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pkg, err := kernel.Resolve(ctx, kernel.DefaultMetaPackage)
	if err != nil {
		cached, cerr := cache.Cached()
		if cerr != nil || len(cached) == 0 {
			skipIfUnavailable(t, err)
			t.Fatal(err)
		}
		pkg = cached[len(cached)-1]
		t.Logf("apt cannot resolve %s (%v); using the cached %s", kernel.DefaultMetaPackage, err, pkg)
	}
	tree, err := cache.Prepare(ctx, pkg)
	if err != nil {
		skipIfUnavailable(t, err)
		t.Fatal(err)
	}
	return tree
}

func skipIfUnavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, kernel.ErrNotFound) || errors.Is(err, kernel.ErrDownload) {
		testdeps.Missing(t, "Debian's kernel package cannot be fetched here (%v). Run `apt-get update` with network access, "+
			"or pre-fill the cache with `make guest` (see docs/guest.md).", err)
	}
}
