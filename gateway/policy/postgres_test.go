package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/postern/postern/protocols"
)

const pgPolicy = `rules:
  - name: interns-out
    effect: deny
    identities: ["spiffe://postern.local/intern/**"]
    services: ["*"]
  - name: no-prod-as-dba
    effect: deny
    identities: [group:analysts]
    services: [pg-*]
    postgres:
      databases: ["prod*"]
      users: [dba]
  - name: no-writes-for-contractors
    effect: deny
    identities: [group:contractors]
    services: [pg-*]
    postgres:
      statements: [write, ddl, admin]
  - name: no-truncate
    effect: deny
    identities: ["spiffe://postern.local/user/**"]
    services: [pg-*]
    postgres:
      statements: ["TRUNCATE TABLE", SAVEPOINT]
  - name: no-reads-for-writers
    effect: deny
    identities: [group:writers]
    services: [pg-*]
    postgres:
      statements: [read]
  - name: no-web
    effect: deny
    identities: [group:analysts]
    services: [pg-*]
    http:
      - paths: ["/**"]
  - name: analysts-read
    identities: [group:analysts]
    services: [pg-*]
    postgres:
      databases: [app, "prod-*"]
      users: [readonly, "ro_*"]
      statements: [read]
  - name: reporting-select
    identities: [group:reporting]
    services: [pg-*]
    postgres:
      databases: [app]
      statements: [SELECT, SHOW]
  - name: loaders
    identities: [group:loaders]
    services: [pg-*]
    postgres:
      databases: [app]
      users: [loader, ro_etl]
      statements: [read, INSERT]
  - name: dbas
    identities: [group:dbas]
    services: [pg-*]
    postgres:
      users: [dba]
  - name: ops
    identities: [group:ops]
    services: [pg-*]
  - name: contractors
    identities: [group:contractors]
    services: [pg-*]
    postgres:
      databases: [app]
  - name: migrators
    identities: [group:migrators]
    services: [pg-*]
    postgres:
      statements: [ddl]
  - name: writers
    identities: [group:writers]
    services: [pg-*]
  - name: superusers
    identities: [group:superusers]
    services: [pg-*]
    postgres:
      statements: [admin]
`

const bob = "spiffe://postern.local/user/bob"

// pgReq returns a request of bob (or id) on service pg-main with the given
// Postgres part and groups.
func pgReq(pg protocols.PostgresRequest, groups ...string) protocols.Request {
	r := req(bob, "pg-main", groups...)
	r.Protocol = protocols.Postgres
	r.Postgres = &pg
	return r
}

func startup(db, user string) protocols.PostgresRequest {
	return protocols.PostgresRequest{Database: db, User: user, Startup: true}
}

// stmt returns a statement of class in app as readonly; tag is exact unless
// it ends in "~".
func stmt(class, tag string) protocols.PostgresRequest {
	exact := !strings.HasSuffix(tag, "~")
	return protocols.PostgresRequest{Database: "app", User: "readonly", Class: class,
		Tag: strings.TrimSuffix(tag, "~"), TagExact: exact}
}

func on(pg protocols.PostgresRequest, db, user string) protocols.PostgresRequest {
	pg.Database, pg.User = db, user
	return pg
}

func txControl(tag string) protocols.PostgresRequest {
	pg := stmt(ClassRead, tag)
	pg.TxControl = true
	return pg
}

func allowed(rule string, readOnly bool) protocols.Decision {
	return protocols.Decision{Allow: true, Rule: rule, Reason: ReasonAllowed, ReadOnly: readOnly}
}

