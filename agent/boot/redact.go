package boot

import (
	"context"
	"log/slog"
)

// SealedLogKeys are log attributes that may carry sealed content (image references, pod
// names, commands): the guest console is host-visible, so their values never reach it.
var SealedLogKeys = []string{"image", "ref", "pod", "argv", "args", "command", "env"}

// RedactHandler replaces the values of the given attribute keys with "[sealed]".
type RedactHandler struct {
	slog.Handler
	keys map[string]bool
}

// NewRedactHandler wraps h.
func NewRedactHandler(h slog.Handler, keys []string) *RedactHandler {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return &RedactHandler{Handler: h, keys: m}
}

func (h *RedactHandler) redact(a slog.Attr) slog.Attr {
	if h.keys[a.Key] {
		return slog.String(a.Key, "[sealed]")
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		out := make([]any, len(g))
		for i, x := range g {
			out[i] = h.redact(x)
		}
		return slog.Group(a.Key, out...)
	}
	return a
}

// Handle redacts the record's attributes.
func (h *RedactHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(h.redact(a))
		return true
	})
	return h.Handler.Handle(ctx, nr)
}

// WithAttrs redacts attributes bound to a derived logger.
func (h *RedactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = h.redact(a)
	}
	return &RedactHandler{Handler: h.Handler.WithAttrs(out), keys: h.keys}
}

// WithGroup keeps redacting inside the group.
func (h *RedactHandler) WithGroup(name string) slog.Handler {
	return &RedactHandler{Handler: h.Handler.WithGroup(name), keys: h.keys}
}
