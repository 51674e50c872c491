package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/sealpod/sealpod/runtime-shim/deploy"
)

type imageFlags struct {
	files, entrypoint []string
	ref               string
	insecure          bool
}

// NewPackImageCmd packs host files into a one-layer linux/amd64 image and pushes it; it prints
// the pushed reference by digest. The cluster builds its pause image and the node-installer
// image (installer, shim, static busybox for sh/nsenter/kill) with it.
func NewPackImageCmd() *cobra.Command {
	f := &imageFlags{}
	cmd := &cobra.Command{
		Use:   "pack-image",
		Short: "Pack local files into an image and push it",
		Example: `  clusterkit pack-image --insecure --entrypoint /opt/sealpod/bin/sealpod-node-installer --ref 127.0.0.1:5000/sealpod/sealpod-node-installer:dev \
      --file bin/sealpod-node-installer:/opt/sealpod/bin/sealpod-node-installer \
      --file bin/containerd-shim-sealpod-v2:/opt/sealpod/bin/containerd-shim-sealpod-v2 \
      --file /bin/busybox:/opt/sealpod/bin/busybox`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := buildInstallerImage(f)
			if err != nil {
				return err
			}
			fmt.Println(out)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&f.files, "file", nil, "SRC:DST, a host file copied to absolute DST in the image, mode 0755 (repeatable)")
	cmd.Flags().StringVar(&f.ref, "ref", "", "image reference to push to")
	cmd.Flags().StringSliceVar(&f.entrypoint, "entrypoint", nil, "the image's entrypoint argv (comma-separated)")
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "push over plain HTTP (local devregistry)")
	_ = cmd.MarkFlagRequired("ref")
	return cmd
}

func buildInstallerImage(f *imageFlags) (string, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, spec := range f.files {
		src, dst, ok := strings.Cut(spec, ":")
		if !ok || !path.IsAbs(dst) {
			return "", fmt.Errorf("--file %q: want SRC:/absolute/dst", spec)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return "", fmt.Errorf("--file %s: %w", src, err)
		}
		var parents []string
		for d := path.Dir(dst); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}); err != nil {
					return "", err
				}
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return "", err
		}
		if _, err := tw.Write(data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		return "", fmt.Errorf("installer image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Entrypoint = f.entrypoint
	cfg.Config.Env = []string{"PATH=/opt/sealpod/bin:/usr/local/bin:/usr/bin:/bin"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return "", err
	}
	var opts []name.Option
	if f.insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(f.ref, opts...)
	if err != nil {
		return "", fmt.Errorf("--ref %q: %w", f.ref, err)
	}
	if err := remote.Write(ref, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return ref.Context().Digest(d.String()).String(), nil
}

type manifestFlags struct {
	image, hostRoot string
	args, env       []string
	relocate        []string
}

// NewInstallerManifestCmd prints runtime-shim/deploy's installer DaemonSet adapted to a local
// cluster: its image, its install arguments, and hostPath volumes moved under a state dir.
func NewInstallerManifestCmd() *cobra.Command {
	f := &manifestFlags{}
	cmd := &cobra.Command{
		Use:   "installer-manifest",
		Short: "Print the installer DaemonSet with another image, args and relocated host paths",
		Example: `  clusterkit installer-manifest --image 127.0.0.1:5000/sealpod/sealpod-node-installer@sha256:... \
      --relocate /etc/containerd=/work/out/cluster/etc/containerd --relocate /usr/local/bin=/work/out/cluster/bin \
      --args install,--host-root,/host,--tee,sim,--wait | kubectl apply -f -`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := installerManifest(f)
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&f.image, "image", "", "installer image")
	cmd.Flags().StringSliceVar(&f.args, "args", nil, "replace the container's args (comma-separated)")
	cmd.Flags().StringArrayVar(&f.relocate, "relocate", nil, "HOSTPATH=NEWPATH: the volume whose hostPath is HOSTPATH uses NEWPATH instead (the mount path stays /host<HOSTPATH>)")
	cmd.Flags().StringArrayVar(&f.env, "env", nil, "NAME=VALUE: add (or replace) an environment variable of the container")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}

func installerManifest(f *manifestFlags) ([]byte, error) {
	data, err := deploy.Manifests.ReadFile("daemonset.yaml")
	if err != nil {
		return nil, err
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		return nil, fmt.Errorf("runtime-shim/deploy/daemonset.yaml: %w", err)
	}
	spec := &ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		return nil, fmt.Errorf("daemonset.yaml: %d containers, want 1", len(spec.Containers))
	}
	spec.Containers[0].Image = f.image
	spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	if len(f.args) > 0 {
		spec.Containers[0].Args = f.args
	}
	for _, e := range f.env {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want NAME=VALUE", e)
		}
		c := &spec.Containers[0]
		c.Env = slices.DeleteFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == k })
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: v})
	}
	for _, r := range f.relocate {
		from, to, ok := strings.Cut(r, "=")
		if !ok || !path.IsAbs(from) || !path.IsAbs(to) {
			return nil, fmt.Errorf("--relocate %q: want /hostpath=/newpath", r)
		}
		found := false
		for i := range spec.Volumes {
			if hp := spec.Volumes[i].HostPath; hp != nil && hp.Path == from {
				hp.Path, found = to, true
			}
		}
		if !found {
			return nil, fmt.Errorf("--relocate %s: no hostPath volume with that path in daemonset.yaml", from)
		}
	}
	return yaml.Marshal(&ds)
}
