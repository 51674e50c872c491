package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/sealpod/sealpod/imagebuilder/manifests"
)

// maxInput bounds one input (a file, standard input, a kustomize build).
const maxInput = 256 << 20

// readInputs reads the manifests as kubectl does: every -f argument (readSources), then
// every -k directory built with kustomize.
func readInputs(files, kustomizations []string, stdin io.Reader) ([]manifests.Source, error) {
	out, err := readSources(files, stdin)
	if err != nil {
		return nil, err
	}
	for _, dir := range kustomizations {
		src, err := buildKustomization(dir)
		if err != nil {
			return nil, err
		}
		out = append(out, src)
	}
	return out, nil
}

// buildKustomization runs `kustomize build DIR` in-process, with kubectl's defaults: files
// only from inside the kustomization root, no plugins, no Helm.
func buildKustomization(dir string) (manifests.Source, error) {
	name := "-k " + dir
	if !isKustomization(dir) {
		return manifests.Source{}, fmt.Errorf("%s: no %s in the directory", name, strings.Join(konfig.RecognizedKustomizationFileNames(), ", "))
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return manifests.Source{}, fmt.Errorf("%s: kustomize build: %w", name, err)
	}
	data, err := res.AsYaml()
	if err != nil {
		return manifests.Source{}, fmt.Errorf("%s: kustomize build: %w", name, err)
	}
	if len(data) > maxInput {
		return manifests.Source{}, fmt.Errorf("%s: kustomize build: %d bytes exceeds the %d-byte limit", name, len(data), maxInput)
	}
	return manifests.Source{Name: name, Data: data}, nil
}

// isKustomization reports whether dir holds a kustomization file.
func isKustomization(dir string) bool {
	for _, n := range konfig.RecognizedKustomizationFileNames() {
		if st, err := os.Stat(filepath.Join(dir, n)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// readSources reads -f arguments: files, directories (their YAML/JSON files, sorted) and -.
// A directory that is a kustomization is refused: its files are kustomize's input, not
// objects (use -k, as with kubectl).
func readSources(args []string, stdin io.Reader) ([]manifests.Source, error) {
	var out []manifests.Source
	for _, a := range args {
		if a == "-" {
			data, err := io.ReadAll(io.LimitReader(stdin, maxInput+1))
			if err != nil {
				return nil, fmt.Errorf("read standard input: %w", err)
			}
			if len(data) > maxInput {
				return nil, fmt.Errorf("standard input: exceeds the %d-byte limit", maxInput)
			}
			out = append(out, manifests.Source{Name: "<stdin>", Data: data})
			continue
		}
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("-f %s: %w", a, err)
		}
		paths := []string{a}
		if st.IsDir() {
			if isKustomization(a) {
				return nil, fmt.Errorf("-f %s: the directory is a kustomization: build it with -k %s", a, a)
			}
			entries, err := os.ReadDir(a)
			if err != nil {
				return nil, fmt.Errorf("-f %s: %w", a, err)
			}
			paths = nil
			for _, e := range entries {
				switch strings.ToLower(filepath.Ext(e.Name())) {
				case ".yaml", ".yml", ".json":
					if e.Type().IsRegular() {
						paths = append(paths, filepath.Join(a, e.Name()))
					}
				}
			}
			sort.Strings(paths)
			if len(paths) == 0 {
				return nil, fmt.Errorf("-f %s: no .yaml, .yml or .json files in the directory", a)
			}
		}
		for _, p := range paths {
			data, err := readBounded(p)
			if err != nil {
				return nil, fmt.Errorf("-f %s: %w", p, err)
			}
			out = append(out, manifests.Source{Name: p, Data: data})
		}
	}
	return out, nil
}

// readBounded reads a file of at most maxInput bytes.
func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(f, maxInput+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxInput {
		return nil, fmt.Errorf("exceeds the %d-byte limit", maxInput)
	}
	return buf.Bytes(), nil
}
