package qapischema

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// intRange is the range of each QAPI integer built-in.
var intRange = map[string][2]*big.Int{}

func init() {
	for _, b := range []int{8, 16, 32, 64} {
		lo := new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), uint(b-1)))
		hi := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(b-1)), big.NewInt(1))
		intRange["int"+strconv.Itoa(b)] = [2]*big.Int{lo, hi}
		intRange["uint"+strconv.Itoa(b)] = [2]*big.Int{big.NewInt(0), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(b)), big.NewInt(1))}
	}
	intRange["int"] = intRange["int64"]
	intRange["size"] = intRange["uint64"]
}

// reKeyvalInt is what qemu_strtoi64/qemu_strtou64 (base 0) take: decimal, 0x hex, 0 octal.
var reKeyvalInt = regexp.MustCompile(`^[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)$`)

// reSize is what qemu_strtosz takes: a number, optionally with a fraction, and a unit suffix.
var reSize = regexp.MustCompile(`^(0[xX][0-9a-fA-F]+|[0-9]+(\.[0-9]+)?)([bBkKmMgGtTpPeE]?)$`)

func parseKeyvalInt(v string) (*big.Int, bool) {
	if !reKeyvalInt.MatchString(v) {
		return nil, false
	}
	neg := strings.HasPrefix(v, "-")
	d := strings.TrimLeft(v, "+-")
	n := new(big.Int)
	var ok bool
	switch {
	case len(d) > 1 && (d[1] == 'x' || d[1] == 'X'):
		_, ok = n.SetString(d[2:], 16)
	case len(d) > 1 && d[0] == '0':
		_, ok = n.SetString(d[1:], 8)
	default:
		_, ok = n.SetString(d, 10)
	}
	if neg {
		n.Neg(n)
	}
	return n, ok
}

func inRange(typ string, n *big.Int) error {
	r := intRange[typ]
	if n.Cmp(r[0]) < 0 || n.Cmp(r[1]) > 0 {
		return fmt.Errorf("%s out of range for %s [%s, %s]", n, typ, r[0], r[1])
	}
	return nil
}

