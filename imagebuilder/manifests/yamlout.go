package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// writeYAML appends a JSON-shaped value (maps with string keys, slices, strings, numbers,
// booleans, nil) as one YAML document. Strings are written plain only when no YAML 1.1 or
// 1.2 parser can read them as anything but that string; otherwise double-quoted with JSON
// escapes (a subset of YAML's). Map keys are sorted, as kubectl prints them. Tests check that
// Kubernetes' own YAML parser reads back exactly the value written.
func writeYAML(b *bytes.Buffer, v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("yaml: document is %T, want an object", v)
	}
	if len(m) == 0 {
		b.WriteString("{}\n")
		return nil
	}
	return writeMap(b, m, 0, false)
}

// writeMap writes m's entries at indent; when inline, the first entry continues the
// current line (after "- ").
func writeMap(b *bytes.Buffer, m map[string]any, indent int, inline bool) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 || !inline {
			writeIndent(b, indent)
		}
		writeString(b, k)
		b.WriteByte(':')
		if err := writeValue(b, m[k], indent); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// writeValue writes the value of a key or list item whose line is already started.
func writeValue(b *bytes.Buffer, v any, indent int) error {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			b.WriteString(" {}\n")
			return nil
		}
		b.WriteByte('\n')
		return writeMap(b, x, indent+2, false)
	case []any:
		if len(x) == 0 {
			b.WriteString(" []\n")
			return nil
		}
		b.WriteByte('\n')
		for i, item := range x {
			writeIndent(b, indent+2)
			b.WriteByte('-')
			var err error
			switch it := item.(type) {
			case map[string]any:
				if len(it) == 0 {
					b.WriteString(" {}\n")
					continue
				}
				b.WriteByte(' ')
				err = writeMap(b, it, indent+4, true)
			default:
				err = writeValue(b, item, indent+2)
			}
			if err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	}
	b.WriteByte(' ')
	if err := writeScalar(b, v); err != nil {
		return err
	}
	b.WriteByte('\n')
	return nil
}

func writeIndent(b *bytes.Buffer, n int) {
	for i := 0; i < n; i++ {
		b.WriteByte(' ')
	}
}

func writeScalar(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		writeString(b, x)
	case json.Number:
		b.WriteString(x.String())
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	default:
		return fmt.Errorf("yaml: unsupported value of type %T", v)
	}
	return nil
}

// writeString writes s plain when that is unambiguous, else double-quoted.
func writeString(b *bytes.Buffer, s string) {
	if plainSafe(s) {
		b.WriteString(s)
		return
	}
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0x2028, r == 0x2029,
			r == 0xfeff, r == 0xfffe, r == 0xffff, r == utf8.RuneError:
			// Not printable in YAML (or not valid UTF-8): escape.
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// reserved are words YAML 1.1 reads as booleans or null (compared lower-cased).
var reserved = map[string]bool{
	"true": true, "false": true, "yes": true, "no": true, "on": true, "off": true,
	"y": true, "n": true, "null": true, "~": true,
}

// plainSafe accepts strings that start with a letter, '/' or '_', contain only letters,
// digits, white space inside and . _ / : @ + = , - and hold no ": " or " #".
func plainSafe(s string) bool {
	if s == "" || reserved[strings.ToLower(s)] {
		return false
	}
	c := s[0]
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '/' || c == '_') {
		return false
	}
	last := s[len(s)-1]
	if last == ' ' || last == ':' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '/', c == '@', c == '+', c == '=', c == ',', c == '-':
		case c == ':':
			if i+1 < len(s) && s[i+1] == ' ' {
				return false
			}
		case c == ' ':
			if i+1 < len(s) && (s[i+1] == '#' || s[i+1] == ' ') {
				return false
			}
		default:
			return false
		}
	}
	return true
}
