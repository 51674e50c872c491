// Package hostvalue checks the downward-API values the host hands the agent
// (UnsealRequest.host_values) by the syntax Kubernetes guarantees for each field, so that a
// host value is data and never code: one table maps every field an env var can read to its
// validator, and a key that is not in the table is refused.
//
// Keys are "fieldRef:<fieldPath>" (as the sealed EnvVar.FromHost) and
// "resourceFieldRef:<container>/<resource>"; a resource value is a non-negative integer in
// base units (millicores for cpu, bytes otherwise) that the agent divides by the sealed
// divisor, rounding up, as the kubelet does. Annotation values have no syntax: they are
// accepted as env values but never substituted into command or args (Opaque).
//
// The validators are this package's own (no regexp, no k8s.io imports) to keep the agent
// small: k8s.io/apimachinery/pkg/util/validation would link klog, logr and regexp into
// PID 1 of the guest. The tests check them against apimachinery's.
package hostvalue

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// ErrInvalid is wrapped by every error of this package.
var ErrInvalid = errors.New("invalid host value")

// Key prefixes of host_values.
const (
	FieldRef         = "fieldRef:"
	ResourceFieldRef = "resourceFieldRef:"
)

// Error says which host value is refused and why.
type Error struct {
	Key     string // the host_values key
	Value   string // the refused value
	Unknown bool   // the key is not in the table
	Reason  string
}

func (e *Error) Error() string {
	if e.Unknown {
		return fmt.Sprintf("%.120q: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("%s: %.64q is %s", e.Key, e.Value, e.Reason)
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Field is one entry of the table.
type Field struct {
	// Path is the fieldRef path or the resource name ("limits.cpu").
	Path string
	// Resource is set for resourceFieldRef keys; Container names the container then.
	Resource  bool
	Container string
	// Opaque fields (annotations) have no syntax: their values may be env values but never
	// reach argv.
	Opaque bool
	// check returns "" or why the value is refused ("not a DNS-1123 subdomain").
	check func(string) string
}

// fields maps the plain fieldRef paths an env var can use (Kubernetes
// validEnvDownwardAPIFieldPathExpressions) to their validators; metadata.labels['k'] and
// metadata.annotations['k'] are handled by Lookup.
var fields = map[string]func(string) string{
	"metadata.name":           need(IsDNS1123Subdomain, "not a DNS-1123 subdomain"),
	"metadata.namespace":      need(IsDNS1123Label, "not a DNS-1123 label"),
	"metadata.uid":            need(IsUUID, "not a UUID"),
	"spec.nodeName":           need(IsDNS1123Subdomain, "not a DNS-1123 subdomain"),
	"spec.serviceAccountName": need(IsDNS1123Subdomain, "not a DNS-1123 subdomain"),
	"status.podIP":            need(isIPOrEmpty, "not an IP address"),
	"status.hostIP":           need(isIPOrEmpty, "not an IP address"),
	"status.podIPs":           need(isIPListOrEmpty, "not a comma-separated list of IP addresses"),
	"status.hostIPs":          need(isIPListOrEmpty, "not a comma-separated list of IP addresses"),
}

func need(ok func(string) bool, reason string) func(string) string {
	return func(v string) string {
		if ok(v) {
			return ""
		}
		return reason
	}
}

// Lookup finds the table entry for a host_values key.
func Lookup(key string) (Field, error) {
	unknown := func(why string) (Field, error) {
		return Field{}, &Error{Key: key, Unknown: true, Reason: "not a downward-API field an env var can use" + why}
	}
	switch {
	case strings.HasPrefix(key, FieldRef):
		path := strings.TrimPrefix(key, FieldRef)
		if check, ok := fields[path]; ok {
			return Field{Path: path, check: check}, nil
		}
		base, sub, ok := subscript(path)
		switch {
		case !ok:
			return unknown("")
		case base == "metadata.labels" && IsQualifiedName(sub):
			return Field{Path: path, check: need(IsLabelValue, "not a label value")}, nil
		case base == "metadata.annotations" && IsQualifiedName(strings.ToLower(sub)):
			return Field{Path: path, Opaque: true, check: func(string) string { return "" }}, nil
		}
		return unknown(" (the key in brackets is not a qualified name)")
	case strings.HasPrefix(key, ResourceFieldRef):
		ctr, res, ok := strings.Cut(strings.TrimPrefix(key, ResourceFieldRef), "/")
		if !ok || !IsDNS1123Label(ctr) {
			return unknown(" (want resourceFieldRef:<container>/<resource>)")
		}
		if !IsResource(res) {
			return unknown(" (resource " + strconv.Quote(res) + ")")
		}
		return Field{Path: res, Resource: true, Container: ctr, check: need(isBaseUnits, "not a non-negative integer")}, nil
	}
	return unknown("")
}

// subscript splits "metadata.labels['k']" into "metadata.labels" and "k".
func subscript(path string) (string, string, bool) {
	if !strings.HasSuffix(path, "']") {
		return "", "", false
	}
	base, sub, ok := strings.Cut(strings.TrimSuffix(path, "']"), "['")
	return base, sub, ok && sub != ""
}

// Check validates one host value by its key's syntax. NUL never passes.
func Check(key, value string) error {
	f, err := Lookup(key)
	if err != nil {
		return err
	}
	if strings.IndexByte(value, 0) >= 0 {
		return &Error{Key: key, Value: value, Reason: "not text (contains NUL)"}
	}
	if why := f.check(value); why != "" {
		return &Error{Key: key, Value: value, Reason: why}
	}
	return nil
}

// Key is the host_values key that feeds e, an env var of container owner.
func Key(owner string, e spec.EnvVar) string {
	if res, ok := strings.CutPrefix(e.FromHost, ResourceFieldRef); ok {
		c := e.ContainerName
		if c == "" {
			c = owner
		}
		return ResourceFieldRef + c + "/" + res
	}
	return e.FromHost
}

// Opaque reports whether a FromHost field has no syntax (metadata.annotations[...]): such a
// variable may be an env value but is never substituted into command or args.
func Opaque(fromHost string) bool {
	return strings.HasPrefix(fromHost, FieldRef+"metadata.annotations[")
}

// Resolve checks value, the host's answer for key (= Key(owner, e)), and returns what the
// container sees: the value itself, or for a resource the quotient by e.Divisor, rounded up.
func Resolve(key string, e spec.EnvVar, value string) (string, error) {
	if err := Check(key, value); err != nil {
		return "", err
	}
	f, _ := Lookup(key)
	if !f.Resource {
		return value, nil
	}
	d, err := Divisor(f.Path, e.Divisor)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalid, key, err)
	}
	n, _ := strconv.ParseInt(value, 10, 64) // checked by isBaseUnits
	q := n / d
	if n%d != 0 {
		q++
	}
	return strconv.FormatInt(q, 10), nil
}
