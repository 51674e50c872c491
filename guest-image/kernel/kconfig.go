package kernel

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// MinimalConfig is the fragment applied on top of `make tinyconfig` for Sealpod's minimal
// guest kernel (minimal.config, docs/guest.md).
//
//go:embed minimal.config
var MinimalConfig []byte

// KconfigOption is one line of a kernel configuration: Value is "y", "m", a number, a quoted
// string, or "" for "# CONFIG_X is not set".
type KconfigOption struct {
	Name  string
	Value string
}

func (o KconfigOption) String() string {
	if o.Value == "" {
		return "# " + o.Name + " is not set"
	}
	return o.Name + "=" + o.Value
}

var (
	kconfigSetRE   = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.+)$`)
	kconfigUnsetRE = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// ParseKconfig reads a .config or a fragment: other comments and blank lines are skipped,
// anything else is an error naming the line.
func ParseKconfig(data []byte) (map[string]KconfigOption, error) {
	opts := make(map[string]KconfigOption)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		var o KconfigOption
		if m := kconfigSetRE.FindStringSubmatch(line); m != nil {
			o = KconfigOption{Name: m[1], Value: m[2]}
		} else if m := kconfigUnsetRE.FindStringSubmatch(line); m != nil {
			o = KconfigOption{Name: m[1]}
		} else if line == "" || strings.HasPrefix(line, "#") {
			continue
		} else {
			return nil, fmt.Errorf("kernel config line %d: %.60q is not CONFIG_X=value or \"# CONFIG_X is not set\"", n, line)
		}
		opts[o.Name] = o
	}
	return opts, sc.Err()
}

// CheckKconfig returns, sorted, every option of the fragment whose value the final .config
// does not have: Kconfig silently drops a symbol that does not exist or whose dependencies
// are not met, so a typo or a lost dependency would otherwise build a kernel without it.
func CheckKconfig(fragment, final []byte) ([]string, error) {
	want, err := ParseKconfig(fragment)
	if err != nil {
		return nil, fmt.Errorf("fragment: %w", err)
	}
	got, err := ParseKconfig(final)
	if err != nil {
		return nil, fmt.Errorf(".config: %w", err)
	}
	var bad []string
	for name, w := range want {
		g, ok := got[name]
		switch {
		case w.Value == "" && (!ok || g.Value == ""):
		case ok && g.Value == w.Value:
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: absent from .config (unknown symbol or unmet dependency)", w))
		default:
			bad = append(bad, fmt.Sprintf("%s: .config has %s", w, g))
		}
	}
	sort.Strings(bad)
	return bad, nil
}
