package policy

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestGlob(t *testing.T) {
	tests := map[string]struct {
		pattern string
		match   []string
		nomatch []string
	}{
		"literal":       {"pg-main", []string{"pg-main"}, []string{"pg-mai", "pg-main2", ""}},
		"star":          {"*", []string{"", "a", "anything-at-all"}, nil},
		"double star":   {"**", []string{"", "x"}, nil},
		"prefix":        {"pg-*", []string{"pg-", "pg-main", "pg-a-b"}, []string{"pg", "xpg-a"}},
		"suffix":        {"*-db", []string{"-db", "orders-db"}, []string{"orders-dbx", "db"}},
		"infix":         {"pg-*-eu", []string{"pg--eu", "pg-main-eu"}, []string{"pg-eu", "pg-main-us"}},
		"question":      {"cache-?", []string{"cache-1", "cache-é"}, []string{"cache-", "cache-12"}},
		"general":       {"a*b*c", []string{"abc", "aXbYc", "abbbc", "abcbc"}, []string{"ab", "acb", "abcd"}},
		"star question": {"*?x", []string{"ax", "aax"}, []string{"x", ""}},
		"backtrack":     {"*aab", []string{"aaab", "abaab"}, []string{"aaba"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			g, err := compileGlob(tt.pattern, "/")
			if err != nil {
				t.Fatalf("compileGlob(%q): %v", tt.pattern, err)
			}
			for _, s := range tt.match {
				if !g.match(s) {
					t.Errorf("%q: got no match for %q, want a match", tt.pattern, s)
				}
			}
			for _, s := range tt.nomatch {
				if g.match(s) {
					t.Errorf("%q: got a match for %q, want none", tt.pattern, s)
				}
			}
		})
	}
}

func TestGlobInvalid(t *testing.T) {
	for _, pat := range []string{"", "a[b]", `a\b`, "a b", "a/b", "{a,b}", "a\x00", "\xff"} {
		if _, err := compileGlob(pat, "/"); err == nil {
			t.Errorf("compileGlob(%q): got no error, want one", pat)
		}
	}
}

func TestIdentityPattern(t *testing.T) {
	tests := map[string]struct {
		pattern string
		match   []string
		nomatch []string
	}{
		"exact": {
			pattern: "spiffe://postern.local/user/alice",
			match:   []string{"spiffe://postern.local/user/alice"},
			nomatch: []string{"spiffe://postern.local/user/alice2", "spiffe://postern.local/user/alice/x", "spiffe://other.local/user/alice", "spiffe://postern.local/user"},
		},
		"star within a segment": {
			pattern: "spiffe://postern.local/user/*",
			match:   []string{"spiffe://postern.local/user/alice", "spiffe://postern.local/user/bob"},
			nomatch: []string{"spiffe://postern.local/user", "spiffe://postern.local/user/alice/laptop", "spiffe://postern.local/users/alice"},
		},
		"star part of a segment": {
			pattern: "spiffe://postern.local/ci/build-*/agent",
			match:   []string{"spiffe://postern.local/ci/build-1/agent", "spiffe://postern.local/ci/build-/agent"},
			nomatch: []string{"spiffe://postern.local/ci/build-1/x/agent", "spiffe://postern.local/ci/test-1/agent"},
		},
		"double star across segments": {
			pattern: "spiffe://postern.local/user/**",
			match:   []string{"spiffe://postern.local/user", "spiffe://postern.local/user/alice", "spiffe://postern.local/user/alice/laptop"},
			nomatch: []string{"spiffe://postern.local/users/alice", "spiffe://postern.local", "spiffe://other.local/user/alice"},
		},
		"double star in the middle": {
			pattern: "spiffe://postern.local/ns/**/sa/web",
			match:   []string{"spiffe://postern.local/ns/sa/web", "spiffe://postern.local/ns/a/sa/web", "spiffe://postern.local/ns/a/b/sa/web", "spiffe://postern.local/ns/sa/sa/web"},
			nomatch: []string{"spiffe://postern.local/ns/a/sa/web/x", "spiffe://postern.local/ns/a/sa/api"},
		},
		"whole trust domain": {
			pattern: "spiffe://postern.local/**",
			match:   []string{"spiffe://postern.local", "spiffe://postern.local/a", "spiffe://postern.local/a/b/c"},
			nomatch: []string{"spiffe://postern.locals/a", "spiffe://other/a"},
		},
		"trust domain only": {
			pattern: "spiffe://postern.local",
			match:   []string{"spiffe://postern.local"},
			nomatch: []string{"spiffe://postern.local/a"},
		},
		"double stars": {
			pattern: "spiffe://td/**/**/x/**",
			match:   []string{"spiffe://td/x", "spiffe://td/a/x/b", "spiffe://td/a/b/x"},
			nomatch: []string{"spiffe://td/a/b", "spiffe://td/xx"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ip, err := compileIdentity(tt.pattern)
			if err != nil {
				t.Fatalf("compileIdentity(%q): %v", tt.pattern, err)
			}
			for _, s := range tt.match {
				if !ip.match(spiffeid.RequireFromString(s), nil) {
					t.Errorf("%q: got no match for %q, want a match", tt.pattern, s)
				}
			}
			for _, s := range tt.nomatch {
				if ip.match(spiffeid.RequireFromString(s), nil) {
					t.Errorf("%q: got a match for %q, want none", tt.pattern, s)
				}
			}
			if ip.match(spiffeid.ID{}, nil) {
				t.Errorf("%q: got a match for the zero ID, want none", tt.pattern)
			}
		})
	}
}

