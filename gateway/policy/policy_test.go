package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols"
)

const matchPolicy = `rules:
  - name: no-interns
    effect: deny
    identities: ["spiffe://postern.local/intern/**"]
    services: ["*"]
  - name: no-writes-for-contractors
    effect: deny
    identities: [group:contractors]
    services: [pg-*]
    postgres:
      statements: [write, ddl, admin]
  - name: no-admin-api
    effect: deny
    identities: [group:analysts]
    services: [api]
    http:
      - paths: ["/admin/**"]
  - name: analysts-read
    identities:
      - spiffe://postern.local/user/alice
      - group:analysts
    services: [pg-*]
    postgres:
      statements: [read]
  - name: analysts-api
    identities: [group:analysts]
    services: [api]
  - name: everyone-pg
    identities: ["spiffe://postern.local/user/*"]
    services: [pg-main, "cache-?"]
  - name: contractors
    identities: [group:contractors]
    services: ["pg-*"]
  - name: blocked-bob
    effect: deny
    identities: [spiffe://postern.local/user/bob]
    services: [cache-1]
`

func req(id, service string, groups ...string) protocols.Request {
	r := protocols.Request{Service: service, Groups: groups, Protocol: protocols.TCP}
	if id != "" {
		r.Identity = spiffeid.RequireFromString(id)
	}
	return r
}

