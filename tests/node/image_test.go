package node_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sealpod/sealpod/imagebuilder/image"
)

func metaType() metav1.TypeMeta             { return metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"} }
func objectMeta(n string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: n, Namespace: "default"} }

func tarLayer(files map[string][]byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for p, data := range files {
		hdr := &tar.Header{Name: p, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// writeImageTar packs binary as /podapp into an image whose entrypoint is `/podapp pause`
// (the sandbox image; the runc pod's containers override the command).
func writeImageTar(binary, ref, out string) error {
	data, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	layer, err := tarLayer(map[string][]byte{"podapp": data})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/podapp", "pause"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, tag, img)
}

// tamperedImage pushes a copy of the secure image whose envelope has one base64 character
// of its body changed (it still parses; its digest and ciphertext differ).
func (n *node) tamperedImage(t *testing.T, sp *sealedPod) string {
	t.Helper()
	ref, err := name.ParseReference(sp.image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	envPath := path.Join(image.SealedDir, sp.workload+".json")
	rc := mutate.Extract(img)
	defer rc.Close()
	var env []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if path.Clean(h.Name) == envPath {
			if env, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	i := bytes.Index(env, []byte(`"body":"`))
	if i < 0 {
		t.Fatalf("secure image: %s has no body", envPath)
	}
	i += len(`"body":"`) + 16
	if env[i] == 'A' {
		env[i] = 'B'
	} else {
		env[i] = 'A'
	}
	layer, err := tarLayer(map[string][]byte{envPath: env})
	if err != nil {
		t.Fatal(err)
	}
	timg, err := mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(fmt.Sprintf("127.0.0.1:%d/sealpod/tampered:e2e", n.regPort), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, timg); err != nil {
		t.Fatal(err)
	}
	d, err := timg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.Context().Name() + "@" + d.String()
}