func TestGroupPattern(t *testing.T) {
	ip, err := compileIdentity("group:analysts")
	if err != nil {
		t.Fatal(err)
	}
	alice := spiffeid.RequireFromString("spiffe://postern.local/user/alice")
	tests := map[string]struct {
		groups []string
		want   bool
	}{
		"member":         {[]string{"dev", "analysts"}, true},
		"not a member":   {[]string{"dev"}, false},
		"no groups":      {nil, false},
		"prefix only":    {[]string{"analyst"}, false},
		"case sensitive": {[]string{"Analysts"}, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ip.match(alice, tt.groups); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHTTPRuleMatch(t *testing.T) {
	p, err := Parse([]byte(rule(okRule,
		"http:",
		`  - methods: [GET, head]`,
		`    paths: ["/v1/orders/**", "/v1/items/*", "/"]`,
		`  - methods: ["*"]`,
		`    paths: ["/admin/*/logs"]`,
		`  - paths: ["/public/**"]`,
		`  - methods: [DELETE]`,
	)))
	if err != nil {
		t.Fatal(err)
	}
	h := p.Rules()[0].HTTP
	tests := map[string]struct {
		entry        int
		method, path string
		want         bool
	}{
		"get orders root":       {0, "GET", "/v1/orders", true},
		"get an order":          {0, "GET", "/v1/orders/1", true},
		"get deep":              {0, "GET", "/v1/orders/1/lines/2", true},
		"head normalized":       {0, "HEAD", "/v1/items/3", true},
		"post not listed":       {0, "POST", "/v1/orders/1", false},
		"item star one segment": {0, "GET", "/v1/items/3/x", false},
		"item star needs seg":   {0, "GET", "/v1/items", false},
		"root":                  {0, "GET", "/", true},
		"other path":            {0, "GET", "/v2/orders", false},
		"any method":            {1, "PATCH", "/admin/a/logs", true},
		"any method wrong path": {1, "PATCH", "/admin/a/b/logs", false},
		"any method no methods": {2, "PUT", "/public/x/y", true},
		"no paths means all":    {3, "DELETE", "/anything/at/all", true},
		"no paths wrong method": {3, "GET", "/anything", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := h[tt.entry].Match(tt.method, tt.path); got != tt.want {
				t.Errorf("entry %d: Match(%q, %q): got %v, want %v", tt.entry, tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestGRPCRuleMatch(t *testing.T) {
	p, err := Parse([]byte(rule(okRule,
		"grpc:",
		`  - methods: ["/orders.v1.Orders/Get*", "/health.v1.*/Check"]`,
		`  - rate: 5/s`,
	)))
	if err != nil {
		t.Fatal(err)
	}
	g := p.Rules()[0].GRPC
	tests := map[string]struct {
		entry  int
		method string
		want   bool
	}{
		"get":             {0, "/orders.v1.Orders/GetOrder", true},
		"list":            {0, "/orders.v1.Orders/ListOrders", false},
		"other service":   {0, "/orders.v2.Orders/GetOrder", false},
		"service glob":    {0, "/health.v1.Health/Check", true},
		"no leading":      {0, "orders.v1.Orders/GetOrder", false},
		"extra segment":   {0, "/orders.v1.Orders/Get/x", true},
		"no method":       {0, "/orders.v1.Orders", false},
		"empty":           {0, "", false},
		"no methods, any": {1, "/x.Y/Z", true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := g[tt.entry].Match(tt.method); got != tt.want {
				t.Errorf("entry %d: Match(%q): got %v, want %v", tt.entry, tt.method, got, tt.want)
			}
		})
	}
}

func TestPostgresRuleMatch(t *testing.T) {
	p, err := Parse([]byte(rule(okRule,
		"postgres:",
		`  databases: [app, "report_*"]`,
		`  users: [readonly]`,
		`  statements: [read, "CREATE TABLE"]`,
	)))
	if err != nil {
		t.Fatal(err)
	}
	pg := p.Rules()[0].Postgres
	if !pg.MatchDatabase("app") || !pg.MatchDatabase("report_2024") || pg.MatchDatabase("postgres") {
		t.Error("got wrong database matches for [app, report_*]")
	}
	if !pg.MatchUser("readonly") || pg.MatchUser("postgres") {
		t.Error("got wrong user matches for [readonly]")
	}
	tests := map[string]struct {
		class, tag string
		want       bool
	}{
		"read class":    {"read", "SELECT", true},
		"listed tag":    {"ddl", "CREATE TABLE", true},
		"other ddl":     {"ddl", "DROP TABLE", false},
		"write":         {"write", "INSERT", false},
		"admin":         {"admin", "ALTER SYSTEM", false},
		"tag case":      {"ddl", "create table", false},
		"class as tag?": {"", "read", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := pg.MatchStatement(tt.class, tt.tag); got != tt.want {
				t.Errorf("MatchStatement(%q, %q): got %v, want %v", tt.class, tt.tag, got, tt.want)
			}
		})
	}

	p, err = Parse([]byte(rule(okRule, "postgres:", "  users: [readonly]")))
	if err != nil {
		t.Fatal(err)
	}
	pg = p.Rules()[0].Postgres
	if !pg.MatchDatabase("anything") || !pg.MatchStatement("admin", "ALTER SYSTEM") {
		t.Error("got no match for an absent key, want every database and statement")
	}
}

func TestParseRate(t *testing.T) {
	tests := map[string]struct {
		in   string
		want Rate
		bad  bool
	}{
		"per second":  {in: "100/s", want: Rate{100, time.Second}},
		"per minute":  {in: "10/m", want: Rate{10, time.Minute}},
		"per hour":    {in: "1000/h", want: Rate{1000, time.Hour}},
		"no unit":     {in: "100", bad: true},
		"bad unit":    {in: "100/d", bad: true},
		"long unit":   {in: "100/sec", bad: true},
		"zero":        {in: "0/s", bad: true},
		"negative":    {in: "-5/s", bad: true},
		"plus":        {in: "+5/s", bad: true},
		"fraction":    {in: "1.5/s", bad: true},
		"empty count": {in: "/s", bad: true},
		"huge":        {in: "99999999999999999999/s", bad: true},
		"spaces":      {in: "5 /s", bad: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseRate(tt.in)
			if tt.bad {
				if err == nil {
					t.Errorf("parseRate(%q): got %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseRate(%q): got %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("got String %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestIsCommandTag(t *testing.T) {
	for s, want := range map[string]bool{
		"SELECT": true, "CREATE TABLE": true, "ALTER SYSTEM": true,
		"select": false, "": false, " SELECT": false, "SELECT ": false, "CREATE  TABLE": false, "SELECT1": false, "SELECT_X": false,
	} {
		if got := isCommandTag(s); got != want {
			t.Errorf("isCommandTag(%q): got %v, want %v", s, got, want)
		}
	}
}
