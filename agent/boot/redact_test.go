package boot

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealpod/sealpod/agent/errkind"
)

func TestConsoleHandler(t *testing.T) {
	const secret = "zq7secret"
	mismatch := errkind.New("digest mismatch")
	for _, tc := range []struct {
		name     string
		log      func(*slog.Logger)
		want     []string
		mustNot  []string
		wantNone bool
	}{
		{"unknown keys dropped", func(l *slog.Logger) {
			l.Info("pulled", "ref", "r/"+secret, "mirror", secret+".example", "image", secret, "argv", []string{secret})
		}, []string{`msg=pulled`}, []string{"ref", "mirror", "image", "argv"}, false},
		{"error becomes its kind", func(l *slog.Logger) {
			l.Warn("pull failed", "err", fmt.Errorf("pull r/%s: %w", secret, mismatch))
		}, []string{`err="digest mismatch"`}, nil, false},
		{"error without kind", func(l *slog.Logger) { l.Warn("x", "err", errors.New(secret)) }, []string{"err=failed"}, nil, false},
		{"error as string withheld", func(l *slog.Logger) { l.Warn("x", "err", "pull "+secret) }, []string{"err=[withheld]"}, nil, false},
		{"numbers pass", func(l *slog.Logger) {
			l.Info("created", "pull_ms", 3, "code", 0, "in", time.Second, "count", uint64(2))
		}, []string{"pull_ms=3", "code=0", "in=1s", "count=2"}, nil, false},
		{"number key with a string", func(l *slog.Logger) { l.Info("x", "code", secret) }, []string{"code=[withheld]"}, nil, false},
		{"container name checked", func(l *slog.Logger) {
			l.With("container", "app").Info("a")
			l.Info("b", "container", "Not A Label "+secret)
		}, []string{"container=app", "container=[withheld]"}, nil, false},
		{"volume name checked", func(l *slog.Logger) {
			l.Info("a", "volume", "data")
			l.Info("b", "volume", "db/"+secret)
		}, []string{"volume=data", "volume=[withheld]"}, nil, false},
		{"tee enum", func(l *slog.Logger) { l.Info("x", "tee", "sim"); l.Info("y", "tee", secret) }, []string{"tee=sim", "tee=[withheld]"}, nil, false},
		{"groups dropped", func(l *slog.Logger) {
			l.Info("x", slog.Group("container", "name", secret))
			l.WithGroup(secret).Info("y", "code", 1)
		}, []string{"msg=x", "msg=y"}, []string{"code=1"}, false},
		{"log valuer resolved and checked", func(l *slog.Logger) { l.Info("x", "workload", valuer(secret+" x")) }, []string{"workload=[withheld]"}, nil, false},
		{"debug filtered too", func(l *slog.Logger) { l.Debug("d", "env", secret, "code", 7) }, []string{"code=7"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			tc.log(NewConsoleLogger(&buf, true))
			out := buf.String()
			if strings.Contains(out, secret) {
				t.Fatalf("console shows the sealed value: %s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("console lacks %q: %s", w, out)
				}
			}
			for _, k := range tc.mustNot {
				if strings.Contains(out, " "+k+"=") || strings.Contains(out, k) && !strings.Contains(k, "=") && strings.Contains(out, k+"=") {
					t.Errorf("console shows %q: %s", k, out)
				}
			}
		})
	}
	var buf strings.Builder
	NewConsoleLogger(&buf, false).Debug("hidden")
	if buf.Len() != 0 {
		t.Errorf("debug line without debug: %s", buf.String())
	}
}

type valuer string

func (v valuer) LogValue() slog.Value { return slog.StringValue(string(v)) }

// TestLogMessagesAreConstants checks every log call of the agent: the message is a string
// literal and no argument formats or stringifies data (fmt.Sprint*, .Error(), .String()),
// so sealed data can only reach the console through ConsoleHandler's allow-list.
func TestLogMessagesAreConstants(t *testing.T) {
	methods := map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true}
	fset := token.NewFileSet()
	calls := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !methods[sel.Sel.Name] || !isLogger(sel.X) || len(call.Args) == 0 {
				return true
			}
			calls++
			pos := fset.Position(call.Pos())
			if lit, ok := call.Args[0].(*ast.BasicLit); !ok || lit.Kind != token.STRING {
				t.Errorf("%s: log message is not a string literal", pos)
			}
			for _, a := range call.Args[1:] {
				ast.Inspect(a, func(n ast.Node) bool {
					if c, ok := n.(*ast.CallExpr); ok {
						if s, ok := c.Fun.(*ast.SelectorExpr); ok {
							if id, ok := s.X.(*ast.Ident); ok && id.Name == "fmt" || s.Sel.Name == "Error" || s.Sel.Name == "String" {
								t.Errorf("%s: log argument formats data (%s)", pos, s.Sel.Name)
							}
						}
					}
					return true
				})
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls < 10 {
		t.Fatalf("found only %d log calls: the walk is broken", calls)
	}
}

