package lazyregexp

import (
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestRegexp(t *testing.T) {
	r := New(`^([a-z]+)-([0-9]{1,3})$`)
	for _, tc := range []struct {
		in    string
		match bool
		sub   []string
	}{
		{"abc-12", true, []string{"abc-12", "abc", "12"}},
		{"abc-1234", false, nil},
		{"ABC-1", false, nil},
		{"", false, nil},
	} {
		if got := r.MatchString(tc.in); got != tc.match {
			t.Errorf("MatchString(%q) = %v, want %v", tc.in, got, tc.match)
		}
		if got := r.FindStringSubmatch(tc.in); !slices.Equal(got, tc.sub) {
			t.Errorf("FindStringSubmatch(%q) = %q, want %q", tc.in, got, tc.sub)
		}
	}
	if r.String() != `^([a-z]+)-([0-9]{1,3})$` {
		t.Errorf("String() = %q", r.String())
	}
}

func TestConcurrentFirstUse(t *testing.T) {
	r := &Regexp{pattern: `^x+$`} // as New outside a test binary: not compiled yet
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !r.MatchString("xxx") {
				t.Error("MatchString(xxx) = false")
			}
		}()
	}
	wg.Wait()
}

// A test binary compiles at New: a bad pattern panics there, where tests see it.
// (inTest must hold here, or this would pass vacuously.)
func TestBadPatternPanicsAtNewInTests(t *testing.T) {
	if !inTest {
		t.Fatalf("inTest is false in the test binary %s", os.Args[0])
	}
	defer func() {
		if recover() == nil {
			t.Error("New(bad pattern) did not panic in a test binary")
		}
	}()
	New(`(`)
}

// Outside a test binary New compiles nothing (the Regexp below is what New returns there): the
// first use compiles, and a bad pattern panics then.
func TestCompiledOnFirstUse(t *testing.T) {
	good := &Regexp{pattern: `^x+$`}
	if good.rx != nil {
		t.Fatal("compiled before first use")
	}
	if !good.MatchString("xx") || good.rx == nil {
		t.Fatal("first use did not compile")
	}
	bad := &Regexp{pattern: `(`}
	defer func() {
		if p, _ := recover().(string); !strings.Contains(p, "missing closing )") {
			t.Errorf("first use of a bad pattern: panic %q, want regexp's", p)
		}
	}()
	bad.MatchString("x")
}
