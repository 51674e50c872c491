// Package spec defines the sealed spec (docs/formats.md#sealed-spec-imagebuilderspec): the confidential part of a pod spec
// that travels encrypted inside an envelope and is opened only inside the TEE.
package spec

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Version is the sealed spec format version.
const Version = 1

// Spec is the plaintext of an envelope.
type Spec struct {
	Version  int    `json:"version"`
	Workload string `json:"workload"`
	// Pod is "namespace/name" of the owning object, for messages only.
	Pod            string               `json:"pod"`
	InitContainers []Container          `json:"initContainers,omitempty"`
	Containers     []Container          `json:"containers"`
	Files          []File               `json:"files,omitempty"`
	Volumes        []Volume             `json:"volumes,omitempty"`
	Registries     []RegistryCredential `json:"registries,omitempty"`
	Mirrors        []RegistryMirror     `json:"mirrors,omitempty"`
	Identity       Identity             `json:"identity"`
	Policy         Policy               `json:"policy"`
	// NoServiceLinks is the pod's enableServiceLinks: false. The agent then gives containers
	// only the API server's service variables (KUBERNETES_SERVICE_HOST, ...), as the kubelet
	// does; otherwise also those of the namespace's other Services (docs/sealing.md).
	NoServiceLinks bool `json:"noServiceLinks,omitempty"`
}

// Container is one sealed container.
type Container struct {
	Name            string           `json:"name"`
	Image           string           `json:"image"` // always repository@sha256:...
	Command         []string         `json:"command,omitempty"`
	Args            []string         `json:"args,omitempty"`
	Env             []EnvVar         `json:"env,omitempty"`
	WorkingDir      string           `json:"workingDir,omitempty"`
	SecurityContext *SecurityContext `json:"securityContext,omitempty"`
	Mounts          []Mount          `json:"mounts,omitempty"`
	// Devices are the Block encrypted volumes the container maps (volumeDevices).
	Devices       []Device `json:"devices,omitempty"`
	RestartAlways bool     `json:"restartAlways,omitempty"` // native sidecar init container
	TTY           bool     `json:"tty,omitempty"`
	Stdin         bool     `json:"stdin,omitempty"`
	// Probes run inside the guest; the placeholder carries ProbeStub(name, kind) instead.
	Probes []Probe `json:"probes,omitempty"`
	// Hooks run inside the guest; the placeholder carries HookStub(name, kind) instead (hook.go).
	Hooks []Hook `json:"hooks,omitempty"`
}

// EnvVar is either a sealed value or, for downward-API fields, the name of a value the host
// supplies at run time (untrusted, not secret: pod name, IPs, resources). The agent checks a
// host value by its field's syntax (agent/hostvalue) before use.
type EnvVar struct {
	Name     string `json:"name"`
	Value    string `json:"value,omitempty"`
	FromHost string `json:"fromHost,omitempty"` // e.g. "fieldRef:metadata.name", "resourceFieldRef:limits.cpu"
	// Literal marks a Value taken from a Secret or ConfigMap (valueFrom or envFrom): as in
	// Kubernetes it is used as is, never $(VAR)-expanded. Absent (false) = a value written
	// in the manifest, expanded with the variables defined before it.
	Literal bool `json:"literal,omitempty"`
	// ContainerName and Divisor are a resourceFieldRef's: the container whose resource is
	// read ("" = the container the variable belongs to) and the divisor in Kubernetes'
	// canonical form ("1m", "1Mi", ...; "" = "1"). The host supplies the resource in base
	// units (millicores, bytes) and the agent divides, rounding up, as the kubelet does.
	ContainerName string `json:"containerName,omitempty"`
	Divisor       string `json:"divisor,omitempty"`
	// Prefix and Optional belong to host-provided Secrets and ConfigMaps (FromHost
	// "secretKeyRef:", "configMapKeyRef:", "secretRef:", "configMapRef:"; see HostSecretKeyRef).
	// Prefix is an envFrom source's prefix: every key K of the object becomes the variable
	// Prefix+K, in the envFrom's place in the order (Name is empty then). Optional is
	// Kubernetes' optional: a missing object or key is skipped, not an error.
	Prefix   string `json:"prefix,omitempty"`
	Optional bool   `json:"optional,omitempty"`
}

