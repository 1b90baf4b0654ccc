package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fullPolicy uses every key of the format.
const fullPolicy = `# Every key of the policy format.
rules:
  - name: analysts-read
    effect: allow
    identities:
      - spiffe://postern.local/user/alice
      - group:analysts
    services: [pg-*]
    rate: 50/s
    postgres:
      databases: [app, "reports_*"]
      users: [readonly]
      statements: [read, SELECT, "CREATE TABLE"]
    http:
      - methods: [GET, post]
        paths: ["/v1/orders/**", "/healthz"]
        rate: 100/s
      - methods: ["*"]
    grpc:
      - methods: ["/orders.v1.Orders/Get*"]
        rate: 10/m
  - name: no-interns
    effect: deny
    identities: ["spiffe://postern.local/intern/**"]
    services: ["*"]
  - name: builders
    identities: ["spiffe://postern.local/ci/*/builder"]
    services: [registry, "cache-?"]
    rate: 1000/h
`

func TestParseFull(t *testing.T) {
	p, err := Parse([]byte(fullPolicy))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	rules := p.Rules()
	if len(rules) != 3 {
		t.Fatalf("got %d rules, want 3", len(rules))
	}
	r := rules[0]
	if r.Name != "analysts-read" || r.Effect != Allow || r.Line != 3 {
		t.Errorf("got name %q effect %v line %d, want analysts-read allow 3", r.Name, r.Effect, r.Line)
	}
	if got, want := r.Identities, []string{"spiffe://postern.local/user/alice", "group:analysts"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got identities %q, want %q", got, want)
	}
	if got, want := r.Services, []string{"pg-*"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got services %q, want %q", got, want)
	}
	if got, want := r.Rate, (&Rate{Count: 50, Per: time.Second}); !reflect.DeepEqual(got, want) {
		t.Errorf("got rate %v, want %v", got, want)
	}
	pg := r.Postgres
	if pg == nil {
		t.Fatal("got no postgres section")
	}
	if got, want := pg.Databases, []string{"app", "reports_*"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got databases %q, want %q", got, want)
	}
	if got, want := pg.Users, []string{"readonly"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got users %q, want %q", got, want)
	}
	if got, want := pg.Classes, []string{"read"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got classes %q, want %q", got, want)
	}
	if got, want := pg.Tags, []string{"SELECT", "CREATE TABLE"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got tags %q, want %q", got, want)
	}
	if len(r.HTTP) != 2 {
		t.Fatalf("got %d http entries, want 2", len(r.HTTP))
	}
	if got, want := r.HTTP[0].Methods, []string{"GET", "POST"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got http methods %q, want %q", got, want)
	}
	if got, want := r.HTTP[0].Rate.String(), "100/s"; got != want {
		t.Errorf("got http rate %q, want %q", got, want)
	}
	if r.HTTP[1].Paths != nil || r.HTTP[1].Rate != nil {
		t.Errorf("got paths %q rate %v in the second http entry, want none", r.HTTP[1].Paths, r.HTTP[1].Rate)
	}
	if len(r.GRPC) != 1 || r.GRPC[0].Rate.String() != "10/m" {
		t.Errorf("got grpc %+v, want one entry with rate 10/m", r.GRPC)
	}
	if r.ConnectionLevel() {
		t.Error("got ConnectionLevel true for a rule with sections")
	}
	if d := rules[1]; d.Effect != Deny || !d.ConnectionLevel() || d.Line != 22 {
		t.Errorf("got effect %v, connection level %v, line %d, want deny, true, 22", d.Effect, d.ConnectionLevel(), d.Line)
	}
	if got := rules[2].Rate.PerSecond(); got < 0.2777 || got > 0.2778 {
		t.Errorf("got 1000/h = %v per second, want 0.2777…", got)
	}
}

func TestParseEmpty(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":          "",
		"comment":        "# nothing yet\n",
		"document start": "---\n",
		"null":           "~\n",
		"no rules":       "rules: []\n",
		"null rules":     "rules:\n",
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Parse([]byte(doc))
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if p.Len() != 0 {
				t.Errorf("got %d rules, want 0", p.Len())
			}
		})
	}
}

// rule wraps the lines of one rule (indented four spaces, starting at line
// 3) in a policy.
func rule(lines ...string) string {
	return "rules:\n  - name: r\n    " + strings.Join(lines, "\n    ") + "\n"
}

