package sink

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// maxNameLen bounds sanitised names well below file-system and catalog limits.
const maxNameLen = 120

// SanitizeName maps a CDC table name to a safe identifier: lower-case ASCII
// letters, digits and underscores, starting with a letter or underscore. A
// name that had to change gets a short hash of the original appended, so two
// different names never map to the same identifier ("a-b" and "a_b" differ)
// and no name can escape a warehouse location ("../x" is just characters).
func SanitizeName(name string) string {
	var b strings.Builder
	changed := false
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r + ('a' - 'A'))
			changed = true
		default:
			b.WriteByte('_')
			changed = true
		}
	}
	s := b.String()
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "t_" + s
		changed = true
	}
	if len(s) > maxNameLen {
		s = s[:maxNameLen]
		changed = true
	}
	if changed {
		h := fnv.New32a()
		h.Write([]byte(name))
		s = fmt.Sprintf("%s_%08x", s, h.Sum32())
	}
	return s
}
