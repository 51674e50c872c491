package api

import (
	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// Limits on request fields (the agent refuses larger values with InvalidArgument).
const (
	// MaxEnvelope is the largest envelope Unseal accepts: ttrpc frames are at most 4 MiB.
	MaxEnvelope = 4<<20 - 64<<10
	// MaxReadLen bounds ReadStdout/ReadStderr answers; a request for 0 bytes gets this much.
	MaxReadLen = 1 << 20
	// MaxStdinWrite bounds one WriteStdin.
	MaxStdinWrite = 1 << 20
	// MaxArgv / MaxArgLen bound ExecProcess argv.
	MaxArgv   = 256
	MaxArgLen = 64 << 10
	// MaxHostValues / MaxHostValueLen bound UnsealRequest.host_values.
	MaxHostValues   = 64
	MaxHostValueLen = 4 << 10
	// MaxHostEnv / MaxHostEnvBytes bound CreateContainerRequest.host_env (entries, and the
	// sum of their lengths).
	MaxHostEnv      = 1024
	MaxHostEnvBytes = 1 << 20
	// MaxHostFiles / MaxHostFilesBytes bound one UpdateHostFilesRequest (files, and the sum
	// of their data: below the 4 MiB ttrpc frame); MaxHostFilePath bounds a path.
	MaxHostFiles      = 256
	MaxHostFilesBytes = 3 << 20
	MaxHostFilePath   = 1024
	// MaxTermSize bounds the rows and columns of ResizeProcess (a terminal is 1..MaxTermSize
	// in each dimension).
	MaxTermSize = 4096
)

// NotHostVolume is the text of the agent's UpdateHostFiles refusal of a volume that is not a
// host-provided volume of the sealed spec (the shim then stops forwarding that volume).
const NotHostVolume = "not a host-provided volume of the sealed spec"

// ServiceName is the ttrpc service name of the agent API.
const ServiceName = "sealpod.agent.v1.Agent"

// PortName is the virtio-serial port name of the agent API.
const PortName = "sealpod.agent"

// The syntaxes below compile on first use (lazyregexp: the agent binary starts several times
// per pod) and bound lengths outside the expression, which stays small without counted
// repetitions.
var (
	execIDRe = lazyregexp.New(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	serialRe = lazyregexp.New(`^sealpod-[0-9]{1,2}$`)
)

// VolumeSerialPrefix starts the virtio-blk serial of a hot-plugged sealed volume
// (AttachVolumeRequest.serial): "sealpod-<N>".
const VolumeSerialPrefix = "sealpod-"

// ValidVolumeSerial reports whether s is a well-formed AttachVolumeRequest.serial:
// "sealpod-" and one or two decimal digits.
func ValidVolumeSerial(s string) bool { return serialRe.MatchString(s) }

// ValidContainerName reports whether s is a Kubernetes container name (DNS-1123 label).
func ValidContainerName(s string) bool { return spec.ValidDNSLabel(s) }

// ValidExecID reports whether s is a well-formed exec id (empty is not: it means the
// container's main process and is checked by the caller).
func ValidExecID(s string) bool { return len(s) <= 64 && execIDRe.MatchString(s) }

// States reported by Ping.
const (
	StateSealed   = "sealed"
	StateUnsealed = "unsealed"
)
