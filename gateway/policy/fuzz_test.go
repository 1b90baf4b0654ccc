package policy

import (
	"context"
	"errors"
	"testing"

	"github.com/postern/postern/protocols"
)

// seeds are valid and invalid documents for FuzzParse.
var seeds = []string{
	fullPolicy,
	matchPolicy,
	benchPolicy(5),
	"",
	"rules: []\n",
	"rules:\n",
	rule(okRule),
	rule(okRule, "effect: deny", "http:", "  - methods: [GET]", "    paths: [\"/a/**\"]"),
	rule(okRule, "grpc:", "  - methods: [\"/a.B/*\"]", "    rate: 1/s"),
	rule(okRule, "postgres:", "  statements: [read, \"CREATE TABLE\"]"),
	rule("identities: [alice]", "services: []", "effect: nope", "servces: [x]"),
	"rules:\n  - &a\n    <<: *a\n",
	"rules: [{name: a, identities: [group:x], services: [x]}, *b]\n",
	"rules:\n  - name: x\n    identities: [group:x]\n    services: [*]\n",
	"rules: []\n---\nrules: []\n",
	"- a\n- b\n",
	"rules: {a: b}\n",
	"\xff\xfe",
	"rules:\n  - name: \"\\u0000\"\n",
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, data)
	})
}

// checkParse parses data and checks what Parse promises: a policy that
// decides, or an *Error with problems.
func checkParse(t *testing.T, data []byte) {
	t.Helper()
	p, err := Parse(data)
	if err != nil {
		var perr *Error
		if !errors.As(err, &perr) {
			t.Fatalf("got error %v (%T), want *Error", err, err)
		}
		if len(perr.Problems) == 0 || p != nil {
			t.Fatalf("got policy %v and %d problems, want no policy and problems", p, len(perr.Problems))
		}
		_ = perr.Error()
		_ = perr.Lines()
		return
	}
	ctx := context.Background()
	for _, r := range []string{"spiffe://postern.local/user/alice", "spiffe://td/a/b/c", ""} {
		d := p.Authorize(ctx, req(r, "pg-main", "analysts"))
		if d.Rule == "" {
			t.Fatalf("got a decision with no rule: %+v", d)
		}
		for _, pg := range []protocols.PostgresRequest{
			{Database: "app", User: "readonly", Startup: true},
			{Database: "app", User: "readonly", Class: ClassWrite, Tag: "INSERT", TagExact: true},
			{Database: "app", User: "readonly", Class: ClassRead, Tag: "BEGIN", TagExact: true, TxControl: true},
		} {
			r := req(r, "pg-main", "analysts")
			r.Postgres = &pg
			d := p.Authorize(ctx, r)
			if d.Rule == "" || d.ReadOnly && (!d.Allow || !pg.Startup) {
				t.Fatalf("%+v: got %+v", pg, d)
			}
		}
	}
	for _, rule := range p.Rules() {
		if rule.Name == "" || len(rule.identities) == 0 || len(rule.services) == 0 {
			t.Fatalf("got an incomplete rule: %+v", rule)
		}
		for _, h := range rule.HTTP {
			h.Match("GET", "/v1/orders/1")
		}
		for _, g := range rule.GRPC {
			g.Match("/a.B/C")
		}
		if pg := rule.Postgres; pg != nil {
			pg.MatchDatabase("app")
			pg.MatchUser("readonly")
			pg.MatchStatement(ClassRead, "SELECT")
		}
	}
}

// TestParseTruncated parses every prefix of valid documents: each either
// parses or returns an *Error, and none panics.
func TestParseTruncated(t *testing.T) {
	for _, doc := range []string{fullPolicy, matchPolicy} {
		for i := range len(doc) {
			checkParse(t, []byte(doc[:i]))
		}
	}
}
