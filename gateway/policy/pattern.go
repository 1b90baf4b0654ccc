package policy

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// glob is a compiled flat-name pattern: '*' matches any run of characters,
// '?' matches exactly one. It is used for service, database, role and gRPC
// name patterns, none of which have path structure.
type glob struct {
	kind   globKind
	lit    string // literal, prefix or suffix, by kind
	suffix string // for globPrefixSuffix
	pat    string // full pattern, for globGeneral
}

type globKind uint8

const (
	globAny          globKind = iota // "*"
	globLiteral                      // "abc"
	globPrefix                       // "abc*"
	globSuffix                       // "*abc"
	globPrefixSuffix                 // "ab*cd"
	globGeneral                      // anything else
)

// compileGlob compiles a flat glob. forbidden lists characters that may not
// appear in the pattern at all.
func compileGlob(pat, forbidden string) (glob, error) {
	if pat == "" {
		return glob{}, fmt.Errorf("empty pattern")
	}
	for i, r := range pat {
		if r == utf8.RuneError {
			return glob{}, fmt.Errorf("bad glob %q: invalid UTF-8 at byte %d", pat, i)
		}
		if r < 0x20 || r == 0x7f || r == ' ' || r == '\t' {
			return glob{}, fmt.Errorf("bad glob %q: spaces and control characters are not allowed", pat)
		}
		if r == '[' || r == ']' || r == '\\' || r == '{' || r == '}' {
			return glob{}, fmt.Errorf("bad glob %q: only * and ? are special, %q is not allowed", pat, r)
		}
		if strings.ContainsRune(forbidden, r) {
			return glob{}, fmt.Errorf("bad glob %q: %q is not allowed", pat, r)
		}
	}
	stars := strings.Count(pat, "*")
	switch {
	case strings.ContainsRune(pat, '?'):
		return glob{kind: globGeneral, pat: pat}, nil
	case stars == 0:
		return glob{kind: globLiteral, lit: pat}, nil
	case strings.Trim(pat, "*") == "":
		return glob{kind: globAny}, nil
	case stars == 1 && pat[len(pat)-1] == '*':
		return glob{kind: globPrefix, lit: pat[:len(pat)-1]}, nil
	case stars == 1 && pat[0] == '*':
		return glob{kind: globSuffix, lit: pat[1:]}, nil
	case stars == 1:
		i := strings.IndexByte(pat, '*')
		return glob{kind: globPrefixSuffix, lit: pat[:i], suffix: pat[i+1:]}, nil
	}
	return glob{kind: globGeneral, pat: pat}, nil
}

func (g *glob) match(s string) bool {
	switch g.kind {
	case globAny:
		return true
	case globLiteral:
		return s == g.lit
	case globPrefix:
		return strings.HasPrefix(s, g.lit)
	case globSuffix:
		return strings.HasSuffix(s, g.lit)
	case globPrefixSuffix:
		return len(s) >= len(g.lit)+len(g.suffix) && strings.HasPrefix(s, g.lit) && strings.HasSuffix(s, g.suffix)
	}
	return wildMatch(g.pat, s, true)
}