// FromHost prefixes of host-provided Secrets and ConfigMaps: objects a pod references that
// were not in the sealing input, because something creates them at run time (an operator,
// cert-manager, `kubectl create secret`). Their values come from the host (the kubelet
// resolves the references kept on the placeholder): untrusted and not confidential, never
// sealed and never mixed with sealed values. Names and keys are as Kubernetes allows them
// (a DNS-1123 subdomain; [-._a-zA-Z0-9]+), so "/" separates them unambiguously; the
// namespace is the pod's.
const (
	HostSecretKeyRef    = "secretKeyRef:"    //nolint:gosec // a prefix, no credential. "secretKeyRef:<name>/<key>": one key, EnvVar.Name
	HostConfigMapKeyRef = "configMapKeyRef:" // "configMapKeyRef:<name>/<key>"
	HostSecretRef       = "secretRef:"       // "secretRef:<name>": envFrom, every key as Prefix+key
	HostConfigMapRef    = "configMapRef:"    // "configMapRef:<name>"
)

// HostEnvFromPrefix tags the i-th host-provided envFrom source of a container (counted in
// the order of its envFrom): the placeholder keeps that source with this tag before its own
// prefix, so the variables the kubelet resolves from it are recognisable in the placeholder's
// environment; the agent strips the tag.
func HostEnvFromPrefix(i int) string { return HostEnvFromTag + strconv.Itoa(i) + "_" }

// HostEnvFromTag begins every HostEnvFromPrefix.
const HostEnvFromTag = "SEALPOD_ENVFROM_"

// SecurityContext is the subset of the Kubernetes security context the agent enforces.
type SecurityContext struct {
	RunAsUser              *int64   `json:"runAsUser,omitempty"`
	RunAsGroup             *int64   `json:"runAsGroup,omitempty"`
	RunAsNonRoot           *bool    `json:"runAsNonRoot,omitempty"`
	Privileged             bool     `json:"privileged,omitempty"`
	ReadOnlyRootFilesystem bool     `json:"readOnlyRootFilesystem,omitempty"`
	AllowPrivilegeEscalate *bool    `json:"allowPrivilegeEscalation,omitempty"`
	CapAdd                 []string `json:"capAdd,omitempty"`
	CapDrop                []string `json:"capDrop,omitempty"`
	SupplementalGroups     []int64  `json:"supplementalGroups,omitempty"`
	// SeccompProfile: nil means RuntimeDefault (see seccomp.go).
	SeccompProfile *SeccompProfile `json:"seccompProfile,omitempty"`
}

// Mount places a volume in a container.
type Mount struct {
	Volume   string `json:"volume"`
	Path     string `json:"path"`
	SubPath  string `json:"subPath,omitempty"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// VolumeKind says where a volume's content comes from.
type VolumeKind string

const (
	// VolumeTmpfs is an emptyDir: a tmpfs in guest memory.
	VolumeTmpfs VolumeKind = "tmpfs"
	// VolumeSealed holds sealed files (from Secrets/ConfigMaps given at seal time).
	VolumeSealed VolumeKind = "sealed"
	// VolumeHost is a host-provided volume (hostPath, nfs, ...; not a PVC: VolumeEncrypted) allowed by
	// --allow-host-volumes: neither confidential nor integrity protected.
	VolumeHost VolumeKind = "host"
	// VolumeHostObject holds host-provided Secrets/ConfigMaps (Volume.Objects): a secret,
	// configMap or projected volume whose objects were not in the sealing input. The
	// placeholder keeps the volume and its mounts, so the kubelet writes the files (items,
	// modes, updates) on the host; their content is untrusted and not confidential.
	VolumeHostObject VolumeKind = "hostObject"
)

// HostServiceAccountSource is the Source of the VolumeHostObject volume that stands for the
// projected service-account token (token, ca.crt, namespace) the ServiceAccount admission
// plugin adds to a pod whose automountServiceAccountToken is not false; the host names it
// "kube-api-access-<5 characters>".
const HostServiceAccountSource = "serviceAccountToken"

// ObjectRef names a host-provided Secret or ConfigMap in the pod's namespace.
type ObjectRef struct {
	Kind     string `json:"kind"` // "Secret" or "ConfigMap"
	Name     string `json:"name"`
	Optional bool   `json:"optional,omitempty"` // Kubernetes' optional: missing is not an error
}

// Volume is a pod volume as the guest sees it.
type Volume struct {
	Name      string     `json:"name"`
	Kind      VolumeKind `json:"kind"`
	SizeLimit int64      `json:"sizeLimit,omitempty"` // bytes, tmpfs only; 0 = default
	Source    string     `json:"source,omitempty"`    // host volumes: "persistentVolumeClaim:data", ...
	// Objects are the host-provided Secrets/ConfigMaps of a VolumeHostObject volume, in the
	// order of the volume's sources.
	Objects []ObjectRef `json:"objects,omitempty"`
	// Claim is set for VolumeEncrypted volumes only (volume.go).
	Claim *Claim `json:"claim,omitempty"`
}

// File is one sealed file inside a sealed volume.
type File struct {
	Volume string `json:"volume"`
	Path   string `json:"path"` // relative to the volume root, cleaned, no ".."
	Mode   uint32 `json:"mode"`
	Data   []byte `json:"data"`
}

// RegistryCredential lets the agent pull from a private registry inside the guest.
type RegistryCredential struct {
	Registry string `json:"registry"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Auth     string `json:"auth,omitempty"`
}

