package policy

import (
	"context"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

const ratePolicy = `rules:
  - name: tcp-limited
    identities: [group:ops]
    services: [echo]
    rate: 2/m
  - name: pg-limited
    identities: [group:analysts]
    services: [pg-main]
    rate: 3/h
    postgres:
      statements: [read]
`

// TestRateLimits: a rule's rate holds each identity to its own bucket, on
// TCP connections and Postgres statements; startups and startup settings
// do not count, and a reload keeps the buckets of unchanged rules.
func TestRateLimits(t *testing.T) {
	ctx := context.Background()
	e := NewEngine(mustParse(t, ratePolicy))
	tcp := func(id string) protocols.Request {
		r := req(id, "echo", "ops")
		r.Protocol = protocols.TCP
		return r
	}
	setting := stmt(ClassRead, "SET")
	setting.Setting = true
	steps := []struct {
		name    string
		r       protocols.Request
		allow   bool
		limited bool
	}{
		{"first connection", tcp(bob), true, false},
		{"second connection", tcp(bob), true, false},
		{"third connection is over 2/m", tcp(bob), false, true},
		{"another identity has its own bucket", tcp("spiffe://postern.local/user/ann"), true, false},
		{"startup does not count", pgReq(startup("app", "readonly"), "analysts"), true, false},
		{"a startup setting does not count", pgReq(setting, "analysts"), true, false},
		{"statement 1", pgReq(stmt(ClassRead, "SELECT"), "analysts"), true, false},
		{"statement 2", pgReq(stmt(ClassRead, "SELECT"), "analysts"), true, false},
		{"statement 3", pgReq(stmt(ClassRead, "SELECT"), "analysts"), true, false},
		{"statement 4 is over 3/h", pgReq(stmt(ClassRead, "SELECT"), "analysts"), false, true},
		{"a refused statement is refused by policy, not by rate", pgReq(stmt(ClassWrite, "INSERT"), "analysts"), false, false},
	}
	for i, s := range steps {
		got := e.Authorize(ctx, s.r)
		if got.Allow != s.allow || got.RateLimited != s.limited {
			t.Fatalf("step %d (%s): got %+v, want allow %v, rate limited %v", i, s.name, got, s.allow, s.limited)
		}
		if s.limited && got.Rule == "" {
			t.Fatalf("step %d: a rate refusal must name its rule: %+v", i, got)
		}
	}
	e.Set(mustParse(t, ratePolicy)) // a reload of the same rules
	if got := e.Authorize(ctx, tcp(bob)); !got.RateLimited {
		t.Fatalf("after a reload the bucket was refilled: %+v", got)
	}
	e.Set(mustParse(t, `rules:
  - name: tcp-limited
    identities: [group:ops]
    services: [echo]
    rate: 5/m
`))
	if got := e.Authorize(ctx, tcp(bob)); !got.Allow {
		t.Fatalf("a changed rate starts a new bucket: %+v", got)
	}
}

// TestRateBucketsExpire: idle buckets are dropped.
func TestRateBucketsExpire(t *testing.T) {
	var l limits
	p := mustParse(t, ratePolicy)
	r := p.rule("tcp-limited")
	now := time.Now()
	l.allow(r, "a", now)
	l.allow(r, "b", now.Add(idleBucket+time.Second))
	l.allow(r, "c", now.Add(idleBucket+2*time.Second)) // no sweep due yet
	if n := len(l.buckets); n != 2 {
		t.Fatalf("got %d buckets, want 2 (a dropped)", n)
	}
}