// isLogger recognises the agent's logger expressions: log, slog, s.log, c.log, b.log(), ...
func isLogger(x ast.Expr) bool {
	switch e := x.(type) {
	case *ast.Ident:
		return e.Name == "log" || e.Name == "slog"
	case *ast.SelectorExpr:
		return e.Sel.Name == "log" || e.Sel.Name == "Logger"
	case *ast.CallExpr:
		return isLogger(e.Fun)
	}
	return false
}

// The regular expressions the string rules replaced (their definition of the syntax).
var ruleSpecs = []struct {
	name string
	ok   func(string) bool
	re   string
}{
	{"dnsLabel", dnsLabel, `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`},
	{"workloadID", workloadID, `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`},
	{"versionString", versionString, `^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$`},
	{"devPath", devPath, `^/dev/[A-Za-z0-9]{1,32}$`},
	{"hostPorts", hostPorts, `^[A-Za-z0-9.:,-]{1,1000}$`},
}

// TestStringRules holds each hand-written rule to its regular expression on edge cases.
func TestStringRules(t *testing.T) {
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	inputs := []string{"", "a", "-", "a-", "-a", "a-b", "A", "0", "web-1", "web_1", "web.1", "é", "a\n", "a b",
		long("a", 63), long("a", 64), long("a", 128), long("a", 129), "a" + long("-", 62) + "a",
		"default.pod.bench", ".x", "_x", "1.2.3+dirty", "v1.0-rc_1", "+v", long("v", 65),
		"/dev/vport2p1", "/dev/", "/dev/hvc0", "/dev/../x", "/dev/" + long("a", 32), "/dev/" + long("a", 33), "dev/vport",
		"10.0.2.2:5000,10.0.2.2:5001", "host:5000", "a/b", long("1", 1000), long("1", 1001), "[::1]:5000"}
	for _, r := range ruleSpecs {
		re := regexp.MustCompile(r.re)
		for _, in := range inputs {
			if got, want := r.ok(in), re.MatchString(in); got != want {
				t.Errorf("%s(%q) = %v, %s says %v", r.name, in, got, r.re, want)
			}
		}
	}
}

func FuzzStringRules(f *testing.F) {
	for _, s := range []string{"web-1", "default.pod.bench", "/dev/vport2p1", "10.0.2.2:5000", "1.2.3+x"} {
		f.Add(s)
	}
	res := make([]*regexp.Regexp, len(ruleSpecs))
	for i, r := range ruleSpecs {
		res[i] = regexp.MustCompile(r.re)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, r := range ruleSpecs {
			if got, want := r.ok(s), res[i].MatchString(s); got != want {
				t.Fatalf("%s(%q) = %v, %s says %v", r.name, s, got, r.re, want)
			}
		}
	})
}

// TestPackageInitIsSmall: the agent runs this package's initialisation before anything else
// at every boot (and in every container init re-exec). It must stay small: the regular
// expressions it once compiled allocated 868 KB in 6,000 allocations (15–23 ms natively).
func TestPackageInitIsSmall(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// init github.com/sealpod/sealpod/agent/boot @40 ms, 23 ms clock, 868432 bytes, 6236 allocs
	m := regexp.MustCompile(`(?m)^init github\.com/sealpod/sealpod/agent/boot @\S+ ms, \S+ ms clock, (\d+) bytes, (\d+) allocs$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no inittrace line for agent/boot in:\n%s", out)
	}
	bytes, _ := strconv.Atoi(m[1])
	allocs, _ := strconv.Atoi(m[2])
	t.Logf("agent/boot init: %d bytes, %d allocs", bytes, allocs)
	if bytes > 32<<10 || allocs > 300 {
		t.Errorf("agent/boot init allocates %d bytes in %d allocs; want ≤ 32 KiB, ≤ 300", bytes, allocs)
	}
}
