package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sealpod/sealpod/internal/atomicfile"
	"github.com/sealpod/sealpod/internal/tee"
	shimconfig "github.com/sealpod/sealpod/runtime-shim/config"
)

// DefaultSimKeyPath is where Install puts the simulated VCEK key (tee sim) on the host.
const DefaultSimKeyPath = "/etc/sealpod/sim-vcek.pem"

// DefaultSimTDXKeyPath is where Install puts the fake Intel PCK key and chain (tee sim-tdx).
const DefaultSimTDXKeyPath = "/etc/sealpod/sim-tdx-pck.pem"

// ShimNodeConfig is what Install writes to the shim's node configuration (runtime-shim/config,
// host path shimconfig.DefaultPath): the TEEs the node offers and how the shim starts QEMU.
type ShimNodeConfig struct {
	// Config is written as JSON after validation by shimconfig.Parse. Its TEEs default to
	// Options.TEEs (a single Config.TEE is written as tees). Its SimKey and SimTDXKey are host
	// paths (when the sources below are set, default sim-vcek.pem and sim-tdx-pck.pem beside
	// Path). For snp without SNPCBitPos, Install reads cbitpos from the host's CPUID.
	Config shimconfig.Config
	// SimKeySource is the simulated VCEK private key to copy onto the host (a path in the
	// installer's filesystem, e.g. a mounted Secret); tee sim only. Empty: Config.SimKey must
	// already exist on the host.
	SimKeySource string
	// SimTDXKeySource is the fake Intel PCK key and chain (`sealpod-kbs sim-roots
	// --tdx-key-out`) to copy onto the host; tee sim-tdx only.
	SimTDXKeySource string
	// CPUID reads the host's CPUID for snp's cbitpos; nil: DevCPUID on <HostRoot>/dev/cpu/0/cpuid.
	CPUID CPUIDReader
	// Path is the host path of the file; default shimconfig.DefaultPath.
	Path string
}

// preparedShimConfig is the validated content Install will write.
type preparedShimConfig struct {
	data []byte
	keys []keyFile // simulated TEEs' keys to copy
}

type keyFile struct {
	data []byte
	path string // host path joined with HostRoot
}

// prepareShimConfig validates the shim's node config (and reads the simulated TEEs' keys)
// before Install writes anything; nil when Options.ShimConfig is nil.
func prepareShimConfig(r resolved) (*preparedShimConfig, error) {
	sc := r.ShimConfig
	if sc == nil {
		return nil, nil
	}
	cfg := sc.Config
	if cfg.TEE != "" {
		if len(cfg.TEEs) > 0 {
			return nil, fmt.Errorf("shim config: tee %q and tees %q: give tees only", cfg.TEE, cfg.TEEs)
		}
		cfg.TEEs, cfg.TEE = []string{cfg.TEE}, ""
	}
	if len(cfg.TEEs) == 0 {
		for _, t := range r.TEEs {
			cfg.TEEs = append(cfg.TEEs, string(t))
		}
	}
	for _, t := range r.TEEs {
		if !slices.Contains(cfg.TEEs, string(t)) {
			return nil, fmt.Errorf("shim config: tees %q do not include the node's tee %q", cfg.TEEs, t)
		}
	}
	p := &preparedShimConfig{}
	for _, k := range []struct {
		t                    TEE
		source, def, keyWord string
		path                 *string
	}{{TEESim, sc.SimKeySource, DefaultSimKeyPath, "sim key", &cfg.SimKey}, {tee.SimTDX, sc.SimTDXKeySource, DefaultSimTDXKeyPath, "sim-tdx key", &cfg.SimTDXKey}} {
		if k.source == "" {
			continue
		}
		if !slices.Contains(cfg.TEEs, string(k.t)) {
			return nil, fmt.Errorf("shim config: a %s is only for tee %s (tees %q)", k.keyWord, k.t, cfg.TEEs)
		}
		if *k.path == "" {
			// Beside the node config: /etc/sealpod/<name> for the default path.
			*k.path = k.def
			if sc.Path != "" {
				*k.path = filepath.Join(filepath.Dir(sc.Path), filepath.Base(k.def))
			}
		}
		key, err := os.ReadFile(k.source)
		if err != nil {
			return nil, fmt.Errorf("shim config: read %s %s: %w", k.keyWord, k.source, err)
		}
		if !bytes.Contains(key, []byte("PRIVATE KEY")) {
			return nil, fmt.Errorf("shim config: %s %s: not a PEM private key", k.keyWord, k.source)
		}
		p.keys = append(p.keys, keyFile{data: key, path: filepath.Join(r.HostRoot, *k.path)})
	}
	if slices.Contains(cfg.TEEs, string(TEESNP)) && cfg.SNPCBitPos == 0 {
		// QEMU's cbitpos from the host's CPUID, as the readiness check reads it; QEMU takes
		// reduced-phys-bits=1 for SNP guests whatever CPUID's physical address reduction.
		cpuid := sc.CPUID
		if cpuid == nil {
			cpuid = DevCPUID{Path: filepath.Join(r.HostRoot, "dev/cpu/0/cpuid")}
		}
		if hp, err := ReadSNPHostParams(cpuid); err != nil {
			r.log.Warn("snp cbitpos not read from CPUID: the shim passes QEMU's usual 51 (give --snp-cbitpos)", "err", err)
		} else {
			cfg.SNPCBitPos, cfg.SNPReducedPhysBits = hp.CBitPos, 1
		}
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
	for _, k := range p.keys {
		old, mode, exists, err := readOptional(k.path)
		if err != nil {
			return false, fmt.Errorf("shim config: read %s: %w", k.path, err)
		}
		if !exists || !bytes.Equal(old, k.data) || mode != 0o600 {
			if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
				return false, fmt.Errorf("shim config: create %s: %w", filepath.Dir(k.path), err)
			}
			if err := atomicfile.Write(k.path, k.data, 0o600); err != nil {
				return false, fmt.Errorf("shim config: key %s: %w", k.path, err)
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

// removeShimConfig deletes the shim's node config and, when they lie beside it, the simulated
// TEEs' keys it names; then the directory if empty. It reports a change.
func removeShimConfig(r resolved) (bool, error) {
	data, _, exists, err := readOptional(r.shimConfig)
	if err != nil || !exists {
		return false, err
	}
	dir := filepath.Dir(r.shimConfig)
	var c struct {
		SimKey    string `json:"simKey"`
		SimTDXKey string `json:"simTDXKey"`
	}
	if json.Unmarshal(data, &c) == nil {
		for _, k := range []string{c.SimKey, c.SimTDXKey} {
			if k == "" {
				continue
			}
			key := filepath.Join(r.HostRoot, k)
			if filepath.Dir(key) == dir && strings.HasSuffix(key, ".pem") {
				if err := os.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return false, fmt.Errorf("remove key %s: %w", key, err)
				}
			}
		}
	}
	if err := os.Remove(r.shimConfig); err != nil {
		return false, fmt.Errorf("remove shim config %s: %w", r.shimConfig, err)
	}
	_ = os.Remove(dir) // only succeeds when empty
	return true, nil
}