func TestAuthorize(t *testing.T) {
	p, err := Parse([]byte(matchPolicy))
	if err != nil {
		t.Fatal(err)
	}
	const td = "spiffe://postern.local"
	tests := map[string]struct {
		r    protocols.Request
		want protocols.Decision
	}{
		"allowed by identity": {
			r:    req(td+"/user/alice", "pg-main"),
			want: protocols.Decision{Allow: true, Rule: "analysts-read", Reason: ReasonAllowed},
		},
		"allowed by group": {
			r:    req(td+"/svc/notebook", "pg-reports", "analysts"),
			want: protocols.Decision{Allow: true, Rule: "analysts-read", Reason: ReasonAllowed},
		},
		"first allow in file order": {
			r:    req(td+"/user/carol", "pg-main", "analysts"),
			want: protocols.Decision{Allow: true, Rule: "analysts-read", Reason: ReasonAllowed},
		},
		"later allow when earlier does not apply": {
			r:    req(td+"/user/carol", "pg-main"),
			want: protocols.Decision{Allow: true, Rule: "everyone-pg", Reason: ReasonAllowed},
		},
		"star stays within a segment": {
			r: req(td+"/user/carol/laptop", "pg-main"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://postern.local/user/carol/laptop to reach service pg-main"},
		},
		"service question mark": {
			r:    req(td+"/user/carol", "cache-2"),
			want: protocols.Decision{Allow: true, Rule: "everyone-pg", Reason: ReasonAllowed},
		},
		"service question mark is one character": {
			r: req(td+"/user/carol", "cache-22"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://postern.local/user/carol to reach service cache-22"},
		},
		"deny beats allow": {
			r:    req(td+"/intern/dave", "pg-main", "analysts"),
			want: protocols.Decision{Rule: "no-interns", Reason: ReasonDenied},
		},
		"double star deny reaches deep": {
			r:    req(td+"/intern/team/dave", "anything"),
			want: protocols.Decision{Rule: "no-interns", Reason: ReasonDenied},
		},
		"deny later in the file beats an earlier allow": {
			r:    req(td+"/user/bob", "cache-1"),
			want: protocols.Decision{Rule: "blocked-bob", Reason: ReasonDenied},
		},
		"deny with a postgres section does not deny the connection": {
			r:    req(td+"/ext/eve", "pg-main", "contractors"),
			want: protocols.Decision{Allow: true, Rule: "contractors", Reason: ReasonAllowed},
		},
		"deny with an http section does not deny the connection": {
			r:    req(td+"/svc/notebook", "api", "analysts"),
			want: protocols.Decision{Allow: true, Rule: "analysts-api", Reason: ReasonAllowed},
		},
		"other trust domain": {
			r: req("spiffe://other.local/user/alice", "pg-main"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://other.local/user/alice to reach service pg-main"},
		},
		"unknown service": {
			r: req(td+"/user/alice", "redis"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity spiffe://postern.local/user/alice to reach service redis"},
		},
		"no identity, group only": {
			r:    req("", "api", "analysts"),
			want: protocols.Decision{Allow: true, Rule: "analysts-api", Reason: ReasonAllowed},
		},
		"no identity": {
			r: req("", "api"),
			want: protocols.Decision{Rule: protocols.DefaultDeny,
				Reason: "no rule allows identity (none) to reach service api"},
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

func TestAuthorizeEmpty(t *testing.T) {
	alice := req("spiffe://postern.local/user/alice", "pg-main")
	empty, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*Policy{"nil": nil, "zero": {}, "empty": empty} {
		t.Run(name, func(t *testing.T) {
			got := p.Authorize(context.Background(), alice)
			if got.Allow || got.Rule != protocols.DefaultDeny {
				t.Errorf("got %+v, want default-deny", got)
			}
		})
	}
}

func TestApplicable(t *testing.T) {
	p, err := Parse([]byte(matchPolicy))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for r := range p.Applicable(req("spiffe://postern.local/user/eve", "pg-main", "contractors")) {
		got = append(got, r.Name)
	}
	if want := "no-writes-for-contractors everyone-pg contractors"; strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
	for range p.Applicable(req("spiffe://postern.local/user/eve", "pg-main", "contractors")) {
		break // stopping early must not panic
	}
	for range (*Policy)(nil).Applicable(req("", "x")) {
		t.Error("got a rule from a nil policy")
	}
}

// benchPolicy returns a policy of n rules in the shape of a real one:
// mostly allows per team and service, some denies, one section each.
func benchPolicy(n int) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: rule-%d\n", i)
		switch {
		case i%10 == 0:
			b.WriteString("    effect: deny\n")
			fmt.Fprintf(&b, "    identities: [\"spiffe://postern.local/blocked/%d/**\"]\n", i)
			fmt.Fprintf(&b, "    services: [\"svc-%d-*\"]\n", i)
		case i%3 == 0:
			fmt.Fprintf(&b, "    identities: [group:team-%d, \"spiffe://postern.local/user/*/team-%d\"]\n", i, i)
			fmt.Fprintf(&b, "    services: [svc-%d, \"svc-%d-?\"]\n", i, i)
			b.WriteString("    http:\n      - methods: [GET]\n        paths: [\"/v1/**\"]\n")
		default:
			fmt.Fprintf(&b, "    identities: [\"spiffe://postern.local/team-%d/**\", group:team-%d]\n", i, i)
			fmt.Fprintf(&b, "    services: [\"svc-%d\", \"pg-%d-*\"]\n", i, i)
		}
	}
	return b.String()
}

func BenchmarkAuthorize(b *testing.B) {
	p, err := Parse([]byte(benchPolicy(100)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cases := map[string]struct {
		r     protocols.Request
		allow bool
	}{
		"allow last":   {req("spiffe://postern.local/team-98/api/worker", "pg-98-main", "dev", "ops"), true},
		"allow group":  {req("spiffe://postern.local/user/alice/x", "svc-51-a", "team-51"), true},
		"deny":         {req("spiffe://postern.local/blocked/50/x", "svc-50-a"), false},
		"default deny": {req("spiffe://postern.local/user/nobody", "svc-unknown", "dev"), false},
	}
	for name, c := range cases {
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

func TestAuthorizeAllocations(t *testing.T) {
	p, err := Parse([]byte(benchPolicy(100)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := req("spiffe://postern.local/team-98/api/worker", "pg-98-main", "dev")
	if n := testing.AllocsPerRun(100, func() { p.Authorize(ctx, r) }); n != 0 {
		t.Errorf("got %v allocations per allowed decision, want 0", n)
	}
	r = req("spiffe://postern.local/blocked/50/x", "svc-50-a")
	if n := testing.AllocsPerRun(100, func() { p.Authorize(ctx, r) }); n != 0 {
		t.Errorf("got %v allocations per denied decision, want 0", n)
	}
}
