// Package qapischema reads QEMU's QAPI schema files (qapi/*.json: JSON with single-quoted
// strings and '#' comments) far enough to check QEMU command lines against them: structs with
// their base and members (optional "*name", type, list), enums, unions (ObjectOptions maps an
// object type to its properties struct; SocketAddress is a flat union), and, from the doc
// comments, each definition's "Since:" and each member's "(since X.Y)" and text.
//
// It is used by the qemu package's tests (runtime-shim/qemu/qapi_test.go) with the schema
// files vendored in runtime-shim/qemu/testdata/qapi. Only the expressions it needs are kept:
// commands, events, includes and pragmas are skipped.
package qapischema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Member is a struct or union-base member.
type Member struct {
	Name     string
	Type     string // element type for lists
	List     bool
	Optional bool   // "*name"
	Doc      string // the member's doc text ("@name: …"), whitespace-collapsed
	Since    string // "X.Y" from "(since X.Y)" in Doc, "" if none
}

// Struct is a 'struct' (or an inline union base).
type Struct struct {
	Name, Base string
	Members    []Member
	Since      string // from "Since:" in the doc block
}

// Enum is an 'enum'.
type Enum struct {
	Name   string
	Values []string
	Since  string
}

// Union is a discriminated 'union'.
type Union struct {
	Name          string
	Base          string   // named base struct, or "" with InlineBase
	InlineBase    []Member // base given inline as a dict
	Discriminator string
	Branches      map[string]string // discriminator value -> struct name
	Since         string
}

// Schema is the union of the definitions of one or more schema files.
type Schema struct {
	Structs map[string]*Struct
	Enums   map[string]*Enum
	Unions  map[string]*Union
}

// LoadFiles parses the given schema files into one Schema. Includes are not followed:
// definitions from files not given stay unknown (an error only when a check needs them).
func LoadFiles(paths ...string) (*Schema, error) {
	s := &Schema{Structs: map[string]*Struct{}, Enums: map[string]*Enum{}, Unions: map[string]*Union{}}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if err := s.Add(filepath.Base(p), b); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// expr is one top-level expression with the doc block before it.
type expr struct {
	json []byte
	doc  []string
	line int
}

// split turns QAPI schema text into JSON expressions: single-quoted strings become JSON
// strings, comments are dropped (the last "##" … "##" block is attached to the next
// expression).
func split(src []byte) ([]expr, error) {
	var (
		out        []expr
		cur        bytes.Buffer
		depth      int
		line       = 1
		start      int
		doc, block []string
		inBlock    bool
	)
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\n':
			line++
			if depth > 0 {
				cur.WriteByte(' ')
			}
		case c == '#':
			j := bytes.IndexByte(src[i:], '\n')
			if j < 0 {
				j = len(src) - i
			}
			text := string(src[i : i+j])
			i += j - 1
			if depth > 0 {
				continue // comment inside an expression
			}
			switch {
			case strings.TrimSpace(text) == "##":
				if inBlock {
					doc, inBlock = block, false
				} else {
					block, inBlock = nil, true
				}
			case inBlock:
				block = append(block, strings.TrimPrefix(strings.TrimPrefix(text, "#"), " "))
			}
		case c == '\'':
			j := i + 1
			for j < len(src) && src[j] != '\'' && src[j] != '\n' {
				j++
			}
			if j >= len(src) || src[j] != '\'' {
				return nil, fmt.Errorf("line %d: unterminated string", line)
			}
			if depth == 0 {
				return nil, fmt.Errorf("line %d: string outside an expression", line)
			}
			q, _ := json.Marshal(string(src[i+1 : j]))
			cur.Write(q)
			i = j
		case c == '"':
			return nil, fmt.Errorf("line %d: double-quoted string (QAPI uses single quotes)", line)
		case c == '{' || c == '[':
			if depth == 0 {
				if c != '{' {
					return nil, fmt.Errorf("line %d: top-level expression must be an object", line)
				}
				cur.Reset()
				start = line
			}
			depth++
			cur.WriteByte(c)
		case c == '}' || c == ']':
			if depth == 0 {
				return nil, fmt.Errorf("line %d: unbalanced %q", line, c)
			}
			depth--
			cur.WriteByte(c)
			if depth == 0 {
				out = append(out, expr{json: bytes.Clone(cur.Bytes()), doc: doc, line: start})
				doc = nil
			}
		case c == ' ' || c == '\t' || c == '\r':
			if depth > 0 {
				cur.WriteByte(' ')
			}
		default:
			if depth == 0 {
				return nil, fmt.Errorf("line %d: unexpected %q outside an expression", line, c)
			}
			cur.WriteByte(c)
		}
	}
	if depth != 0 || inBlock {
		return nil, errors.New("unexpected end of schema (open expression or doc block)")
	}
	return out, nil
}

