package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealpod/sealpod/internal/atomicfile"
	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// DefaultSimKeyPath is where Install puts the simulated VCEK key (tee sim) on the host.
const DefaultSimKeyPath = "/etc/sealpod/sim-vcek.pem"

// ShimNodeConfig is what Install writes to the shim's node configuration (runtime-shim/config,
// host path shimconfig.DefaultPath): the node's TEE and how the shim starts QEMU.
type ShimNodeConfig struct {
	// Config is written as JSON after validation by shimconfig.Parse. Its SimKey is a host
	// path (for tee sim; when SimKeySource is set, default sim-vcek.pem beside Path, i.e.
	// DefaultSimKeyPath for the default Path).
	Config shimconfig.Config
	// SimKeySource is the simulated VCEK private key to copy onto the host (a path in the
	// installer's filesystem, e.g. a mounted Secret); tee sim only. Empty: Config.SimKey must
	// already exist on the host.
	SimKeySource string
	// Path is the host path of the file; default shimconfig.DefaultPath.
	Path string
}

// preparedShimConfig is the validated content Install will write.
type preparedShimConfig struct {
	data, key []byte
	keyPath   string // host path joined with HostRoot; empty: no key to copy
}

// prepareShimConfig validates the shim's node config (and reads the sim key) before Install
// writes anything; nil when Options.ShimConfig is nil.
func prepareShimConfig(r resolved) (*preparedShimConfig, error) {
	sc := r.ShimConfig
	if sc == nil {
		return nil, nil
	}
	cfg := sc.Config
	switch {
	case cfg.TEE == "":
		cfg.TEE = string(r.TEE)
	case r.TEE != "" && cfg.TEE != string(r.TEE):
		return nil, fmt.Errorf("shim config: tee %q differs from the node's tee %q", cfg.TEE, r.TEE)
	}
	p := &preparedShimConfig{}
	if sc.SimKeySource != "" {
		if cfg.TEE != string(TEESim) {
			return nil, fmt.Errorf("shim config: a sim key is only for tee sim (tee %q)", cfg.TEE)
		}
		if cfg.SimKey == "" {
			// Beside the node config: /etc/sealpod/sim-vcek.pem for the default path.
			cfg.SimKey = DefaultSimKeyPath
			if sc.Path != "" {
				cfg.SimKey = filepath.Join(filepath.Dir(sc.Path), filepath.Base(DefaultSimKeyPath))
			}
		}
		key, err := os.ReadFile(sc.SimKeySource)
		if err != nil {
			return nil, fmt.Errorf("shim config: read sim key %s: %w", sc.SimKeySource, err)
		}
		if !bytes.Contains(key, []byte("PRIVATE KEY")) {
			return nil, fmt.Errorf("shim config: sim key %s: not a PEM private key", sc.SimKeySource)
		}
		p.key, p.keyPath = key, filepath.Join(r.HostRoot, cfg.SimKey)
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	p.data = append(data, '\n')
	// Exactly what the shim will accept.
	if _, err := shimconfig.Parse(p.data); err != nil {
		return nil, fmt.Errorf("shim config: %w", err)
	}
	return p, nil
}

// writeShimConfig writes the prepared shim node config (and the sim key); it reports a change.
func writeShimConfig(r resolved, p *preparedShimConfig) (bool, error) {
	if p == nil {
		return false, nil
	}
	changed := false
	if p.keyPath != "" {
		old, mode, exists, err := readOptional(p.keyPath)
		if err != nil {
			return false, fmt.Errorf("shim config: read %s: %w", p.keyPath, err)
		}
		if !exists || !bytes.Equal(old, p.key) || mode != 0o600 {
			if err := os.MkdirAll(filepath.Dir(p.keyPath), 0o700); err != nil {
				return false, fmt.Errorf("shim config: create %s: %w", filepath.Dir(p.keyPath), err)
			}
			if err := atomicfile.Write(p.keyPath, p.key, 0o600); err != nil {
				return false, fmt.Errorf("shim config: sim key: %w", err)
			}
			changed = true
		}
	}
	dst := r.shimConfig
	old, mode, exists, err := readOptional(dst)
	if err != nil {
		return false, fmt.Errorf("shim config: read %s: %w", dst, err)
	}
	if exists && bytes.Equal(old, p.data) && mode == 0o644 {
		return changed, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("shim config: create %s: %w", filepath.Dir(dst), err)
	}
	if err := atomicfile.Write(dst, p.data, 0o644); err != nil {
		return false, fmt.Errorf("shim config: %w", err)
	}
	return true, nil
}

// removeShimConfig deletes the shim's node config and, when it lies beside it, the sim key
// it names; then the directory if empty. It reports a change.
func removeShimConfig(r resolved) (bool, error) {
	data, _, exists, err := readOptional(r.shimConfig)
	if err != nil || !exists {
		return false, err
	}
	dir := filepath.Dir(r.shimConfig)
	var c struct {
		SimKey string `json:"simKey"`
	}
	if json.Unmarshal(data, &c) == nil && c.SimKey != "" {
		key := filepath.Join(r.HostRoot, c.SimKey)
		if filepath.Dir(key) == dir && strings.HasSuffix(key, ".pem") {
			if err := os.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false, fmt.Errorf("remove sim key %s: %w", key, err)
			}
		}
	}
	if err := os.Remove(r.shimConfig); err != nil {
		return false, fmt.Errorf("remove shim config %s: %w", r.shimConfig, err)
	}
	_ = os.Remove(dir) // only succeeds when empty
	return true, nil
}