const okRule = "identities: [group:a]\n    services: [svc]"

func TestParseProblems(t *testing.T) {
	tests := map[string]struct {
		doc   string
		lines []int  // line of each problem, in order
		want  string // in the first problem's message
	}{
		"unknown key": {
			doc:   rule("identities: [group:a]", "servces: [svc]"),
			lines: []int{2, 4},
			want:  `missing services in rule "r"`,
		},
		"unknown key names rule": {
			doc:   rule(okRule, "servces: [svc]"),
			lines: []int{5},
			want:  `unknown key "servces" in rule "r" (did you mean "services"?)`,
		},
		"unknown top key": {
			doc:   "rule:\n  - name: x\n",
			lines: []int{1},
			want:  `unknown key "rule" at the top of the policy (did you mean "rules"?)`,
		},
		"missing name": {
			doc:   "rules:\n  - identities: [group:a]\n    services: [svc]\n",
			lines: []int{2},
			want:  "missing name in rule #1",
		},
		"empty name": {
			doc:   rule(okRule, "name: ''"),
			lines: []int{5},
			want:  `duplicate key "name"`,
		},
		"empty name value": {
			doc:   "rules:\n  - name: ''\n    " + okRule + "\n",
			lines: []int{2},
			want:  "name in rule #1 is empty",
		},
		"reserved name": {
			doc:   "rules:\n  - name: default-deny\n    " + okRule + "\n",
			lines: []int{2},
			want:  "reserved",
		},
		"duplicate name": {
			doc:   rule(okRule) + "  - name: r\n    " + okRule + "\n",
			lines: []int{5},
			want:  `duplicate rule name "r" (first at line 2)`,
		},
		"bad effect": {
			doc:   rule(okRule, "effect: permit"),
			lines: []int{5},
			want:  `bad effect "permit" in rule "r": want allow or deny`,
		},
		"missing identities": {
			doc:   rule("services: [svc]"),
			lines: []int{2},
			want:  `missing identities in rule "r"`,
		},
		"empty identities": {
			doc:   rule("identities: []", "services: [svc]"),
			lines: []int{3},
			want:  `empty identities in rule "r"`,
		},
		"null identities": {
			doc:   rule("identities:", "services: [svc]"),
			lines: []int{3},
			want:  `empty identities in rule "r"`,
		},
		"empty services": {
			doc:   rule("identities: [group:a]", "services: []"),
			lines: []int{4},
			want:  `empty services in rule "r"`,
		},
		"services not a list": {
			doc:   rule("identities: [group:a]", "services: svc"),
			lines: []int{4},
			want:  `services in rule "r" must be a list`,
		},
		"identity without scheme": {
			doc:   rule("identities:", "  - group:a", "  - alice", "services: [svc]"),
			lines: []int{5},
			want:  `invalid identity "alice"`,
		},
		"identity without trust domain": {
			doc:   rule("identities: [spiffe:///user/alice]", "services: [svc]"),
			lines: []int{3},
			want:  "trust domain is missing",
		},
		"identity with bad trust domain": {
			doc:   rule("identities: [spiffe://Postern.local/user]", "services: [svc]"),
			lines: []int{3},
			want:  `trust domain "Postern.local"`,
		},
		"identity with glob in trust domain": {
			doc:   rule("identities: [spiffe://*.local/user]", "services: [svc]"),
			lines: []int{3},
			want:  "no globs",
		},
		"identity with partial double star": {
			doc:   rule("identities: [spiffe://td/user/a**]", "services: [svc]"),
			lines: []int{3},
			want:  "whole path segment",
		},
		"identity with trailing slash": {
			doc:   rule("identities: [spiffe://td/user/]", "services: [svc]"),
			lines: []int{3},
			want:  "empty path segment",
		},
		"identity with bad character": {
			doc:   rule("identities: [spiffe://td/user/al%20ice]", "services: [svc]"),
			lines: []int{3},
			want:  `character '%' is not allowed`,
		},
		"empty group": {
			doc:   rule("identities: [\"group:\"]", "services: [svc]"),
			lines: []int{3},
			want:  "group name is empty",
		},
		"identity not a string": {
			doc:   rule("identities: [[group:a]]", "services: [svc]"),
			lines: []int{3},
			want:  "must be a single value",
		},
		"bad service glob": {
			doc:   rule("identities: [group:a]", "services: [\"pg-[ab]\"]"),
			lines: []int{4},
			want:  `bad glob "pg-[ab]"`,
		},
		"service with slash": {
			doc:   rule("identities: [group:a]", "services: [a/b]"),
			lines: []int{4},
			want:  `'/' is not allowed`,
		},
		"unquoted star": {
			doc:   rule("identities: [group:a]", "services: [*]"),
			lines: []int{4},
			want:  "quote values that start with *",
		},
		"unknown statement class": {
			doc:   rule(okRule, "postgres:", "  statements: [read, select]"),
			lines: []int{6},
			want:  `unknown statement class "select"`,
		},
		"command tag with double space": {
			doc:   rule(okRule, "postgres:", "  statements: [\"CREATE  TABLE\"]"),
			lines: []int{6},
			want:  "unknown statement class",
		},
		"command tag postgres never reports": {
			doc:   rule(okRule, "postgres:", "  statements: [SELECT, TRUNCATE]"),
			lines: []int{6},
			want:  `unknown command tag "TRUNCATE" in rule "r": Postgres never reports it, so it would never match (did you mean "TRUNCATE TABLE"?)`,
		},
		"misspelt command tag": {
			doc:   rule(okRule, "postgres:", "  statements: [SELEKT]"),
			lines: []int{6},
			want:  `(did you mean "SELECT"?)`,
		},
		"unknown postgres key": {
			doc:   rule(okRule, "postgres:", "  database: [app]"),
			lines: []int{6},
			want:  `unknown key "database" in the postgres section of rule "r" (did you mean "databases"?)`,
		},
		"empty postgres section": {
			doc:   rule(okRule, "postgres: {}"),
			lines: []int{5},
			want:  "empty postgres section",
		},
		"empty databases": {
			doc:   rule(okRule, "postgres:", "  databases: []"),
			lines: []int{6},
			want:  "empty databases",
		},
		"bad database glob": {
			doc:   rule(okRule, "postgres:", "  users: [ok, \"a b\"]"),
			lines: []int{6},
			want:  "bad database role pattern",
		},
		"unknown http method": {
			doc:   rule(okRule, "http:", "  - methods: [GET, FETCH]"),
			lines: []int{6},
			want:  `unknown HTTP method "FETCH"`,
		},
		"http path without slash": {
			doc:   rule(okRule, "http:", "  - paths: [v1/orders]"),
			lines: []int{6},
			want:  `bad http path "v1/orders"`,
		},
		"http path with query": {
			doc:   rule(okRule, "http:", "  - paths: [\"/a?b\"]"),
			lines: []int{6},
			want:  `character '?' is not allowed`,
		},
		"http path with partial double star": {
			doc:   rule(okRule, "http:", "  - paths: [\"/a/b**\"]"),
			lines: []int{6},
			want:  "whole path segment",
		},
		"empty http section": {
			doc:   rule(okRule, "http: []"),
			lines: []int{5},
			want:  "empty http section",
		},
		"empty http entry": {
			doc:   rule(okRule, "http:", "  - {}"),
			lines: []int{6},
			want:  "empty http entry",
		},
		"http not a list": {
			doc:   rule(okRule, "http:", "  methods: [GET]"),
			lines: []int{6},
			want:  "must be a list of entries",
		},
		"unknown http key": {
			doc:   rule(okRule, "http:", "  - methods: [GET]", "    path: [/]"),
			lines: []int{7},
			want:  `unknown key "path" in an http entry of rule "r" (did you mean "paths"?)`,
		},
		"grpc method without slash": {
			doc:   rule(okRule, "grpc:", "  - methods: [orders.v1.Orders/Get]"),
			lines: []int{6},
			want:  `bad grpc method "orders.v1.Orders/Get"`,
		},
		"grpc method without method": {
			doc:   rule(okRule, "grpc:", "  - methods: [/orders.v1.Orders]"),
			lines: []int{6},
			want:  `bad grpc method "/orders.v1.Orders"`,
		},
		"grpc method with three parts": {
			doc:   rule(okRule, "grpc:", "  - methods: [/a/b/c]"),
			lines: []int{6},
			want:  `bad grpc method "/a/b/c"`,
		},
		"bad rule rate": {
			doc:   rule(okRule, "rate: 100/d"),
			lines: []int{5},
			want:  `bad rate "100/d" in rule "r": unknown unit "d"`,
		},
		"zero rate": {
			doc:   rule(okRule, "rate: 0/s"),
			lines: []int{5},
			want:  "between 1 and",
		},
		"rate without unit": {
			doc:   rule(okRule, "http:", "  - rate: 100"),
			lines: []int{6},
			want:  "want COUNT/UNIT",
		},
		"negative rate": {
			doc:   rule(okRule, "grpc:", "  - rate: -1/s"),
			lines: []int{6},
			want:  "not a whole number",
		},
		"rate in a deny rule": {
			doc:   rule(okRule, "effect: deny", "rate: 1/s"),
			lines: []int{6},
			want:  `rate in deny rule "r" has no effect`,
		},
		"rate in a deny rule's http entry": {
			doc:   rule(okRule, "http:", "  - rate: 1/s", "effect: deny"),
			lines: []int{6},
			want:  `rate in deny rule "r" has no effect`,
		},
		"duplicate key": {
			doc:   rule(okRule, "services: [other]"),
			lines: []int{5},
			want:  `duplicate key "services" in rule #1 (first at line 4)`,
		},
		"rule not a mapping": {
			doc:   "rules:\n  - just-a-name\n",
			lines: []int{2},
			want:  "rule #1 must be a mapping",
		},
		"rules not a list": {
			doc:   "rules:\n  name: x\n",
			lines: []int{2},
			want:  `"rules" must be a list`,
		},
		"top level not a mapping": {
			doc:   "- name: x\n",
			lines: []int{1},
			want:  "a policy is a mapping",
		},
		"two documents": {
			doc:   "rules: []\n---\nrules: []\n",
			lines: []int{2},
			want:  "only one YAML document",
		},
		"syntax error": {
			doc:   "rules:\n  - name: x\n    identities: [group:a]\n    services [x]\n    rate: 1/s\n",
			lines: []int{4},
			want:  "invalid YAML",
		},
		"unknown anchor": {
			doc:   rule(okRule, "rate: *r"),
			lines: []int{5},
			want:  "unknown anchor",
		},
		"merge of a scalar": {
			doc:   rule(okRule, "<<: x"),
			lines: []int{5},
			want:  "a merge (<<) in rule #1 needs a mapping",
		},
		"self merge": {
			doc:   "rules:\n  - &a\n    <<: *a\n    name: x\n",
			lines: []int{2, 2, 3},
			want:  "missing identities",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("got error %v (%T), want *Error", err, err)
			}
			var lines []int
			for _, p := range perr.Problems {
				lines = append(lines, p.Line)
			}
			if !reflect.DeepEqual(lines, tt.lines) {
				t.Errorf("got problems on lines %v, want %v: %q", lines, tt.lines, perr.Lines())
			}
			if !strings.Contains(perr.Problems[0].Message, tt.want) {
				t.Errorf("got first problem %q, want it to contain %q", perr.Problems[0].Message, tt.want)
			}
		})
	}
}

