package boot

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/sealpod/sealpod/agent/attest"
	"github.com/sealpod/sealpod/agent/errkind"
)

// The console is host-visible (the shim stores it). ConsoleHandler lets an attribute through
// only when its key is on the allow-list below and its value has the kind (and, for strings,
// the syntax) that key allows; every other attribute is dropped. An error value is replaced
// by its kind (agent/errkind), never its text. Messages are constants in code (checked by
// TestLogMessagesAreConstants).

type valueRule func(slog.Value) (slog.Value, bool)

// The string rules are hand-written rather than regular expressions: bounded repetitions
// ({0,1000}) compile into programs of that many instructions, and compiling them at package
// init cost 15–23 ms natively (868 KB, 6,000 allocations) — far more under emulation, before
// the agent does anything (TestPackageInitIsSmall; TestStringRules holds the
// rules to the expressions).

// dnsLabel: ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ (container names).
func dnsLabel(s string) bool {
	return len(s) >= 1 && len(s) <= 63 && s[0] != '-' && s[len(s)-1] != '-' && allIn(s, lower+digit+"-")
}

// workloadID: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (in the envelope's clear header).
func workloadID(s string) bool {
	return len(s) >= 1 && len(s) <= 128 && allIn(s[:1], alnum) && allIn(s, alnum+"._-")
}

// versionString: ^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$.
func versionString(s string) bool {
	return len(s) >= 1 && len(s) <= 64 && allIn(s[:1], alnum) && allIn(s, alnum+".+_-")
}

// devPath: ^/dev/[A-Za-z0-9]{1,32}$.
func devPath(s string) bool {
	n, ok := strings.CutPrefix(s, "/dev/")
	return ok && len(n) >= 1 && len(n) <= 32 && allIn(n, alnum)
}

// hostPorts: ^[A-Za-z0-9.:,-]{1,1000}$ (host:port lists from the measured kernel command
// line; the host wrote it).
func hostPorts(s string) bool {
	return len(s) >= 1 && len(s) <= 1000 && allIn(s, alnum+".:,-")
}

const (
	lower = "abcdefghijklmnopqrstuvwxyz"
	digit = "0123456789"
	alnum = lower + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + digit
)

// allIn reports whether every byte of s is one of set (ASCII).
func allIn(s, set string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(set, s[i]) < 0 {
			return false
		}
	}
	return true
}

func stringMatching(ok func(string) bool) valueRule {
	return func(v slog.Value) (slog.Value, bool) {
		return v, v.Kind() == slog.KindString && ok(v.String())
	}
}

func oneOf(vals ...string) valueRule {
	return func(v slog.Value) (slog.Value, bool) {
		if v.Kind() != slog.KindString {
			return v, false
		}
		for _, x := range vals {
			if v.String() == x {
				return v, true
			}
		}
		return v, false
	}
}

// number allows integers, floats, booleans and durations.
func number(v slog.Value) (slog.Value, bool) {
	switch v.Kind() {
	case slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration:
		return v, true
	}
	return v, false
}

// errorKind shows an error as its kind; any other value is refused.
func errorKind(v slog.Value) (slog.Value, bool) {
	if v.Kind() != slog.KindAny {
		return v, false
	}
	if err, ok := v.Any().(error); ok {
		return slog.StringValue(errkind.Text(err)), true
	}
	return v, false
}

// ConsoleKeys are the attribute keys that may reach the console, each with what its value
// may be. Container names and the workload id are known to the host; sizes, counts and
// durations are not sealed; errors show as their kind.
var ConsoleKeys = map[string]valueRule{
	"container":  stringMatching(dnsLabel),
	"volume":     stringMatching(dnsLabel), // encrypted volume names are in the placeholder pod
	"workload":   stringMatching(workloadID),
	"tee":        oneOf("snp", "tdx", "sim", "pef", "sim-tdx"),
	"evidence":   oneOf(attest.Sources...), // where the TEE evidence comes from
	"reason":     oneOf(attest.Reasons...),
	"version":    stringMatching(versionString),
	"port":       stringMatching(devPath),
	"registries": stringMatching(hostPorts),
	"op": oneOf("start pod", "create container", "delete container", "close pod", "wait", "signal",
		"start container", "exec in", "stats", "attach volume"),
	"err":        errorKind,
	"code":       number,
	"count":      number,
	"containers": number,
	"attempt":    number,
	"in":         number,
	"waited":     number,
	"boot_ms":    number,
	"start_ms":   number,
	"ready_ms":   number,
	"modules":    number,
	"total_ms":   number,
	"pull_ms":    number,
	"unpack_ms":  number,
	"create_ms":  number,
}

// withheldValue replaces the value of an allowed key whose value is not allowed.
const withheldValue = "[withheld]"

// ConsoleHandler filters attributes by ConsoleKeys before the wrapped handler sees them.
type ConsoleHandler struct {
	h slog.Handler
	// dropAll: inside a group (WithGroup): group names are not checked, so nothing passes.
	dropAll bool
}

// NewConsoleHandler wraps h.
func NewConsoleHandler(h slog.Handler) *ConsoleHandler { return &ConsoleHandler{h: h} }

// NewConsoleLogger is the agent's console logger: text on w, debug level when debug
// (sealpod.debug=1 on the measured command line; the allow-list applies at every level).
func NewConsoleLogger(w io.Writer, debug bool) *slog.Logger {
	lvl := slog.LevelInfo
	if debug {
		lvl = slog.LevelDebug
	}
	return slog.New(NewConsoleHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})))
}

// filter returns the attribute as it may appear on the console, or false to drop it.
func (h *ConsoleHandler) filter(a slog.Attr) (slog.Attr, bool) {
	rule, ok := ConsoleKeys[a.Key]
	if h.dropAll || !ok {
		return slog.Attr{}, false
	}
	v, ok := rule(a.Value.Resolve())
	if !ok {
		return slog.String(a.Key, withheldValue), true
	}
	// A string value is also checked for control characters (log line forgery).
	if v.Kind() == slog.KindString && strings.ContainsFunc(v.String(), func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return slog.String(a.Key, withheldValue), true
	}
	return slog.Attr{Key: a.Key, Value: v}, true
}

// Enabled reports the wrapped handler's level.
func (h *ConsoleHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

// Handle passes the record with its allowed attributes only.
func (h *ConsoleHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if fa, ok := h.filter(a); ok {
			nr.AddAttrs(fa)
		}
		return true
	})
	return h.h.Handle(ctx, nr)
}

// WithAttrs filters attributes bound to a derived logger.
func (h *ConsoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var out []slog.Attr
	for _, a := range as {
		if fa, ok := h.filter(a); ok {
			out = append(out, fa)
		}
	}
	return &ConsoleHandler{h: h.h.WithAttrs(out), dropAll: h.dropAll}
}

// WithGroup returns a handler that drops every attribute: a group's name could be anything.
func (h *ConsoleHandler) WithGroup(string) slog.Handler {
	return &ConsoleHandler{h: h.h, dropAll: true}
}
