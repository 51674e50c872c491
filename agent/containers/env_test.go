package containers

import (
	"testing"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// Kubernetes expands $(VAR) and $$ only in values written in the manifest: a Literal value
// (from a Secret or ConfigMap) reaches the container, and argv through $(VAR), unchanged.
// Later entries win, so env sealed after envFrom takes precedence.
func TestEnvLiteralValues(t *testing.T) {
	note := spec.EnvVar{Name: "NOTE", FromHost: "fieldRef:metadata.annotations['note']"}
	f := newPodHV(t, map[string]string{"fieldRef:metadata.annotations['note']": "ann"},
		spec.Container{Name: "literal", Command: []string{"sh", "-c", `echo "$PW|$REF|$CREF"`}, Env: []spec.EnvVar{
			{Name: "X", Value: "x"},
			{Name: "PW", Value: "pa$$word", Literal: true},
			{Name: "REF", Value: "$(X)", Literal: true},
			{Name: "CREF", Value: "a$$b$(X)$$(X)", Literal: true},
		}},
		spec.Container{Name: "literal-argv", Command: []string{"echo", "$(PW)", "$(REF)"}, Env: []spec.EnvVar{
			note,
			{Name: "PW", Value: "pa$$word", Literal: true},
			{Name: "REF", Value: "$(NOTE)", Literal: true}, // text, not a reference to the annotation
		}},
		spec.Container{Name: "manifest-value", Command: []string{"sh", "-c", `echo "$LIT|$ESC"`}, Env: []spec.EnvVar{
			{Name: "X", Value: "x"},
			{Name: "LIT", Value: "<$(X)>"},
			{Name: "ESC", Value: "pa$$word-$$(X)"},
		}},
		spec.Container{Name: "env-wins", Command: []string{"sh", "-c", `echo "$A|$B"`}, Env: []spec.EnvVar{
			{Name: "A", Value: "from-cm", Literal: true},
			{Name: "B", Value: "from-cm", Literal: true},
			{Name: "A", Value: "from-env"},
		}},
	)
	for _, tt := range []struct{ name, want string }{
		{"literal", "pa$$word|$(X)|a$$b$(X)$$(X)\n"},
		{"literal-argv", "pa$$word $(NOTE)\n"},
		{"manifest-value", "<x>|pa$word-$(X)\n"},
		{"env-wins", "from-env|from-cm\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := f.run(t, tt.name)
			if code != 0 || out != tt.want {
				t.Fatalf("exit %d, stdout %q (want %q), stderr %q", code, out, tt.want, errOut)
			}
		})
	}
}
