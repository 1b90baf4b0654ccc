package store

import "testing"

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
