package cli

import (
	"archive/tar"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// readEnvelope extracts /sealpod/sealed/<id>.json from an image.
func readEnvelope(t *testing.T, img v1.Image, id string) []byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("no envelope for %s", id)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "sealpod/sealed/"+id+".json" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
