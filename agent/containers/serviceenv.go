package containers

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/imagebuilder/spec"
	"github.com/sealpod/sealpod/internal/lazyregexp"
)

// Service environment variables: the kubelet gives every container the "Docker link" style
// variables of the API server's Service (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT,
// KUBERNETES_PORT_443_TCP_ADDR, ...) and, unless the pod sets enableServiceLinks: false, of
// every other Service in its namespace. In-cluster clients (client-go's InClusterConfig)
// need the first two. The placeholder container gets them from the kubelet; the shim forwards
// the placeholder's environment (host_env) and the agent takes from it only variables whose
// name has one of these forms and whose value has the syntax the kubelet writes for it:
//
//	<SVC>_SERVICE_HOST                  an IP address
//	<SVC>_SERVICE_PORT[_<PORTNAME>]     a port number
//	<SVC>_PORT, <SVC>_PORT_<N>_<PROTO>  <proto>://<IP>:<port>
//	<SVC>_PORT_<N>_<PROTO>_PROTO        tcp, udp or sctp
//	<SVC>_PORT_<N>_<PROTO>_PORT         a port number
//	<SVC>_PORT_<N>_<PROTO>_ADDR         an IP address
//
// Anything else in the host's environment is ignored, and so are the tagged variables of
// host-provided envFrom sources (spec.HostEnvFromTag: a Secret's key may look like a service
// variable; hostObjectValues gives those to the container that asked for them). The values are host-visible and
// host-chosen (the node runs kube-proxy): they say where the Services are, nothing more.
// They come after the image's environment and before the sealed env, which wins.

var (
	serviceHostRE  = lazyregexp.New(`^([A-Z0-9_]+)_SERVICE_HOST$`)
	servicePortRE  = lazyregexp.New(`^([A-Z0-9_]+)_SERVICE_PORT(_[A-Z0-9_]+)?$`)
	portURLRE      = lazyregexp.New(`^([A-Z0-9_]+)_PORT(_[0-9]{1,5}_(TCP|UDP|SCTP))?$`)
	portDetailRE   = lazyregexp.New(`^([A-Z0-9_]+)_PORT_[0-9]{1,5}_(TCP|UDP|SCTP)_(PROTO|PORT|ADDR)$`)
	maxServiceVars = 4096 // bounds the work on a hostile environment (host_env is bounded too)
)

// serviceEnv returns the service variables of hostEnv that the container gets ([name,
// value], sorted by name): those of the kubernetes Service always, the others only with
// links.
func serviceEnv(hostEnv map[string]string, links bool) [][2]string {
	var out [][2]string
	for _, k := range slices.Sorted(maps.Keys(hostEnv)) {
		if len(out) >= maxServiceVars {
			break
		}
		if strings.HasPrefix(k, spec.HostEnvFromTag) {
			continue
		}
		svc, ok := serviceVar(k, hostEnv[k])
		if !ok || (svc != "KUBERNETES" && !links) {
			continue
		}
		out = append(out, [2]string{k, hostEnv[k]})
	}
	return out
}

// serviceVar reports whether name=value is a service variable with valid syntax, and the
// Service's variable prefix (its name upper-cased, '-' as '_'). A name can fit two forms
// (FOO_SERVICE_PORT is the port of Service foo and the URL of Service foo-service): the
// value decides.
func serviceVar(name, value string) (string, bool) {
	if len(name) > 253+32 || len(value) > 64 {
		return "", false
	}
	if m := serviceHostRE.FindStringSubmatch(name); m != nil && isIP(value) {
		return m[1], true
	}
	if m := portDetailRE.FindStringSubmatch(name); m != nil {
		switch {
		case m[3] == "PROTO" && value == strings.ToLower(m[2]),
			m[3] == "PORT" && isPort(value),
			m[3] == "ADDR" && isIP(value):
			return m[1], true
		}
	}
	if m := servicePortRE.FindStringSubmatch(name); m != nil && isPort(value) {
		return m[1], true
	}
	if m := portURLRE.FindStringSubmatch(name); m != nil && isPortURL(value, m[3]) {
		return m[1], true
	}
	return "", false
}

// isPortURL: proto://IP:port as the kubelet writes it; want is the name's protocol ("" when
// the name has none).
func isPortURL(s, want string) bool {
	proto, hostport, ok := strings.Cut(s, "://")
	if !ok || (proto != "tcp" && proto != "udp" && proto != "sctp") || (want != "" && proto != strings.ToLower(want)) {
		return false
	}
	ap, err := netip.ParseAddrPort(hostport)
	return err == nil && ap.Port() != 0 && ap.Addr().Zone() == "" && ap.String() == hostport
}

func isIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == "" && a.String() == s
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == s
}
