package classify

import "testing"

func TestTags(t *testing.T) {
	tests := map[string]struct {
		tag   string
		known bool
	}{
		"select":        {tag: "SELECT", known: true},
		"truncate":      {tag: "TRUNCATE"},
		"typo":          {tag: "SELEKT"},
		"postern's own": {tag: "FUNCTION CALL", known: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := KnownTag(tc.tag); got != tc.known {
				t.Fatalf("KnownTag(%q): got %v, want %v", tc.tag, got, tc.known)
			}
		})
	}
}

// TestClassifierTagsAreKnown: every tag the classifier gives a statement of
// the corpus is one a policy may name.
func TestClassifierTagsAreKnown(t *testing.T) {
	for sql := range corpus {
		for _, st := range Classify(sql).Statements {
			if st.Tag != "" && !KnownTag(st.Tag) {
				t.Errorf("%q: tag %q is not a known command tag", sql, st.Tag)
			}
		}
	}
}
