package server

import (
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/agent/hostvalue"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// podNameKey is the host value that names the pod (the shim always sends it).
const podNameKey = "fieldRef:metadata.name"

// checkHostValues refuses, before anything else happens, host values whose key is not a
// downward-API field of the table in agent/hostvalue or whose value does not have the
// syntax Kubernetes guarantees for that field: host values are data, never code.
func checkHostValues(in map[string]string) error {
	if len(in) > api.MaxHostValues {
		return invalid("unseal: host_values: %d entries (max %d)", len(in), api.MaxHostValues)
	}
	for _, k := range slices.Sorted(maps.Keys(in)) {
		if v := in[k]; len(k) > 256 || len(v) > api.MaxHostValueLen {
			return invalid("unseal: host_values[%.64q]: too long", k)
		}
		if err := hostvalue.Check(k, in[k]); err != nil {
			return invalid("unseal: host_values: %v", err)
		}
	}
	return nil
}

// hostValues keeps the host values the sealed spec references and drops the rest: the host
// offers every downward-API field it knows (it cannot see which ones the sealed spec uses),
// and a value nothing references is never used. The values stay untrusted: they are host
// facts (pod name, namespace, IPs), never secrets; checkHostValues checked their syntax.
//
// resourceFieldRef values never come from the host: sealing computed every one the sealed
// resources define; the references left are unset cpu, memory and ephemeral-storage limits,
// which Kubernetes fills with the node's allocatable, and the node here is the guest, so
// the agent fills them with the guest's own capacity.
func (s *Server) hostValues(sp *spec.Spec, in map[string]string) (map[string]string, error) {
	wanted := map[string]bool{}
	for _, cs := range [][]spec.Container{sp.InitContainers, sp.Containers} {
		for _, c := range cs {
			for _, e := range c.Env {
				if e.FromHost != "" {
					wanted[hostvalue.Key(c.Name, e)] = true
				}
			}
		}
	}
	out := map[string]string{}
	for k, v := range in {
		if wanted[k] && !strings.HasPrefix(k, hostvalue.ResourceFieldRef) {
			out[k] = v
		}
	}
	var guest *GuestCapacity
	for _, k := range slices.Sorted(maps.Keys(wanted)) {
		f, err := hostvalue.Lookup(k)
		if err != nil || !f.Resource {
			continue // a sealed reference the host did not supply: the container's create names it
		}
		if guest == nil {
			g, err := s.cfg.Capacity()
			if err != nil {
				return nil, status.Errorf(codes.Internal, "unseal: measure the guest for %s: %v", k, err)
			}
			guest = &g
		}
		if v, ok := guest.value(f.Path); ok {
			out[k] = strconv.FormatInt(v, 10)
		}
	}
	return out, nil
}

// GuestCapacity is what the guest has, in base units.
type GuestCapacity struct {
	MilliCPU, MemoryBytes, EphemeralStorageBytes int64
}

// value is the capacity for an unset limit ("limits.cpu"...); false for anything else.
func (g GuestCapacity) value(resource string) (int64, bool) {
	switch resource {
	case "limits.cpu":
		return g.MilliCPU, true
	case "limits.memory":
		return g.MemoryBytes, true
	case "limits.ephemeral-storage":
		return g.EphemeralStorageBytes, true
	}
	return 0, false
}

// MeasureCapacity measures this guest: online vCPUs, total memory, and the size of the
// root file system the containers' writable layers live on.
func MeasureCapacity() (GuestCapacity, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return GuestCapacity{}, fmt.Errorf("sysinfo: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/", &fs); err != nil {
		return GuestCapacity{}, fmt.Errorf("statfs /: %w", err)
	}
	return GuestCapacity{
		MilliCPU:              int64(runtime.NumCPU()) * 1000,
		MemoryBytes:           capacityBytes(si.Totalram, uint64(si.Unit)),
		EphemeralStorageBytes: capacityBytes(fs.Blocks, uint64(max(fs.Bsize, 0))),
	}, nil
}

// capacityBytes is n units of size bytes, saturated at math.MaxInt64.
func capacityBytes(n, size uint64) int64 {
	if size != 0 && n > math.MaxInt64/size {
		return math.MaxInt64
	}
	return int64(n * size) //nolint:gosec // n*size <= math.MaxInt64, checked above
}
