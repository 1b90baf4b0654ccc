package store

import (
	"fmt"
	"slices"
	"testing"
)

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		glob, s string
		want    bool
	}{
		{"a*", "a", true},
		{"a*", "abc", true},
		{"a*", "Abc", false},
		{"*c", "abc", true},
		{"a*c", "ac", true},
		{"a*c", "abbc", true},
		{"a*c", "abcd", false},
		{"ab*bc", "abc", false}, // prefix and suffix must not overlap
		{"ab*bc", "abbc", true},
		{"*b*b*", "abab", true},
		{"*b*b*", "ab", false},
		{"*x*", "abc", false},
		{"*", "", true},
		{"**", "anything", true},
		{"a*%", "ab%", true},
		{"a*%", "abx", false},
	}
	for _, tt := range tests {
		t.Run(tt.glob+" "+tt.s, func(t *testing.T) {
			if got := MatchGlob(tt.glob, tt.s); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAddIdentity(t *testing.T) {
	many := make([]string, MaxIdentities)
	for i := range many {
		many[i] = fmt.Sprintf("spiffe://td/user/u%d", i)
	}
	tests := []struct {
		name       string
		identity   string
		others     []string
		add        string
		wantID     string
		wantOthers []string
	}{
		{name: "first becomes the identity", add: "spiffe://td/a", wantID: "spiffe://td/a"},
		{name: "empty is nobody", identity: "spiffe://td/a", add: "", wantID: "spiffe://td/a"},
		{name: "the identity again", identity: "spiffe://td/a", add: "spiffe://td/a", wantID: "spiffe://td/a"},
		{name: "another joins the others", identity: "spiffe://td/a", add: "spiffe://td/b",
			wantID: "spiffe://td/a", wantOthers: []string{"spiffe://td/b"}},
		{name: "an other again", identity: "spiffe://td/a", others: []string{"spiffe://td/b"}, add: "spiffe://td/b",
			wantID: "spiffe://td/a", wantOthers: []string{"spiffe://td/b"}},
		{name: "in order", identity: "spiffe://td/a", others: []string{"spiffe://td/c"}, add: "spiffe://td/b",
			wantID: "spiffe://td/a", wantOthers: []string{"spiffe://td/c", "spiffe://td/b"}},
		{name: "at most MaxIdentities others", identity: "spiffe://td/a", others: many, add: "spiffe://td/b",
			wantID: "spiffe://td/a", wantOthers: many},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Session{Identity: tt.identity, Identities: slices.Clone(tt.others)}
			s.AddIdentity(tt.add)
			if s.Identity != tt.wantID || !slices.Equal(s.Identities, tt.wantOthers) {
				t.Fatalf("got %q %q, want %q %q", s.Identity, s.Identities, tt.wantID, tt.wantOthers)
			}
			for _, id := range append([]string{tt.wantID}, tt.wantOthers...) {
				if id != "" && !s.HasIdentity(id) {
					t.Errorf("HasIdentity(%q) = false", id)
				}
			}
			if s.HasIdentity("spiffe://td/nobody") {
				t.Errorf("HasIdentity of an identity that did not act = true")
			}
		})
	}
}
