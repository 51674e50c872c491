package hostvalue

import "strings"

// Refs returns the names s references as $(NAME) under Kubernetes' expansion rules: "$$"
// is a literal "$", an unterminated "$(" is literal, "$(" + ")" names nothing. The agent's
// expansion (agent/containers) substitutes exactly these names when they are defined.
func Refs(s string) []string {
	var names []string
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		switch s[i+1] {
		case '$':
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				continue
			}
			if end > 0 {
				names = append(names, s[i+2:i+2+end])
			}
			i += 2 + end
		}
	}
	return names
}