// RegistryMirror tells the agent to pull images of Registry from Endpoint ("host[:port]")
// first, then from Registry itself. Images are pinned by digest, so a mirror can serve only
// the exact bytes the owner sealed; it decides where the guest fetches them.
type RegistryMirror struct {
	Registry string `json:"registry"`
	Endpoint string `json:"endpoint"`
}

// DockerHub is the registry name image references carry for Docker Hub.
const DockerHub = "index.docker.io"

// HubAlias maps the names people write for Docker Hub (docker.io, registry-1.docker.io) to
// DockerHub and returns any other registry name as it is: the one alias map for credentials
// and mirrors, on the owner's side and in the guest.
func HubAlias(r string) string {
	if r == "docker.io" || r == DockerHub || r == "registry-1.docker.io" {
		return DockerHub
	}
	return r
}

// Valid reports whether both names are set and Endpoint is a bare host[:port] (no scheme,
// path, credentials or spaces).
func (m RegistryMirror) Valid() bool {
	return m.Registry != "" && m.Endpoint != "" && !strings.ContainsAny(m.Endpoint, "/@ ")
}

// Identity says which certificate the broker issues to the pod and where the agent puts it.
type Identity struct {
	SANs   []string `json:"sans"`
	TLSDir string   `json:"tlsDir"`
}

// Policy is what the host may do to the running pod.
type Policy struct {
	// Exec lists the exact argv the host may exec, per container (exec probes). Empty: deny.
	Exec []ExecRule `json:"exec,omitempty"`
	// Logs is "allow" or "deny".
	Logs string `json:"logs"`
}

// ExecRule allows one exact argv in one container.
type ExecRule struct {
	Container string   `json:"container"`
	Argv      []string `json:"argv"`
}

// Log policies.
const (
	LogsAllow = "allow"
	LogsDeny  = "deny"
)

// DefaultTLSDir is where the workload certificate appears in every container.
const DefaultTLSDir = "/var/run/sealpod/tls"

// AllowsExec reports whether the policy allows exactly argv in container.
func (p *Policy) AllowsExec(container string, argv []string) bool {
	for _, r := range p.Exec {
		if r.Container != container || len(r.Argv) != len(argv) {
			continue
		}
		same := true
		for i := range argv {
			if argv[i] != r.Argv[i] {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return false
}

// Container returns the sealed container (init or app) with that name.
func (s *Spec) Container(name string) (*Container, bool) {
	for i := range s.InitContainers {
		if s.InitContainers[i].Name == name {
			return &s.InitContainers[i], true
		}
	}
	for i := range s.Containers {
		if s.Containers[i].Name == name {
			return &s.Containers[i], true
		}
	}
	return nil, false
}

// Marshal encodes the spec.
func (s *Spec) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal decodes and validates a sealed spec. Inside the guest this runs only on
// authenticated plaintext, but it is still strict.
func Unmarshal(data []byte) (*Spec, error) {
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("sealed spec: %w", err)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("sealed spec: version: unsupported version %d (want %d)", s.Version, Version)
	}
	if len(s.Containers) == 0 {
		return nil, fmt.Errorf("sealed spec %s: containers: empty", s.Workload)
	}
	for i, m := range s.Mirrors {
		if !m.Valid() {
			return nil, fmt.Errorf("sealed spec %s: mirrors[%d]: want a registry and an endpoint host[:port], got %q=%q", s.Workload, i, m.Registry, m.Endpoint)
		}
	}
	if err := s.validateProbes(); err != nil {
		return nil, err
	}
	if err := s.validateHooks(); err != nil {
		return nil, err
	}
	if err := s.validateVolumes(); err != nil {
		return nil, err
	}
	if s.Policy.Logs != LogsAllow && s.Policy.Logs != LogsDeny {
		return nil, fmt.Errorf("sealed spec %s: policy.logs: %q is neither allow nor deny", s.Workload, s.Policy.Logs)
	}
	return &s, nil
}
