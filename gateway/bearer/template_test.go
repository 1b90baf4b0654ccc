package bearer

import (
	"strings"
	"testing"
)

func TestTemplateExpand(t *testing.T) {
	tmpl, err := parseTemplate("spiffe://postern.local/workload/{claim:org}-{sub}", testTD)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		sub, org any
		want     string // the ID, or part of the error when wantErr
		wantErr  bool
	}{
		"plain":           {sub: "runner", org: "acme", want: "spiffe://postern.local/workload/acme-runner"},
		"dots and dashes": {sub: "a.b_c-d", org: "x", want: "spiffe://postern.local/workload/x-a.b_c-d"},
		"a single dot":    {sub: ".", org: "x", wantErr: true, want: "dot segment"},
		"slash":           {sub: "a/b", org: "x", wantErr: true, want: "'/'"},
		"dot dot":         {sub: "..", org: "x", wantErr: true, want: "dot segment"},
		"percent":         {sub: "a%2Fb", org: "x", wantErr: true, want: "'%'"},
		"space":           {sub: "a b", org: "x", wantErr: true, want: "' '"},
		"unicode":         {sub: "ünï", org: "x", wantErr: true, want: "cannot hold"},
		"newline":         {sub: "a\nb", org: "x", wantErr: true, want: `'\n'`},
		"empty":           {sub: "", org: "x", wantErr: true, want: "is empty"},
		"number":          {sub: 7.0, org: "x", wantErr: true, want: "not a string"},
		"missing":         {org: "x", wantErr: true, want: `claim "sub" is missing`},
		"very long":       {sub: strings.Repeat("a", 256), org: "x", wantErr: true, want: "longer than 255"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			claims := map[string]any{"org": tc.org}
			if tc.sub != nil {
				claims["sub"] = tc.sub
			}
			id, err := tmpl.expand(claims)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, %v; want an error containing %q", id, err, tc.want)
				}
				return
			}
			if err != nil || id.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", id, err, tc.want)
			}
		})
	}
}

// TestTemplateDotSegments: values that are harmless alone must not make a
// dot segment together.
func TestTemplateDotSegments(t *testing.T) {
	tmpl, err := parseTemplate("spiffe://postern.local/workload/{claim:a}{claim:b}/x", testTD)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tmpl.expand(map[string]any{"a": ".", "b": "."}); err == nil {
		t.Fatalf("got %s, want a refusal of the segment \"..\"", id)
	}
}
