package manifests

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/sealpod/sealpod/agent/hostvalue"
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

// maxArgLen bounds one sealed argv element (the agent's limit is larger).
const maxArgLen = 4096

// execPolicy fills Policy.Exec from AnnotationExec and the --allow-exec rules (Options.AllowExec)
// for this template's containers.
func (p *pod) execPolicy() {
	rules := p.annotationExecRules()
	flagged := 0
	for i, r := range p.s.opts.AllowExec {
		if _, ok := p.sealed.Container(r.Container); !ok {
			continue
		}
		if p.s.allowExecUsed == nil {
			p.s.allowExecUsed = map[int]bool{}
		}
		p.s.allowExecUsed[i] = true
		if !slices.ContainsFunc(rules, func(x spec.ExecRule) bool { return x.Container == r.Container && slices.Equal(x.Argv, r.Argv) }) {
			rules = append(rules, spec.ExecRule{Container: r.Container, Argv: slices.Clone(r.Argv)})
			flagged++
		}
	}
	if len(rules) > maxExecRules {
		p.fail("exec policy", "%d rules from %s and --allow-exec (max %d)", len(rules), AnnotationExec, maxExecRules)
		return
	}
	p.sealed.Policy.Exec = rules
	if flagged > 0 {
		p.warn("exec policy", "%d --allow-exec rule(s) sealed: the host may run exactly these argv (kubectl exec), with the input and output the host gives and sees", flagged)
	}
}

// annotationExecRules reads AnnotationExec.
func (p *pod) annotationExecRules() []spec.ExecRule {
	v := p.annotation(AnnotationExec)
	if v == "" {
		return nil
	}
	field := "metadata.annotations[" + AnnotationExec + "]"
	var in map[string][][]string
	if err := json.Unmarshal([]byte(v), &in); err != nil {
		p.fail(field, "want a JSON object of container name to argv lists: %v", err)
		return nil
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
			if err := checkArgv(argv); err != nil {
				p.fail(field, "%s[%d]: %v", name, i, err)
				continue
			}
			rules = append(rules, spec.ExecRule{Container: name, Argv: argv})
		}
	}
	if len(rules) > 0 {
		p.warn(field, "%d exec rule(s) sealed: the host may run exactly these argv (kubectl exec), and their output reaches the host", len(rules))
	}
	return rules
}

// checkArgv accepts an argv the agent can run: at least argv[0], each element UTF-8 text
// without NUL, at most maxArgLen bytes.
func checkArgv(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("empty argv")
	}
	for i, a := range argv {
		switch {
		case len(a) > maxArgLen:
			return fmt.Errorf("argument %d longer than %d bytes", i, maxArgLen)
		case strings.IndexByte(a, 0) >= 0 || !utf8.ValidString(a):
			return fmt.Errorf("argument %d: not UTF-8 text without NUL", i)
		}
	}
	return nil
}

// ParseAllowExec parses one --allow-exec value, CONTAINER=ARGV. ARGV is either a JSON list of
// strings (`app=["/bin/sh","-c","date"]`) or words separated by spaces (`app=/bin/sh -i`),
// taken literally: no quoting, escapes or expansion, so a word list with a quote or a
// backslash is refused (write the JSON form). The argv must match `kubectl exec` exactly.
func ParseAllowExec(v string) (spec.ExecRule, error) {
	name, argvText, ok := strings.Cut(v, "=")
	if !ok {
		return spec.ExecRule{}, fmt.Errorf("--allow-exec %.80q: want CONTAINER=ARGV", v)
	}
	if !hostvalue.IsDNS1123Label(name) {
		return spec.ExecRule{}, fmt.Errorf("--allow-exec %.80q: container name %.80q is not a DNS-1123 label", v, name)
	}
	var argv []string
	if t := strings.TrimSpace(argvText); strings.HasPrefix(t, "[") {
		if err := json.Unmarshal([]byte(t), &argv); err != nil {
			return spec.ExecRule{}, fmt.Errorf("--allow-exec %.80q: ARGV: want a JSON list of strings: %w", v, err)
		}
	} else {
		if strings.ContainsAny(argvText, "'\"\\") {
			return spec.ExecRule{}, fmt.Errorf("--allow-exec %.80q: ARGV: quotes and backslashes are not interpreted; write the argv as a JSON list", v)
		}
		argv = strings.Fields(argvText)
	}
	if err := checkArgv(argv); err != nil {
		return spec.ExecRule{}, fmt.Errorf("--allow-exec %.80q: ARGV: %w", v, err)
	}
	return spec.ExecRule{Container: name, Argv: argv}, nil
}

// FormatArgv writes argv as the JSON list ParseAllowExec reads.
func FormatArgv(argv []string) string {
	b, _ := json.Marshal(argv)
	return string(b)
}

// ownerAnnotations are read by sealctl and never copied to the output.
var ownerAnnotations = []string{AnnotationSANs, AnnotationLogs, AnnotationTLSDir, AnnotationExec}

func isOwnerAnnotation(k string) bool { return slices.Contains(ownerAnnotations, k) }