// wildMatch reports whether s matches pat, where '*' matches any run of
// characters and, when question is set, '?' matches exactly one character.
// It backtracks only to the last star, so it runs in O(len(pat)*len(s)).
func wildMatch(pat, s string, question bool) bool {
	var p, i int
	star, mark := -1, 0
	for i < len(s) {
		if p < len(pat) {
			switch c := pat[p]; {
			case c == '*':
				star, mark = p, i
				p++
				continue
			case c == '?' && question:
				_, n := utf8.DecodeRuneInString(s[i:])
				p++
				i += n
				continue
			case c == s[i]:
				p++
				i++
				continue
			}
		}
		if star < 0 {
			return false
		}
		// Let the last star swallow one more character and retry.
		_, n := utf8.DecodeRuneInString(s[mark:])
		mark += n
		p, i = star+1, mark
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

// segment is one compiled path segment pattern: "**" (any number of
// segments), or a pattern where '*' matches within the segment.
type segment struct {
	multi bool   // "**"
	pat   string // segment pattern, '*' matches within the segment
	wild  bool   // pat contains '*'
}

func (s *segment) match(seg string) bool {
	if !s.wild {
		return seg == s.pat
	}
	return wildMatch(s.pat, seg, false)
}

// pathPattern is a compiled slash-separated pattern. The empty path has no
// segments; "/" has one empty segment; "/a/b" has segments "a" and "b".
type pathPattern []segment

// compilePath compiles a path pattern that starts with "/" (or is empty).
// allowEmpty permits empty segments ("/", "/a//b", "/a/").
// validChar reports whether a non-'*' character may appear.
func compilePath(p string, allowEmpty bool, validChar func(r rune) bool) (pathPattern, error) {
	if p == "" {
		return pathPattern{}, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("must start with \"/\"")
	}
	var out pathPattern
	for _, seg := range strings.Split(p[1:], "/") {
		switch {
		case seg == "**":
			if len(out) > 0 && out[len(out)-1].multi {
				continue // "**/**" is "**"
			}
			out = append(out, segment{multi: true})
			continue
		case strings.Contains(seg, "**"):
			return nil, fmt.Errorf("bad glob: \"**\" must be a whole path segment, not part of %q", seg)
		case seg == "" && !allowEmpty:
			return nil, fmt.Errorf("empty path segment")
		case !allowEmpty && (seg == "." || seg == ".."):
			return nil, fmt.Errorf("path segment %q is not allowed", seg)
		}
		for _, r := range seg {
			if r != '*' && !validChar(r) {
				return nil, fmt.Errorf("character %q is not allowed", r)
			}
		}
		out = append(out, segment{pat: seg, wild: strings.Contains(seg, "*")})
	}
	return out, nil
}

// match reports whether path matches. path is "" or starts with "/".
func (pp pathPattern) match(path string) bool {
	for i := range pp {
		s := &pp[i]
		if s.multi {
			rest := pp[i+1:]
			if len(rest) == 0 {
				return true
			}
			for {
				if rest.match(path) {
					return true
				}
				if path == "" {
					return false
				}
				if j := strings.IndexByte(path[1:], '/'); j >= 0 {
					path = path[1+j:]
				} else {
					path = ""
				}
			}
		}
		if path == "" || path[0] != '/' {
			return false
		}
		seg, next := path[1:], ""
		if j := strings.IndexByte(seg, '/'); j >= 0 {
			seg, next = seg[:j], seg[j:]
		}
		if !s.match(seg) {
			return false
		}
		path = next
	}
	return path == ""
}

// patternError is a pattern that does not compile.
type patternError struct {
	what, pattern, detail string
}

func (e *patternError) Error() string {
	return e.what + " " + strconv.Quote(e.pattern) + ": " + e.detail
}

// in returns the error as a message that says where the pattern is.
func (e *patternError) in(where string) string {
	return e.what + " " + strconv.Quote(e.pattern) + " in " + where + ": " + e.detail
}

// identityPattern is a compiled entry of a rule's identities: either a
// SPIFFE ID pattern or group:NAME.
type identityPattern struct {
	group       string // set for group:NAME
	trustDomain string
	path        pathPattern
}

const groupPrefix = "group:"

func compileIdentity(s string) (identityPattern, error) {
	if name, ok := strings.CutPrefix(s, groupPrefix); ok {
		if name == "" {
			return identityPattern{}, &patternError{"invalid identity", s, "group name is empty"}
		}
		for _, r := range name {
			if r <= ' ' || r == 0x7f || r == utf8.RuneError {
				return identityPattern{}, &patternError{"invalid identity", s, "group names may not contain spaces or control characters"}
			}
		}
		return identityPattern{group: name}, nil
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return identityPattern{}, &patternError{"invalid identity", s, "want a SPIFFE ID pattern (spiffe://TRUST_DOMAIN/PATH) or group:NAME"}
	}
	td, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		td, path = rest[:i], rest[i:]
	}
	if td == "" {
		return identityPattern{}, &patternError{"invalid SPIFFE ID pattern", s, "trust domain is missing"}
	}
	if _, err := spiffeid.TrustDomainFromString(td); err != nil {
		return identityPattern{}, &patternError{"invalid SPIFFE ID pattern", s, fmt.Sprintf("trust domain %q: only lower-case letters, digits, '.', '-' and '_' are allowed, and no globs", td)}
	}
	pp, err := compilePath(path, false, spiffePathChar)
	if err != nil {
		return identityPattern{}, &patternError{"invalid SPIFFE ID pattern", s, err.Error()}
	}
	return identityPattern{trustDomain: td, path: pp}, nil
}

func spiffePathChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
}

func (ip *identityPattern) match(id spiffeid.ID, groups []string) bool {
	if ip.group != "" {
		for _, g := range groups {
			if g == ip.group {
				return true
			}
		}
		return false
	}
	if id.IsZero() || id.TrustDomain().Name() != ip.trustDomain {
		return false
	}
	return ip.path.match(id.Path())
}
