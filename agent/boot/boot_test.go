package boot

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	o, err := ParseCmdline("console=ttyS0 quiet sealpod.insecure_registries=10.0.2.2:5000,10.0.2.2:5001 sealpod.debug=1 panic=-1")
	if err != nil || !slices.Equal(o.InsecureRegistries, []string{"10.0.2.2:5000", "10.0.2.2:5001"}) || !o.Debug {
		t.Fatalf("ParseCmdline: %+v %v", o, err)
	}
	for _, bad := range []string{"sealpod.insecure_registries=", "sealpod.insecure_registries=a/b", "sealpod.insecure_registries=x,,y"} {
		if _, err := ParseCmdline(bad); err == nil {
			t.Fatalf("ParseCmdline(%q) accepted", bad)
		}
	}
	if o, _ := ParseCmdline("console=hvc0"); o.Debug || o.InsecureRegistries != nil {
		t.Fatalf("defaults: %+v", o)
	}
}

func TestRedactHandler(t *testing.T) {
	var buf strings.Builder
	log := slog.New(NewRedactHandler(slog.NewTextHandler(&buf, nil), SealedLogKeys))
	log.With("container", "app", "image", "r.example/secret@sha256:abc").Info("container created", "pull_ms", 3, "ref", "secret-ref", slog.Group("g", "pod", "ns/secret-pod"))
	out := buf.String()
	for _, leak := range []string{"r.example/secret", "secret-ref", "secret-pod"} {
		if strings.Contains(out, leak) {
			t.Fatalf("log line leaks %q: %s", leak, out)
		}
	}
	for _, keep := range []string{"container=app", "pull_ms=3", "image=[sealed]", "g.pod=[sealed]"} {
		if !strings.Contains(out, keep) {
			t.Fatalf("log line lacks %q: %s", keep, out)
		}
	}
}