func TestParseCollectsAllProblems(t *testing.T) {
	doc := `rules:
  - name: a
    effect: maybe
    identities: [alice]
    services: []
  - identities: [group:x]
    services: [x]
    grpc:
      - methods: [Get]
  - name: a
    identities: [group:x]
    services: [x]
    http:
      - methods: [GIT]
        paths: [nope]
        rate: lots
`
	_, err := Parse([]byte(doc))
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("got %v, want *Error", err)
	}
	want := []string{
		`line 3, column 13: bad effect "maybe" in rule "a": want allow or deny`,
		`line 4, column 18: invalid identity "alice" in rule "a": want a SPIFFE ID pattern (spiffe://TRUST_DOMAIN/PATH) or group:NAME`,
		`line 5, column 5: empty services in rule "a"`,
		`line 6, column 5: missing name in rule #2`,
		`line 9, column 19: bad grpc method "Get" in rule #2: want "/package.Service/Method", with * and ? as globs within the service and the method`,
		`line 10, column 11: duplicate rule name "a" (first at line 2)`,
		`line 14, column 19: unknown HTTP method "GIT" in rule "a": want one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE, or "*"`,
		`line 15, column 17: bad http path "nope" in rule "a": must start with "/"`,
		`line 16, column 15: bad rate "lots" in rule "a": want COUNT/UNIT, like 100/s, 10/m or 1000/h`,
	}
	if got := perr.Lines(); !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got, want := perr.Error(), `line 3: bad effect "maybe" in rule "a": want allow or deny; line 4: invalid identity`; !strings.HasPrefix(got, want) {
		t.Errorf("got Error() %q, want it to start with %q", got, want)
	}
}

