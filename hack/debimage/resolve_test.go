package debimage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// testdata/apt-simulate-redis.txt and apt-depends-redis.txt are the real output of
// `apt-get -s -o Dir::State::status=/dev/null … install libc6 redis-server` and of
// `apt-cache depends --no-recommends … <those packages>` on Debian 12 (December 2026).
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func names(pkgs []Package) []string {
	var n []string
	for _, p := range pkgs {
		n = append(n, p.Name)
	}
	return n
}

// fakeApt answers apt-get -s and apt-cache depends from testdata.
func fakeApt(t *testing.T) Runner {
	sim, deps := readTestdata(t, "apt-simulate-redis.txt"), readTestdata(t, "apt-depends-redis.txt")
	return func(_ context.Context, _, name string, args ...string) ([]byte, error) {
		switch {
		case name == "apt-get" && args[0] == "-s":
			return sim, nil
		case name == "apt-cache" && args[0] == "depends":
			return deps, nil
		}
		return nil, fmt.Errorf("unexpected command %s %v", name, args)
	}
}

func TestResolveRedis(t *testing.T) {
	pkgs, err := Resolve(context.Background(), fakeApt(t), []string{"libc6", "redis-server"}, DefaultExclude)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(names(pkgs), " ")
	// What redis-server links against, and nothing only maintainer scripts use.
	for _, want := range []string{"libc6", "redis-server", "redis-tools", "libjemalloc2", "liblzf1", "libssl3", "libsystemd0"} {
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("resolved %q lacks %s", got, want)
		}
	}
	for _, no := range []string{"perl-base", "adduser", "debconf", "init-system-helpers", "usrmerge", "dpkg", "libpam0g"} {
		if strings.Contains(" "+got+" ", " "+no+" ") {
			t.Errorf("resolved %q has %s (only maintainer scripts need it)", got, no)
		}
	}
	for _, p := range pkgs {
		if p.Name == "redis-server" && (p.Version != "5:7.0.15-1~deb12u10" || p.Arch != "amd64") {
			t.Errorf("redis-server pinned to %+v, want apt's candidate 5:7.0.15-1~deb12u10 amd64", p)
		}
	}
	// Without exclusions it is apt's whole closure.
	all, err := Resolve(context.Background(), fakeApt(t), []string{"libc6", "redis-server"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sim, _ := ParseSimulation(readTestdata(t, "apt-simulate-redis.txt"))
	if !reflect.DeepEqual(all, sim) || len(all) <= len(pkgs) {
		t.Errorf("without exclusions: %d packages, apt resolved %d, pruned %d", len(all), len(sim), len(pkgs))
	}
}

func TestResolveErrors(t *testing.T) {
	fail := func(context.Context, string, string, ...string) ([]byte, error) {
		return nil, errors.New("E: Unable to locate package no-such-pkg")
	}
	tests := []struct {
		name  string
		run   Runner
		roots []string
		want  string
	}{
		{"no packages", fakeApt(t), nil, "no packages"},
		{"bad name", fakeApt(t), []string{"Redis;rm"}, `"Redis;rm" is not a Debian package name`},
		{"apt fails", fail, []string{"no-such-pkg"}, "Unable to locate package"},
		{"root not resolved", fakeApt(t), []string{"nginx"}, "nginx is not among the packages apt resolved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Resolve(context.Background(), tt.run, tt.roots, nil)
			if !errors.Is(err, ErrResolve) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want ErrResolve with %q", err, tt.want)
			}
		})
	}
}