var (
	reSince       = regexp.MustCompile(`^Since:?\s+(\d+\.\d+)`)
	reMemberSince = regexp.MustCompile(`(?i)\bsince:?\s+(\d+\.\d+)`)
	reMemberDoc   = regexp.MustCompile(`^@([A-Za-z0-9_-]+):\s*(.*)$`)
)

// parseDoc returns the "Since:" version and the member docs of a doc block.
func parseDoc(lines []string) (since string, members map[string]string) {
	members = map[string]string{}
	cur := ""
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if m := reSince.FindStringSubmatch(t); m != nil {
			since, cur = m[1], ""
			continue
		}
		if m := reMemberDoc.FindStringSubmatch(t); m != nil && !strings.HasPrefix(l, " ") {
			cur = m[1]
			members[cur] = m[2]
			continue
		}
		if t == "" || !strings.HasPrefix(l, " ") {
			cur = "" // blank line or a new top-level paragraph ends a member's doc
			continue
		}
		if cur != "" {
			members[cur] += " " + t
		}
	}
	return since, members
}

// members parses a 'data' dict.
func members(raw json.RawMessage, docs map[string]string) ([]Member, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var out []Member
	for name, t := range data {
		m := Member{Name: strings.TrimPrefix(name, "*"), Optional: strings.HasPrefix(name, "*")}
		if err := parseType(t, &m); err != nil {
			return nil, fmt.Errorf("member %s: %w", name, err)
		}
		m.Doc = docs[m.Name]
		if s := reMemberSince.FindStringSubmatch(m.Doc); s != nil {
			m.Since = s[1]
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// parseType reads 'str', ['str'] or { 'type': …, 'if': … }.
func parseType(raw json.RawMessage, m *Member) error {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		m.Type = s
		return nil
	}
	var l []string
	if json.Unmarshal(raw, &l) == nil && len(l) == 1 {
		m.Type, m.List = l[0], true
		return nil
	}
	var d struct {
		Type json.RawMessage `json:"type"`
	}
	if json.Unmarshal(raw, &d) == nil && len(d.Type) > 0 {
		return parseType(d.Type, m)
	}
	return fmt.Errorf("unsupported type %s", raw)
}

// Add parses one schema file's text (name is for errors).
func (s *Schema) Add(name string, src []byte) error {
	exprs, err := split(src)
	if err != nil {
		return fmt.Errorf("qapi schema %s: %w", name, err)
	}
	for _, e := range exprs {
		var x struct {
			Struct, Enum, Union *string
			Base                json.RawMessage
			Data                json.RawMessage
			Discriminator       string
		}
		if err := json.Unmarshal(e.json, &x); err != nil {
			return fmt.Errorf("qapi schema %s line %d: %w", name, e.line, err)
		}
		since, docs := parseDoc(e.doc)
		wrap := func(err error) error { return fmt.Errorf("qapi schema %s line %d: %w", name, e.line, err) }
		switch {
		case x.Struct != nil:
			st := &Struct{Name: *x.Struct, Since: since}
			if len(x.Base) > 0 && json.Unmarshal(x.Base, &st.Base) != nil {
				return wrap(fmt.Errorf("struct %s: base must name a struct", st.Name))
			}
			if st.Members, err = members(x.Data, docs); err != nil {
				return wrap(fmt.Errorf("struct %s: %w", st.Name, err))
			}
			s.Structs[st.Name] = st
		case x.Enum != nil:
			en := &Enum{Name: *x.Enum, Since: since}
			var vals []json.RawMessage
			if err := json.Unmarshal(x.Data, &vals); err != nil {
				return wrap(fmt.Errorf("enum %s: %w", en.Name, err))
			}
			for _, v := range vals {
				var m Member
				var d struct{ Name string }
				if json.Unmarshal(v, &d) == nil && d.Name != "" {
					m.Type = d.Name
				} else if err := parseType(v, &m); err != nil {
					return wrap(fmt.Errorf("enum %s: %w", en.Name, err))
				}
				en.Values = append(en.Values, m.Type)
			}
			s.Enums[en.Name] = en
		case x.Union != nil:
			u := &Union{Name: *x.Union, Discriminator: x.Discriminator, Since: since, Branches: map[string]string{}}
			if json.Unmarshal(x.Base, &u.Base) != nil {
				if u.InlineBase, err = members(x.Base, docs); err != nil {
					return wrap(fmt.Errorf("union %s base: %w", u.Name, err))
				}
			}
			bs, err := members(x.Data, nil)
			if err != nil {
				return wrap(fmt.Errorf("union %s: %w", u.Name, err))
			}
			for _, b := range bs {
				u.Branches[b.Name] = b.Type
			}
			s.Unions[u.Name] = u
		}
	}
	return nil
}

// StructMembers returns the members of a struct including those of its bases (base first).
func (s *Schema) StructMembers(name string) ([]Member, error) {
	var out []Member
	seen := map[string]bool{}
	for n := name; n != ""; {
		if seen[n] {
			return nil, fmt.Errorf("struct %s: base cycle at %s", name, n)
		}
		seen[n] = true
		st, ok := s.Structs[n]
		if !ok {
			return nil, fmt.Errorf("struct %s not in the schema", n)
		}
		out = append(append([]Member(nil), st.Members...), out...)
		n = st.Base
	}
	return out, nil
}

// UnionMembers returns the members of a union for one discriminator value: base plus branch.
func (s *Schema) UnionMembers(union, value string) ([]Member, error) {
	u, ok := s.Unions[union]
	if !ok {
		return nil, fmt.Errorf("union %s not in the schema", union)
	}
	base := u.InlineBase
	if u.Base != "" {
		var err error
		if base, err = s.StructMembers(u.Base); err != nil {
			return nil, err
		}
	}
	var disc *Member
	for i := range base {
		if base[i].Name == u.Discriminator {
			disc = &base[i]
		}
	}
	if disc == nil {
		return nil, fmt.Errorf("union %s: discriminator %q not in its base", union, u.Discriminator)
	}
	if err := s.CheckEnum(disc.Type, value); err != nil {
		return nil, fmt.Errorf("union %s: %s: %w", union, u.Discriminator, err)
	}
	out := append([]Member(nil), base...)
	if b, ok := u.Branches[value]; ok {
		bm, err := s.StructMembers(b)
		if err != nil {
			return nil, err
		}
		out = append(out, bm...)
	}
	return out, nil
}

// CheckEnum reports whether v is a value of the enum.
func (s *Schema) CheckEnum(enum, v string) error {
	e, ok := s.Enums[enum]
	if !ok {
		return fmt.Errorf("enum %s not in the schema", enum)
	}
	for _, x := range e.Values {
		if x == v {
			return nil
		}
	}
	return fmt.Errorf("%q is not a value of enum %s", v, enum)
}

// ObjectProperties returns the properties -object / object-add accept for a QOM type: the
// ObjectOptions union's base (qom-type, id) plus the properties struct of that type.
func (s *Schema) ObjectProperties(qomType string) (map[string]Member, error) {
	ms, err := s.UnionMembers("ObjectOptions", qomType)
	if err != nil {
		return nil, err
	}
	out := map[string]Member{}
	for _, m := range ms {
		out[m.Name] = m
	}
	return out, nil
}

// ObjectStruct returns the properties struct ObjectOptions names for a QOM type ("" if none).
func (s *Schema) ObjectStruct(qomType string) string {
	if u, ok := s.Unions["ObjectOptions"]; ok {
		return u.Branches[qomType]
	}
	return ""
}
