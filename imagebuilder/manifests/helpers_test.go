package manifests

import (
	"context"
	"flag"
	"io"
	"log"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/internal/repopath"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sealpod/sealpod/imagebuilder/envelope"
	"github.com/sealpod/sealpod/imagebuilder/image"
)

var update = flag.Bool("update", false, "rewrite golden files")

// sharedDir returns ../shared/testdata/<sub> relative to the repository root.
// sharedDir returns ../shared/testdata/<sub>.
func sharedDir(t testing.TB, sub string) string { return repopath.Shared(t, sub) }

func testKBS() envelope.KBS {
	return envelope.KBS{URL: "https://kbs.test:8443", CASHA256: strings.Repeat("c", 64)}
}

// testImage is a tiny image whose digest depends only on ref.
func testImage(t testing.TB, ref string) v1.Image {
	t.Helper()
	cfg, err := empty.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Labels = map[string]string{"test.ref": ref}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

var imageLine = regexp.MustCompile(`(?m)^\s*-?\s*image:\s*"?([^"\s#]+)"?`)

// startRegistry serves an in-process registry on loopback holding a tiny image for every
// image reference found in texts, and returns a resolver that answers for every public
// registry through it (as a pull-through mirror would).
func startRegistry(t testing.TB, texts ...string) *RegistryResolver {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	mirrors := map[string]string{}
	for _, text := range texts {
		for _, m := range imageLine.FindAllStringSubmatch(text, -1) {
			ref, err := name.ParseReference(m[1])
			if err != nil {
				t.Fatalf("test image %q: %v", m[1], err)
			}
			if _, ok := ref.(name.Digest); ok {
				continue
			}
			mirrors[ref.Context().RegistryStr()] = host
			dst, err := name.ParseReference(host+"/"+ref.Context().RepositoryStr()+":"+ref.Identifier(), name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(dst, testImage(t, m[1])); err != nil {
				t.Fatalf("push %s: %v", dst, err)
			}
		}
	}
	mirrors["docker.io"] = host
	return &RegistryResolver{Options: image.RegistryOptions{Insecure: true}, Mirrors: mirrors}
}

func sealText(t testing.TB, text string, opts Options) (*Result, error) {
	t.Helper()
	if opts.TEEs == nil {
		opts.TEEs = []string{"sim"}
	}
	if opts.KBS.URL == "" {
		opts.KBS = testKBS()
	}
	return Seal(context.Background(), []Source{{Name: "input.yaml", Data: []byte(text)}}, opts)
}

const testImageRef = "registry.test/sealpod/secure-image@sha256:2222222222222222222222222222222222222222222222222222222222222222"

// sealOrRefuse seals input with opts. With wantErr set the input must be refused with an error
// mentioning every string in it, and sealOrRefuse returns nil; otherwise it must seal and the
// result is returned.
func sealOrRefuse(t *testing.T, input string, opts Options, wantErr []string) *Result {
	t.Helper()
	res, err := sealText(t, input, opts)
	if len(wantErr) > 0 {
		if err == nil {
			t.Fatal("sealed, want an error")
		}
		for _, w := range wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error does not mention %q:\n%v", w, err)
			}
		}
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// leakCase is one row of a seal table: an input that must seal (check, when set, runs on the
// rendered output) or be refused with messages naming the object and the field.
type leakCase struct {
	name    string
	input   string
	opts    Options
	wantErr []string // empty: must seal
	check   func(t *testing.T, res *Result, out string)
}

// runLeakCases runs each case as a subtest through sealOrRefuse and renders what sealed.
func runLeakCases(t *testing.T, tests []leakCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := sealOrRefuse(t, tt.input, tt.opts, tt.wantErr)
			if res == nil {
				return
			}
			out, err := res.Render(testImageRef)
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, res, string(out))
			}
		})
	}
}
