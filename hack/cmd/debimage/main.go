// Command debimage builds an application image from Debian packages (hack/debimage) and
// pushes it to a registry (the local devregistry) or writes it as an OCI layout:
//
//	debimage --recipe redis --ref 127.0.0.1:5000/sealpod/redis:7.0 --insecure
//	debimage --recipe nginx --oci-layout out/nginx.oci
//
// It prints the pushed reference with its digest (or the digest). Downloaded .debs and built
// images are cached under $XDG_CACHE_HOME/sealpod/debimage (default ~/.cache): a build by
// the same debimage executable with the same recipe and package versions reuses the cached
// image.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sealpod/sealpod/hack/debimage"
	"github.com/sealpod/sealpod/imagebuilder/image"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "debimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("debimage", flag.ContinueOnError)
	recipe := fs.String("recipe", "", "the application: "+strings.Join(recipeNames(), ", "))
	ref := fs.String("ref", "", "push the image to this reference")
	insecure := fs.Bool("insecure", false, "push over plain HTTP (the local devregistry)")
	ociLayout := fs.String("oci-layout", "", "write the image as an OCI layout into this directory")
	cache := fs.String("cache", debimage.CacheDir(), "cache of .debs and built images")
	list := fs.Bool("list", false, "print the packages the image holds")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, ok := debimage.Recipes[*recipe]
	if !ok {
		return fmt.Errorf("--recipe %q: want one of %s", *recipe, strings.Join(recipeNames(), ", "))
	}
	if *ref == "" && *ociLayout == "" && !*list {
		return errors.New("nothing to do: give --ref, --oci-layout or --list")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	img, debs, err := build(ctx, *cache, r)
	if err != nil {
		return err
	}
	if *list {
		for _, d := range debs {
			fmt.Printf("%s %s %s\n", d.Name, d.Version, d.Arch)
		}
	}
	dg, err := img.Digest()
	if err != nil {
		return err
	}
	if *ociLayout != "" {
		p, err := layout.Write(*ociLayout, empty.Index)
		if err != nil {
			return fmt.Errorf("--oci-layout %s: %w", *ociLayout, err)
		}
		if err := p.AppendImage(img); err != nil {
			return fmt.Errorf("--oci-layout %s: %w", *ociLayout, err)
		}
	}
	if *ref == "" {
		fmt.Println(dg.String())
		return nil
	}
	var opts []name.Option
	if *insecure {
		opts = append(opts, name.Insecure)
	}
	tag, err := name.ParseReference(*ref, opts...)
	if err != nil {
		return fmt.Errorf("--ref %q: %w", *ref, err)
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", tag, err)
	}
	fmt.Println(tag.Context().Name() + "@" + dg.String())
	return nil
}

// build resolves the recipe's packages and returns the cached image for exactly those
// versions and this recipe, or builds and caches it.
func build(ctx context.Context, cache string, r *debimage.Recipe) (v1.Image, []debimage.Deb, error) {
	run := debimage.Runner(debimage.ExecRunner)
	roots := append(append([]string{}, debimage.BasePackages...), r.Packages...)
	pkgs, err := debimage.Resolve(ctx, run, roots, append(append([]string{}, debimage.DefaultExclude...), r.Exclude...))
	if err != nil {
		return nil, nil, err
	}
	debs, err := debimage.Fetch(ctx, run, filepath.Join(cache, "debs"), pkgs)
	if err != nil {
		return nil, nil, err
	}
	key, err := cacheKey(r, debs)
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(cache, "images", r.Name+"-"+key)
	if img, err := image.LoadLayout(dir); err == nil {
		return img, debs, nil
	}
	img, err := debimage.Assemble(r, debs, debimage.DpkgData(ctx, run))
	if err != nil {
		return nil, nil, err
	}
	// Cache via a temporary sibling and a rename: a half-written layout is never used.
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if p, err := layout.Write(tmp, empty.Index); err == nil && p.AppendImage(img) == nil {
		_ = os.RemoveAll(dir)
		_ = os.Rename(tmp, dir)
	}
	_ = os.RemoveAll(tmp)
	return img, debs, nil
}

// cacheKey names a built image: this program (its executable's bytes: another builder may
// lay files out differently), the recipe (as JSON) and the packages' checksums.
func cacheKey(r *debimage.Recipe, debs []debimage.Deb) (string, error) {
	h := sha256.New()
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", exe, err)
	}
	if err := json.NewEncoder(h).Encode(r); err != nil {
		return "", err
	}
	for _, d := range debs {
		fmt.Fprintf(h, "%s %s %s %s\n", d.Name, d.Version, d.Arch, d.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

func recipeNames() []string {
	var n []string
	for k := range debimage.Recipes {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}
