package manifests

import (
	"encoding/json"
	"slices"
	"sort"

	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// AnnotationExec is the owner's exec allow-list (docs/sealing.md, policy.exec): a JSON object from
// container name to the exact argv lists the host may exec in it, e.g.
//
//	sealpod.io/exec: '{"web": [["/bin/status"], ["/bin/dump", "--short"]]}'
//
// It is read from the input, sealed into the spec and never written to the output. Without it
// the host may exec nothing (probes are answered by the agent, see probes.go).
const AnnotationExec = "sealpod.io/exec"

// maxExecRules bounds the allow-list of one pod template.
const maxExecRules = 64

// execPolicy fills Policy.Exec from AnnotationExec.
func (p *pod) execPolicy() {
	v := p.annotation(AnnotationExec)
	if v == "" {
		return
	}
	field := "metadata.annotations[" + AnnotationExec + "]"
	var in map[string][][]string
	if err := json.Unmarshal([]byte(v), &in); err != nil {
		p.fail(field, "want a JSON object of container name to argv lists: %v", err)
		return
	}
	names := make([]string, 0, len(in))
	for name := range in {
		names = append(names, name)
	}
	sort.Strings(names)
	var rules []spec.ExecRule
	for _, name := range names {
		if _, ok := p.sealed.Container(name); !ok {
			p.fail(field, "container %q is not in the pod template", name)
			continue
		}
		for i, argv := range in[name] {
			if len(argv) == 0 || argv[0] == "" {
				p.fail(field, "%s[%d]: empty argv", name, i)
				continue
			}
			if slices.ContainsFunc(argv, func(a string) bool { return len(a) > 4096 }) {
				p.fail(field, "%s[%d]: argument longer than 4096 bytes", name, i)
				continue
			}
			rules = append(rules, spec.ExecRule{Container: name, Argv: argv})
		}
	}
	if len(rules) > maxExecRules {
		p.fail(field, "%d rules (max %d)", len(rules), maxExecRules)
		return
	}
	p.sealed.Policy.Exec = rules
	if len(rules) > 0 {
		p.warn(field, "%d exec rule(s) sealed: the host may run exactly these argv (kubectl exec), and their output reaches the host", len(rules))
	}
}

// ownerAnnotations are read by sealctl and never copied to the output.
var ownerAnnotations = []string{AnnotationSANs, AnnotationLogs, AnnotationTLSDir, AnnotationExec}

func isOwnerAnnotation(k string) bool { return slices.Contains(ownerAnnotations, k) }
