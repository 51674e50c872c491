package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/sealpod/sealpod/guest-image/kernel"
)

// guestKernel is the kernel of a bundle: the minimal kernel (built) or Debian's (tree + mods).
type guestKernel struct {
	image   []byte
	release string
	built   *kernel.Built
	tree    *kernel.Tree
	mods    *kernel.Resolution
}

func (k *guestKernel) describe() string {
	if k.built != nil {
		return k.built.Describe()
	}
	return "debian " + k.tree.Package.String()
}

// getKernel builds (or takes from the cache) the kernel o asks for.
func getKernel(ctx context.Context, o *Options) (*guestKernel, error) {
	switch o.KernelFlavor {
	case KernelMinimal:
		if o.Kernel.Name != "" {
			return nil, fmt.Errorf("kernel: a Debian kernel package (%s) was pinned with --kernel %s", o.Kernel, KernelMinimal)
		}
		b, err := kernel.BuildMinimal(ctx, kernel.BuildOptions{Tarball: o.KernelSource, CacheDir: o.KernelCacheDir, Log: o.Log})
		if err != nil {
			return nil, err
		}
		img, err := os.ReadFile(b.BzImagePath())
		if err != nil {
			return nil, fmt.Errorf("minimal kernel: %w", err)
		}
		return &guestKernel{image: img, release: b.Release, built: b}, nil
	case KernelDebian:
		pkg := o.Kernel
		if pkg.Name == "" {
			var err error
			if pkg, err = kernel.Resolve(ctx, o.MetaPackage); err != nil {
				return nil, fmt.Errorf("resolve %s: %w", o.MetaPackage, err)
			}
		}
		cache := &kernel.Cache{Dir: o.CacheDir, Log: o.Log}
		tree, err := cache.Prepare(ctx, pkg)
		if err != nil {
			return nil, err
		}
		ix, err := kernel.NewIndex(tree.ModulesDir(), tree.Release)
		if err != nil {
			return nil, err
		}
		mods, err := ix.Resolve(o.Modules, o.OptionalModules)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: %w", tree.Release, err)
		}
		img, err := os.ReadFile(tree.KernelPath())
		if err != nil {
			return nil, err
		}
		return &guestKernel{image: img, release: tree.Release, tree: tree, mods: mods}, nil
	}
	return nil, fmt.Errorf("kernel %q: unknown (want %s or %s)", o.KernelFlavor, KernelMinimal, KernelDebian)
}