func TestParseAliases(t *testing.T) {
	doc := `admins: &admins [group:admins, "spiffe://postern.local/admin/*"]
rules:
  - &base
    name: admins
    identities: *admins
    services: ["*"]
  - <<: *base
    name: admins-too
`
	_, err := Parse([]byte(doc))
	var perr *Error
	if !errors.As(err, &perr) || len(perr.Problems) != 1 || perr.Problems[0].Line != 1 {
		t.Fatalf("got %v, want one problem on line 1 (the unknown key admins)", err)
	}
	doc = `rules:
  - &base
    name: admins
    identities: &admins [group:admins, "spiffe://postern.local/admin/*"]
    services: ["*"]
  - <<: *base
    name: admins-too
  - name: admins-db
    identities: *admins
    services: [db]
`
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	rules := p.Rules()
	if len(rules) != 3 {
		t.Fatalf("got %d rules, want 3", len(rules))
	}
	if got, want := rules[1].Name, "admins-too"; got != want {
		t.Errorf("got name %q, want %q", got, want)
	}
	for _, r := range rules {
		if len(r.Identities) != 2 {
			t.Errorf("rule %q: got identities %q, want 2", r.Name, r.Identities)
		}
	}
}

// TestParseAliasBomb checks that aliases cannot blow a small document up
// into a huge policy: 300 rules × 300 http entries × 300 paths.
func TestParseAliasBomb(t *testing.T) {
	list := func(item string) string {
		return "[" + strings.Repeat(item+", ", 299) + item + "]"
	}
	doc := "rules:\n" +
		"  - &r\n" +
		"    name: x\n" +
		"    identities: [group:x]\n" +
		"    services: [x]\n" +
		"    http: &h [{paths: &p " + list(`"/a"`) + "}, " + strings.TrimPrefix(list("{paths: *p}"), "[") + "\n" +
		"    grpc: " + list("{methods: [/a/b]}") + "\n" +
		"  - {<<: *r, http: " + list("{paths: *p}") + "}\n" +
		"  - {<<: *r, http: *h}\n"
	doc += strings.Repeat("  - *r\n", 300)
	if len(doc) > 64<<10 {
		t.Fatalf("test document is %d bytes, want it small", len(doc))
	}
	_, err := Parse([]byte(doc))
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("got %v, want *Error", err)
	}
	found := false
	for _, p := range perr.Problems {
		found = found || strings.Contains(p.Message, "policy too large")
	}
	if !found {
		t.Errorf("got %q, want a problem saying the policy is too large", perr.Lines())
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(fullPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(rule(okRule, "effect: nope")), 0o600); err != nil {
		t.Fatal(err)
	}

	p, err := Load(good)
	if err != nil || p.Len() != 3 {
		t.Fatalf("got %d rules, %v; want 3 rules", p.Len(), err)
	}

	_, err = Load(bad)
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("got %v, want *Error", err)
	}
	if want := bad + `: line 5: bad effect "nope"`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q, want it to start with %q", err.Error(), want)
	}
	if got, want := perr.Lines()[0], `line 5, column 13: bad effect "nope" in rule "r": want allow or deny`; got != want {
		t.Errorf("got line %q, want %q", got, want)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || errors.As(err, &perr) {
		t.Errorf("got %v, want a wrapped os.ErrNotExist", err)
	}
}

func TestProblemString(t *testing.T) {
	tests := map[string]struct {
		p    Problem
		want string
	}{
		"line and column": {Problem{Line: 3, Column: 5, Message: "m"}, "line 3, column 5: m"},
		"line only":       {Problem{Line: 3, Message: "m"}, "line 3: m"},
		"no position":     {Problem{Message: "m"}, "m"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tt.p.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
