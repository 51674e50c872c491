package cli

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// readEnvelope extracts /sealpod/sealed/<id>.json from an image.
func readEnvelope(t *testing.T, img v1.Image, id string) []byte {
	t.Helper()
	return readImageFile(t, img, "sealpod/sealed/"+id+".json")
}