// CheckKeyval checks a value given in QEMU's key=value syntax (-object TYPE,key=value) against
// a QAPI type, the way QEMU's keyval input visitor parses it: bool on/off/yes/no/true/false/y/n;
// integers decimal, 0x hex or 0 octal within the type's range; sizes with an optional unit
// suffix (K, M, G, T, P, E); enums by value. Structs, unions and lists need dotted keys or JSON
// syntax and are refused here.
func (s *Schema) CheckKeyval(typ string, list bool, v string) error {
	if list {
		return fmt.Errorf("list of %s: not checkable in key=value syntax (use JSON)", typ)
	}
	switch {
	case typ == "str" || typ == "any":
		return nil
	case typ == "bool":
		switch v {
		case "on", "yes", "true", "y", "off", "no", "false", "n":
			return nil
		}
		return fmt.Errorf("%q is not a bool (on/off/yes/no/true/false/y/n)", v)
	case typ == "number":
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		return nil
	case typ == "size":
		m := reSize.FindStringSubmatch(v)
		if m == nil {
			return fmt.Errorf("%q is not a size (number with optional K/M/G/T/P/E suffix)", v)
		}
		f, _ := new(big.Float).SetString(m[1])
		if strings.HasPrefix(strings.ToLower(m[1]), "0x") {
			n, _ := parseKeyvalInt(m[1])
			f = new(big.Float).SetInt(n)
		}
		shift := map[string]uint{"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}[strings.ToLower(m[3])]
		f.Mul(f, new(big.Float).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
		n, _ := f.Int(nil)
		return inRange("size", n)
	case intRange[typ][0] != nil:
		n, ok := parseKeyvalInt(v)
		if !ok {
			return fmt.Errorf("%q is not an integer (%s)", v, typ)
		}
		return inRange(typ, n)
	}
	if _, ok := s.Enums[typ]; ok {
		return s.CheckEnum(typ, v)
	}
	if _, ok := s.Structs[typ]; ok {
		return fmt.Errorf("struct %s: not checkable in key=value syntax (use JSON)", typ)
	}
	if _, ok := s.Unions[typ]; ok {
		return fmt.Errorf("union %s: not checkable in key=value syntax (use JSON)", typ)
	}
	return fmt.Errorf("type %s not in the schema", typ)
}

// CheckMembers checks a set of given member names against the members of a struct or union
// branch: every given name is a member and every required member is given.
func CheckMembers(ms []Member, given []string) error {
	known := map[string]Member{}
	for _, m := range ms {
		known[m.Name] = m
	}
	have := map[string]bool{}
	for _, g := range given {
		if _, ok := known[g]; !ok {
			names := make([]string, 0, len(known))
			for n := range known {
				names = append(names, n)
			}
			sort.Strings(names)
			return fmt.Errorf("unknown property %q (known: %s)", g, strings.Join(names, ", "))
		}
		if have[g] {
			return fmt.Errorf("property %q given twice", g)
		}
		have[g] = true
	}
	for _, m := range ms {
		if !m.Optional && !have[m.Name] {
			return fmt.Errorf("required property %q missing", m.Name)
		}
	}
	return nil
}

// CheckJSON checks a decoded JSON value (numbers as json.Number) against a QAPI type the way
// QEMU's strict (non-keyval) input visitor does: no string-to-number or string-to-bool
// conversions, structs and unions with exactly their members.
func (s *Schema) CheckJSON(typ string, list bool, v any) error {
	if list {
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("want a list of %s, got %T", typ, v)
		}
		for i, e := range a {
			if err := s.CheckJSON(typ, false, e); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	}
	switch {
	case typ == "any":
		return nil
	case typ == "str":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("want a string, got %T", v)
		}
		return nil
	case typ == "bool":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("want a JSON bool, got %T", v)
		}
		return nil
	case typ == "number":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("want a number, got %T", v)
		}
		if f, err := n.Float64(); err != nil || math.IsInf(f, 0) {
			return fmt.Errorf("%s is not a number", n)
		}
		return nil
	case intRange[typ][0] != nil:
		num, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("want an integer (%s), got %T", typ, v)
		}
		n, ok := new(big.Int).SetString(num.String(), 10)
		if !ok {
			return fmt.Errorf("%s is not an integer (%s)", num, typ)
		}
		return inRange(typ, n)
	}
	if _, ok := s.Enums[typ]; ok {
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("enum %s: want a string, got %T", typ, v)
		}
		return s.CheckEnum(typ, str)
	}
	obj, isObj := v.(map[string]any)
	var ms []Member
	var err error
	switch {
	case s.Structs[typ] != nil:
		ms, err = s.StructMembers(typ)
	case s.Unions[typ] != nil:
		u := s.Unions[typ]
		d, ok := obj[u.Discriminator].(string)
		if !isObj || !ok {
			return fmt.Errorf("union %s: want an object with string member %q", typ, u.Discriminator)
		}
		ms, err = s.UnionMembers(typ, d)
	default:
		return fmt.Errorf("type %s not in the schema", typ)
	}
	if err != nil {
		return err
	}
	if !isObj {
		return fmt.Errorf("%s: want an object, got %T", typ, v)
	}
	given := make([]string, 0, len(obj))
	for k := range obj {
		given = append(given, k)
	}
	sort.Strings(given)
	if err := CheckMembers(ms, given); err != nil {
		return fmt.Errorf("%s: %w", typ, err)
	}
	for _, m := range ms {
		if x, ok := obj[m.Name]; ok {
			if err := s.CheckJSON(m.Type, m.List, x); err != nil {
				return fmt.Errorf("%s.%s: %w", typ, m.Name, err)
			}
		}
	}
	return nil
}