func TestAuthorizePostgresStartup(t *testing.T) {
	p := mustParse(t, pgPolicy)
	tests := map[string]struct {
		r    protocols.Request
		want protocols.Decision
	}{
		"allowed by database and role": {
			r:    pgReq(startup("app", "readonly"), "analysts"),
			want: allowed("analysts-read", true),
		},
		"allowed by database and role globs": {
			r:    pgReq(startup("prod-eu", "ro_batch"), "analysts"),
			want: allowed("analysts-read", true),
		},
		"database glob does not match": {
			r: pgReq(startup("staging", "readonly"), "analysts"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: `no rule lets spiffe://postern.local/user/bob use database "staging" as role "readonly"`},
		},
		"role glob does not match": {
			r: pgReq(startup("app", "dba"), "analysts"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: `no rule lets spiffe://postern.local/user/bob use database "app" as role "dba"`},
		},
		"no allow rule applies": {
			r: pgReq(startup("app", "readonly"), "visitors"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://postern.local/user/bob to reach service pg-main"},
		},
		"deny without statements refuses the session": {
			r: pgReq(startup("prod-eu", "dba"), "analysts", "dbas"),
			want: protocols.Decision{Rule: "no-prod-as-dba",
				Reason: `database "prod-eu" as role "dba" is denied by rule`},
		},
		"deny without statements for another database": {
			r:    pgReq(startup("app", "dba"), "analysts", "dbas"),
			want: allowed("dbas", false),
		},
		"deny with statements does not refuse the session": {
			r:    pgReq(startup("app", "anyone"), "contractors"),
			want: allowed("contractors", false),
		},
		"connection-level deny refuses the session": {
			r: func() protocols.Request {
				r := pgReq(startup("app", "readonly"), "analysts")
				r.Identity = req("spiffe://postern.local/intern/eve", "").Identity
				return r
			}(),
			want: protocols.Decision{Rule: "interns-out", Reason: ReasonDenied},
		},
		"deny with an http section does not refuse the session": {
			r:    pgReq(startup("app", "ro_x"), "analysts"),
			want: allowed("analysts-read", true),
		},
		"read-only by SELECT and SHOW tags": {
			r:    pgReq(startup("app", "anyone"), "reporting"),
			want: allowed("reporting-select", true),
		},
		"not read-only with an INSERT tag": {
			r:    pgReq(startup("app", "loader"), "loaders"),
			want: allowed("loaders", false),
		},
		"not read-only without a section": {
			r:    pgReq(startup("app", "readonly"), "ops"),
			want: allowed("ops", false),
		},
		"not read-only without a statements list": {
			r:    pgReq(startup("app", "dba"), "dbas"),
			want: allowed("dbas", false),
		},
		"not read-only with a class beyond read": {
			r:    pgReq(startup("app", "x"), "migrators"),
			want: allowed("migrators", false),
		},
		"two read-only rules": {
			r:    pgReq(startup("app", "readonly"), "analysts", "reporting"),
			want: allowed("analysts-read", true),
		},
		"a read-only rule and one that writes": {
			r:    pgReq(startup("app", "ro_etl"), "analysts", "loaders"),
			want: allowed("analysts-read", false),
		},
		"a rule that does not admit the session does not count against read-only": {
			r:    pgReq(startup("prod-eu", "ro_etl"), "analysts", "loaders"),
			want: allowed("analysts-read", true),
		},
		"another service": {
			r: func() protocols.Request {
				r := pgReq(startup("app", "readonly"), "analysts")
				r.Service = "api"
				return r
			}(),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://postern.local/user/bob to reach service api"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := p.Authorize(context.Background(), tt.r); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthorizePostgresStatement(t *testing.T) {
	p := mustParse(t, pgPolicy)
	tests := map[string]struct {
		r    protocols.Request
		want protocols.Decision
	}{
		"allowed by class": {
			r:    pgReq(stmt(ClassRead, "SELECT"), "analysts"),
			want: allowed("analysts-read", false),
		},
		"class not listed names the rule": {
			r: pgReq(stmt(ClassWrite, "INSERT"), "analysts"),
			want: protocols.Decision{Rule: "analysts-read",
				Reason: `statement class "write" (INSERT) is not allowed by rule "analysts-read", which allows read`},
		},
		"allowed by tag": {
			r:    pgReq(stmt(ClassRead, "SHOW"), "reporting"),
			want: allowed("reporting-select", false),
		},
		"tag not exact": {
			r: pgReq(stmt(ClassWrite, "SELECT~"), "reporting"),
			want: protocols.Decision{Rule: "reporting-select",
				Reason: `statement class "write" (SELECT) is not allowed by rule "reporting-select", which allows SELECT, SHOW`},
		},
		"tag not listed": {
			r: pgReq(stmt(ClassRead, "FETCH"), "reporting"),
			want: protocols.Decision{Rule: "reporting-select",
				Reason: `statement class "read" (FETCH) is not allowed by rule "reporting-select", which allows SELECT, SHOW`},
		},
		"class or tag": {
			r:    pgReq(on(stmt(ClassWrite, "INSERT"), "app", "loader"), "loaders"),
			want: allowed("loaders", false),
		},
		"tag of a stronger statement": {
			r: pgReq(on(stmt(ClassAdmin, "INSERT~"), "app", "loader"), "loaders"),
			want: protocols.Decision{Rule: "loaders",
				Reason: `statement class "admin" (INSERT) is not allowed by rule "loaders", which allows read, INSERT`},
		},
		"transaction control by a rule of tags": {
			r:    pgReq(txControl("BEGIN"), "reporting"),
			want: allowed("reporting-select", false),
		},
		"the same tag without transaction control": {
			r: pgReq(stmt(ClassRead, "BEGIN"), "reporting"),
			want: protocols.Decision{Rule: "reporting-select",
				Reason: `statement class "read" (BEGIN) is not allowed by rule "reporting-select", which allows SELECT, SHOW`},
		},
		"transaction control by a rule without read": {
			r:    pgReq(txControl("COMMIT"), "migrators"),
			want: allowed("migrators", false),
		},
		"transaction control needs the session admitted": {
			r: pgReq(on(txControl("COMMIT"), "app", "dba"), "analysts"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: `no rule lets spiffe://postern.local/user/bob use database "app" as role "dba"`},
		},
		"no section allows everything": {
			r:    pgReq(stmt(ClassAdmin, "ALTER SYSTEM"), "ops"),
			want: allowed("ops", false),
		},
		"no statements list allows everything": {
			r:    pgReq(on(stmt(ClassDDL, "DROP TABLE"), "app", "dba"), "dbas"),
			want: allowed("dbas", false),
		},
		"deny by class beats an allow": {
			r: pgReq(stmt(ClassWrite, "INSERT"), "contractors", "ops"),
			want: protocols.Decision{Rule: "no-writes-for-contractors",
				Reason: `statement class "write" (INSERT) is denied by rule`},
		},
		"deny by class leaves other classes": {
			r:    pgReq(stmt(ClassRead, "SELECT"), "contractors"),
			want: allowed("contractors", false),
		},
		"deny by class leaves transaction control": {
			r:    pgReq(txControl("ROLLBACK"), "contractors"),
			want: allowed("contractors", false),
		},
		"deny of read leaves transaction control": {
			r:    pgReq(txControl("BEGIN"), "writers"),
			want: allowed("writers", false),
		},
		"deny of read": {
			r: pgReq(stmt(ClassRead, "SELECT"), "writers"),
			want: protocols.Decision{Rule: "no-reads-for-writers",
				Reason: `statement class "read" (SELECT) is denied by rule`},
		},
		"deny by tag": {
			r: pgReq(stmt(ClassWrite, "TRUNCATE TABLE"), "ops"),
			want: protocols.Decision{Rule: "no-truncate",
				Reason: `statement class "write" (TRUNCATE TABLE) is denied by rule`},
		},
		"deny by tag whatever is nested": {
			r: pgReq(stmt(ClassAdmin, "TRUNCATE TABLE~"), "ops"),
			want: protocols.Decision{Rule: "no-truncate",
				Reason: `statement class "admin" (TRUNCATE TABLE) is denied by rule`},
		},
		"deny by tag of transaction control": {
			r: pgReq(txControl("SAVEPOINT"), "ops"),
			want: protocols.Decision{Rule: "no-truncate",
				Reason: `statement class "read" (SAVEPOINT) is denied by rule`},
		},
		"deny without statements refuses every statement": {
			r: pgReq(on(stmt(ClassRead, "SELECT"), "prod-eu", "dba"), "analysts", "dbas"),
			want: protocols.Decision{Rule: "no-prod-as-dba",
				Reason: `database "prod-eu" as role "dba" is denied by rule`},
		},
		"connection-level deny": {
			r: func() protocols.Request {
				r := pgReq(stmt(ClassRead, "SELECT"), "ops")
				r.Identity = req("spiffe://postern.local/intern/eve", "").Identity
				return r
			}(),
			want: protocols.Decision{Rule: "interns-out", Reason: ReasonDenied},
		},
		"first rule that admits the session is named": {
			r: pgReq(on(stmt(ClassDDL, "CREATE TABLE"), "app", "ro_etl"), "analysts", "loaders"),
			want: protocols.Decision{Rule: "analysts-read",
				Reason: `statement class "ddl" (CREATE TABLE) is not allowed by rule "analysts-read", which allows read`},
		},
		"a later rule allows what an earlier one does not": {
			r:    pgReq(on(stmt(ClassWrite, "INSERT"), "app", "ro_etl"), "analysts", "loaders"),
			want: allowed("loaders", false),
		},
		"default deny when no rule admits the session": {
			r: pgReq(on(stmt(ClassRead, "SELECT"), "staging", "readonly"), "analysts"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: `no rule lets spiffe://postern.local/user/bob use database "staging" as role "readonly"`},
		},
		"default deny when no rule applies": {
			r: pgReq(stmt(ClassRead, "SELECT"), "visitors"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://postern.local/user/bob to reach service pg-main"},
		},
		"unknown class ranks as admin": {
			r: pgReq(stmt("vacuum", "VACUUM"), "migrators"),
			want: protocols.Decision{Rule: "migrators",
				Reason: `statement class "admin" (VACUUM) is not allowed by rule "migrators", which allows ddl`},
		},
		"unknown class allowed by admin": {
			r:    pgReq(stmt("", ""), "superusers"),
			want: allowed("superusers", false),
		},
		"unknown class denied by admin": {
			r: pgReq(stmt("", ""), "contractors"),
			want: protocols.Decision{Rule: "no-writes-for-contractors",
				Reason: `statement class "admin" is denied by rule`},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := p.Authorize(context.Background(), tt.r); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthorizePostgresEngine(t *testing.T) {
	ctx := context.Background()
	r := pgReq(stmt(ClassWrite, "INSERT"), "analysts")
	var zero Engine
	if got := zero.Authorize(ctx, r); got.Allow || got.Rule != protocols.DefaultDeny {
		t.Errorf("zero Engine: got %+v, want default-deny", got)
	}
	e := NewEngine(mustParse(t, pgPolicy))
	want := protocols.Decision{Rule: "analysts-read",
		Reason: `statement class "write" (INSERT) is not allowed by rule "analysts-read", which allows read`}
	if got := e.Authorize(ctx, r); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestPostgresRuleReadOnly(t *testing.T) {
	tests := map[string]struct {
		statements string
		want       bool
	}{
		"read":                {"[read]", true},
		"read-only tags":      {`[SELECT, "DECLARE CURSOR", FETCH, "CLOSE CURSOR", SHOW]`, true},
		"read and SELECT":     {"[read, SELECT]", true},
		"INSERT":              {"[INSERT]", false},
		"read and write":      {"[read, write]", false},
		"admin":               {"[admin]", false},
		"DISCARD ALL":         {`[read, "DISCARD ALL"]`, false},
		"no statements list":  {"", false},
		"unknown command tag": {"[SELECT, NOTIFY]", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			doc := "rules:\n  - name: r\n    identities: [group:x]\n    services: [x]\n    postgres:\n      databases: [app]\n"
			if tt.statements != "" {
				doc += "      statements: " + tt.statements + "\n"
			}
			rules := mustParse(t, doc).Rules()
			if got := rules[0].Postgres.ReadOnly(); got != tt.want {
				t.Errorf("got ReadOnly %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAuthorizePostgresAllocations(t *testing.T) {
	p := mustParse(t, benchPolicy(100)+pgBenchRules)
	ctx := context.Background()
	for name, r := range pgBenchCases() {
		if !r.allow {
			continue // a refusal builds its reason
		}
		if n := testing.AllocsPerRun(100, func() { p.Authorize(ctx, r.r) }); n != 0 {
			t.Errorf("%s: got %v allocations per decision, want 0", name, n)
		}
	}
}

// pgBenchRules follow benchPolicy's rules, so that a decision walks them
// all first.
const pgBenchRules = `  - name: pg-no-writes
    effect: deny
    identities: [group:contractors]
    services: [pg-*]
    postgres:
      statements: [write, ddl, admin]
  - name: pg-read
    identities: [group:analysts]
    services: [pg-*]
    postgres:
      databases: [app, "prod-*"]
      users: [readonly, "ro_*"]
      statements: [read]
  - name: pg-tags
    identities: [group:loaders]
    services: [pg-*]
    postgres:
      databases: [app]
      statements: [SELECT, SHOW, INSERT, UPDATE, "COPY FROM"]
`

type pgBenchCase struct {
	r     protocols.Request
	allow bool
}

func pgBenchCases() map[string]pgBenchCase {
	return map[string]pgBenchCase{
		"allow by class":  {pgReq(on(stmt(ClassRead, "SELECT"), "prod-eu", "ro_etl"), "dev", "analysts"), true},
		"allow by tag":    {pgReq(stmt(ClassWrite, "UPDATE"), "loaders"), true},
		"tx control":      {pgReq(txControl("COMMIT"), "loaders"), true},
		"deny by rule":    {pgReq(stmt(ClassWrite, "INSERT"), "contractors", "analysts"), false},
		"exceeds a rule":  {pgReq(stmt(ClassWrite, "INSERT"), "analysts"), false},
		"no rule applies": {pgReq(stmt(ClassRead, "SELECT"), "visitors"), false},
	}
}

func BenchmarkAuthorizePostgresStatement(b *testing.B) {
	p := mustParse(b, benchPolicy(100)+pgBenchRules)
	ctx := context.Background()
	for name, c := range pgBenchCases() {
		if got := p.Authorize(ctx, c.r); got.Allow != c.allow {
			b.Fatalf("%s: got %+v, want allow %v", name, got, c.allow)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Authorize(ctx, c.r)
			}
		})
	}
}
