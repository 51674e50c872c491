// Package lazyregexp is a regular expression compiled on its first use instead of at package
// initialisation.
//
// The agent is PID 1 of a guest that often runs under software emulation, and its binary starts
// three times per pod (boot, libcontainer's `runc init` for each container, and again for each
// exec probe); every start runs every package's initialisers before main. Compiling a
// regular expression there costs microseconds natively but milliseconds under emulation, for
// expressions most of those starts never use (see docs/agent.md, "Boot"). Under `go test` the
// expression is compiled at once, so a bad pattern still fails at package initialisation.
package lazyregexp

import (
	"os"
	"regexp"
	"strings"
	"sync"
)

// inTest: this is a `go test` binary (named pkg.test), where patterns compile at New. Not
// testing.Testing, which would link package testing into the agent.
var inTest = len(os.Args) > 0 && strings.HasSuffix(os.Args[0], ".test")

// Regexp is a regexp.Regexp compiled when one of its methods is first called. It is safe for
// concurrent use.
type Regexp struct {
	pattern string
	once    sync.Once
	rx      *regexp.Regexp
}

// New returns a Regexp for pattern; like regexp.MustCompile, it panics on a bad pattern, but
// on first use (or at once in a test binary).
func New(pattern string) *Regexp {
	r := &Regexp{pattern: pattern}
	if inTest {
		r.re()
	}
	return r
}

func (r *Regexp) re() *regexp.Regexp {
	r.once.Do(func() { r.rx = regexp.MustCompile(r.pattern) })
	return r.rx
}

// MatchString reports whether s contains a match of the expression.
func (r *Regexp) MatchString(s string) bool { return r.re().MatchString(s) }

// FindStringSubmatch is regexp.Regexp.FindStringSubmatch.
func (r *Regexp) FindStringSubmatch(s string) []string { return r.re().FindStringSubmatch(s) }

// String returns the pattern.
func (r *Regexp) String() string { return r.pattern }