func TestParseSimulation(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Package
		err      string
	}{
		{"plain", "Inst libc6 (2.36-9 Debian:12.15/oldstable [amd64]) []\nConf libc6 (2.36-9)\n",
			[]Package{{"libc6", "2.36-9", "amd64"}}, ""},
		{"epoch and all, sorted", "Inst redis-tools (5:7.0.15-1 Debian-Security:12 [amd64])\nInst debconf (1.5.82 Debian:12.15/oldstable [all])\n",
			[]Package{{"debconf", "1.5.82", "all"}, {"redis-tools", "5:7.0.15-1", "amd64"}}, ""},
		{"upgrade form", "Inst libc6 [2.36-8] (2.36-9 Debian:12 [amd64])\n", []Package{{"libc6", "2.36-9", "amd64"}}, ""},
		{"garbled", "Inst libc6 2.36\n", nil, "not name (version"},
		{"bad version", "Inst libc6 (2.36;x Debian [amd64])\n", nil, "bad name, version or arch"},
		{"twice", "Inst a1 (1 D [amd64])\nInst a1:i386 (1 D [i386])\n", nil, "resolved twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSimulation([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseDepends(t *testing.T) {
	in := `redis-server
  PreDepends: init-system-helpers
  Depends: lsb-base
    sysvinit-utils:ppc64el
    sysvinit-utils
  Depends: redis-tools
  Recommends: ssl-cert
libc6
  Depends: libgcc-s1
nginx-common
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
zlib1g
`
	got, err := ParseDepends([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"redis-server": {"init-system-helpers", "lsb-base", "redis-tools"},
		"libc6":        {"libgcc-s1"},
		"nginx-common": {"debconf", "cdebconf", "debconf"},
		"zlib1g":       nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	for _, bad := range []string{"  Depends: x\n", "Redis\n", "a1\n  Depends x\n"} {
		if _, err := ParseDepends([]byte(bad)); !errors.Is(err, ErrResolve) {
			t.Errorf("ParseDepends(%q) = %v, want ErrResolve", bad, err)
		}
	}
}

func TestPrune(t *testing.T) {
	resolved := []Package{{Name: "app"}, {Name: "lib1"}, {Name: "lib2"}, {Name: "helper"}, {Name: "perl"}, {Name: "shared"}}
	edges := map[string][]string{
		"app":    {"lib1", "helper", "not-chosen"},
		"lib1":   {"shared"},
		"helper": {"perl", "shared"},
		"perl":   {"lib2"},
	}
	tests := []struct {
		roots, exclude []string
		want           string
	}{
		{[]string{"app"}, nil, "app lib1 helper perl shared lib2"},
		{[]string{"app"}, []string{"helper"}, "app lib1 shared"},
		{[]string{"app", "helper"}, []string{"helper"}, "app lib1 helper perl shared lib2"}, // a root is never excluded
		{[]string{"app"}, []string{"perl"}, "app lib1 helper shared"},
	}
	for _, tt := range tests {
		got, err := Prune(resolved, edges, tt.roots, tt.exclude)
		if err != nil {
			t.Fatal(err)
		}
		g := map[string]bool{}
		for _, p := range got {
			g[p.Name] = true
		}
		w := strings.Fields(tt.want)
		if len(g) != len(w) {
			t.Errorf("roots %v exclude %v: got %v, want %v", tt.roots, tt.exclude, names(got), w)
			continue
		}
		for _, n := range w {
			if !g[n] {
				t.Errorf("roots %v exclude %v: got %v, want %v", tt.roots, tt.exclude, names(got), w)
			}
		}
	}
}

func FuzzParseDepends(f *testing.F) {
	f.Add(readTestdata(f, "apt-depends-redis.txt"))
	f.Add([]byte("a1\n |Depends: <v>\n    b1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		edges, err := ParseDepends(b)
		if err != nil {
			return
		}
		for k := range edges {
			if !ValidName(k) {
				t.Fatalf("package %q accepted", k)
			}
		}
	})
}

func FuzzParseSimulation(f *testing.F) {
	f.Add(readTestdata(f, "apt-simulate-redis.txt"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkgs, err := ParseSimulation(b)
		if err != nil {
			return
		}
		for _, p := range pkgs {
			if !ValidName(p.Name) || !versionRE.MatchString(p.Version) || !archRE.MatchString(p.Arch) {
				t.Fatalf("accepted %+v", p)
			}
		}
	})
}
