package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/postern/postern/protocols"
)

const callPolicy = `rules:
  - name: no-admin
    effect: deny
    identities: ["spiffe://postern.local/**"]
    services: [api]
    http:
      - paths: ["/admin/**"]
  - name: no-delete-orders
    effect: deny
    identities: ["spiffe://postern.local/**"]
    services: [orders]
    grpc:
      - methods: ["/orders.v1.Orders/Delete*"]
  - name: pg-only-deny
    effect: deny
    identities: ["spiffe://postern.local/**"]
    services: [api, orders]
    postgres:
      statements: [write]
  - name: readers
    identities: [group:readers]
    services: [api]
    http:
      - methods: [GET, HEAD]
        paths: ["/v1/**"]
      - methods: [POST]
        paths: ["/v1/search"]
  - name: order-readers
    identities: [group:readers]
    services: [orders]
    grpc:
      - methods: ["/orders.v1.Orders/Get*", "/grpc.health.v1.Health/*"]
  - name: ops
    identities: [group:ops]
    services: [api, orders]
  - name: blocked
    effect: deny
    identities: [spiffe://postern.local/user/mallory]
    services: [api]
`

func httpReq(id, method, path string, groups ...string) protocols.Request {
	r := req(id, "api", groups...)
	r.Protocol = protocols.HTTP
	r.HTTP = &protocols.HTTPRequest{Method: method, Path: path}
	return r
}

func grpcReq(id, method string, groups ...string) protocols.Request {
	r := req(id, "orders", groups...)
	r.Protocol = protocols.GRPC
	r.GRPC = &protocols.GRPCRequest{Method: method}
	return r
}

// TestAuthorizeCalls: http and grpc sections decide each request and call;
// deny entries beat allows; a deny rule with only a postgres section plays
// no part; a rule without a section for the protocol allows every call.
func TestAuthorizeCalls(t *testing.T) {
	p := mustParse(t, callPolicy)
	const mallory = "spiffe://postern.local/user/mallory"
	tests := map[string]struct {
		r          protocols.Request
		allow      bool
		rule       string
		wantReason string
	}{
		"reader GET":                 {r: httpReq(bob, "GET", "/v1/orders/7", "readers"), allow: true, rule: "readers"},
		"reader HEAD root of /v1":    {r: httpReq(bob, "HEAD", "/v1", "readers"), allow: true, rule: "readers"},
		"reader POST search":         {r: httpReq(bob, "POST", "/v1/search", "readers"), allow: true, rule: "readers"},
		"reader POST elsewhere":      {r: httpReq(bob, "POST", "/v1/orders", "readers"), rule: "readers", wantReason: `request POST "/v1/orders" is not allowed by rule "readers"`},
		"reader DELETE":              {r: httpReq(bob, "DELETE", "/v1/orders/7", "readers"), rule: "readers"},
		"reader outside /v1":         {r: httpReq(bob, "GET", "/v2/x", "readers"), rule: "readers"},
		"admin path denied to ops":   {r: httpReq(bob, "GET", "/admin/users", "ops"), rule: "no-admin", wantReason: "is denied by rule"},
		"admin root denied":          {r: httpReq(bob, "GET", "/admin", "ops"), rule: "no-admin"},
		"ops everything else":        {r: httpReq(bob, "PATCH", "/anything", "ops"), allow: true, rule: "ops"},
		"connection-level deny wins": {r: httpReq(mallory, "GET", "/v1/x", "ops"), rule: "blocked", wantReason: ReasonDenied},
		"no rule":                    {r: httpReq(bob, "GET", "/v1/x"), rule: protocols.DefaultDeny, wantReason: "no rule allows"},
		"grpc reader Get":            {r: grpcReq(bob, "/orders.v1.Orders/GetOrder", "readers"), allow: true, rule: "order-readers"},
		"grpc reader health":         {r: grpcReq(bob, "/grpc.health.v1.Health/Check", "readers"), allow: true, rule: "order-readers"},
		"grpc reader Create":         {r: grpcReq(bob, "/orders.v1.Orders/CreateOrder", "readers"), rule: "order-readers", wantReason: "call /orders.v1.Orders/CreateOrder is not allowed"},
		"grpc other service":         {r: grpcReq(bob, "/orders.v2.Orders/GetOrder", "readers"), rule: "order-readers"},
		"grpc delete denied to ops":  {r: grpcReq(bob, "/orders.v1.Orders/DeleteOrder", "ops"), rule: "no-delete-orders"},
		"grpc ops other":             {r: grpcReq(bob, "/orders.v1.Orders/CreateOrder", "ops"), allow: true, rule: "ops"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := p.Authorize(context.Background(), tc.r)
			if got.Allow != tc.allow || got.Rule != tc.rule || !strings.Contains(got.Reason, tc.wantReason) {
				t.Fatalf("got %+v, want allow %v by rule %q with reason containing %q", got, tc.allow, tc.rule, tc.wantReason)
			}
		})
	}
}

// TestCallRateLimits: a rule's rate and its entry's rate both hold each
// identity; entries have their own buckets.
func TestCallRateLimits(t *testing.T) {
	e := NewEngine(mustParse(t, `rules:
  - name: api
    identities: [group:g]
    services: [api, orders]
    rate: 5/h
    http:
      - paths: ["/slow/**"]
        rate: 1/h
      - paths: ["/**"]
    grpc:
      - methods: ["/x.Y/*"]
        rate: 2/h
`))
	ctx := context.Background()
	steps := []struct {
		name           string
		r              protocols.Request
		allow, limited bool
	}{
		{"slow 1", httpReq(bob, "GET", "/slow/a", "g"), true, false},
		{"slow 2 is over the entry's 1/h", httpReq(bob, "GET", "/slow/a", "g"), false, true},
		{"another entry still has room", httpReq(bob, "GET", "/fast", "g"), true, false},
		{"another identity has its own bucket", httpReq("spiffe://postern.local/user/ann", "GET", "/slow/a", "g"), true, false},
		{"grpc 1", grpcReq(bob, "/x.Y/A", "g"), true, false},
		{"grpc 2 is the rule's 5th", grpcReq(bob, "/x.Y/A", "g"), true, false},
		{"grpc 3 is over the rule's 5/h", grpcReq(bob, "/x.Y/A", "g"), false, true},
		{"refused by policy, not by rate", grpcReq(bob, "/z.Y/A", "g"), false, false},
	}
	for i, s := range steps {
		got := e.Authorize(ctx, s.r)
		if got.Allow != s.allow || got.RateLimited != s.limited {
			t.Fatalf("step %d (%s): got %+v, want allow %v, rate limited %v", i, s.name, got, s.allow, s.limited)
		}
	}
}

func BenchmarkAuthorizeHTTPRequest(b *testing.B) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		policy string
		r      protocols.Request
	}{
		"entry": {callPolicy, httpReq(bob, "GET", "/v1/orders/7/lines", "readers")},
		"rated": {`rules:
  - name: api
    identities: [group:g]
    services: [api]
    rate: 1000000000/s
    http:
      - paths: ["/v1/**"]
        rate: 1000000000/s
`, httpReq(bob, "GET", "/v1/orders/7", "g")},
	} {
		b.Run(name, func(b *testing.B) {
			e := NewEngine(mustParse(b, tc.policy))
			b.ReportAllocs()
			for b.Loop() {
				if !e.Authorize(ctx, tc.r).Allow {
					b.Fatal("refused")
				}
			}
		})
	}
}
