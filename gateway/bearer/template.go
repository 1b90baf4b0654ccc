package bearer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/pki"
)

// maxSegment is the longest claim value a template takes.
const maxSegment = 255

// template is a compiled IssuerConfig.Identity: literal text and claims.
type template struct {
	td    spiffeid.TrustDomain
	parts []part
}

// part is literal text, or the value of a claim when claim is set.
type part struct {
	lit   string
	claim string
}

// parseTemplate compiles s. The trust domain and the first path segment
// (user or workload) must be literal, so that no claim can choose them.
func parseTemplate(s string, td spiffeid.TrustDomain) (*template, error) {
	prefix := td.IDString() + "/"
	if !strings.HasPrefix(s, prefix) {
		return nil, fmt.Errorf("must start with %s (the gateway's trust domain)", prefix)
	}
	kind, rest, _ := strings.Cut(s[len(prefix):], "/")
	if kind != pki.KindUser && kind != pki.KindWorkload {
		return nil, fmt.Errorf("the path must start with /%s/ or /%s/", pki.KindUser, pki.KindWorkload)
	}
	if rest == "" {
		return nil, errors.New("no name after the kind")
	}
	t := &template{td: td, parts: []part{{lit: prefix + kind + "/"}}}
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, part{lit: rest})
			break
		}
		if rest[open] == '}' {
			return nil, errors.New(`"}" without "{"`)
		}
		if open > 0 {
			t.parts = append(t.parts, part{lit: rest[:open]})
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] != '}' {
			return nil, errors.New(`"{" without "}"`)
		}
		name := rest[open+1 : open+1+end]
		switch {
		case name == "sub":
			t.parts = append(t.parts, part{claim: "sub"})
		case strings.HasPrefix(name, "claim:") && len(name) > len("claim:"):
			t.parts = append(t.parts, part{claim: name[len("claim:"):]})
		default:
			return nil, fmt.Errorf("unknown placeholder {%s}: want {sub} or {claim:NAME}", name)
		}
		rest = rest[open+1+end+1:]
	}
	// With every claim a plain name, the result must be a Postern identity.
	sample := map[string]any{}
	for _, p := range t.parts {
		if p.claim != "" {
			sample[p.claim] = "x"
		}
	}
	if _, err := t.expand(sample); err != nil {
		return nil, fmt.Errorf("does not make a valid SPIFFE ID: %w", err)
	}
	return t, nil
}

// expand makes the SPIFFE ID for claims. A claim value must be a string of
// SPIFFE path segment characters (letters, digits, '.', '-', '_'), and not
// "." or "..": a value is refused, never escaped, so that it cannot add a
// path segment, and two different values never make the same ID.
func (t *template) expand(claims map[string]any) (spiffeid.ID, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.claim == "" {
			b.WriteString(p.lit)
			continue
		}
		v, err := segmentClaim(claims, p.claim)
		if err != nil {
			return spiffeid.ID{}, err
		}
		b.WriteString(v)
	}
	id, err := spiffeid.FromString(b.String())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s is not a SPIFFE ID: %w", quote(b.String()), err)
	}
	if id.TrustDomain() != t.td {
		return spiffeid.ID{}, fmt.Errorf("%s is not in trust domain %s", id, t.td)
	}
	if k := pki.Kind(id); k != pki.KindUser && k != pki.KindWorkload {
		return spiffeid.ID{}, fmt.Errorf("%s is not a user or workload identity", id)
	}
	return id, nil
}

// segmentClaim returns claim name of claims if it can be (part of) one
// SPIFFE ID path segment.
func segmentClaim(claims map[string]any, name string) (string, error) {
	raw, ok := claims[name]
	if !ok {
		return "", fmt.Errorf("claim %s is missing", quote(name))
	}
	v, ok := raw.(string)
	if !ok {
		return "", fmt.Errorf("claim %s is not a string", quote(name))
	}
	switch {
	case v == "":
		return "", fmt.Errorf("claim %s is empty", quote(name))
	case v == "." || v == "..":
		return "", fmt.Errorf("claim %s is %q, a dot segment", quote(name), v)
	case len(v) > maxSegment:
		return "", fmt.Errorf("claim %s is longer than %d bytes", quote(name), maxSegment)
	}
	for i := 0; i < len(v); i++ {
		if !isSegmentChar(v[i]) {
			return "", fmt.Errorf("claim %s value %s has %q, which a SPIFFE ID path segment cannot hold", quote(name), quote(v), v[i])
		}
	}
	return v, nil
}

func isSegmentChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_'
}
