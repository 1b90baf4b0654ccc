package policy

import (
	"context"
	"sync"
	"testing"

	"github.com/postern/postern/protocols"
)

func mustParse(t testing.TB, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func allowPolicy(name, service string) string {
	return "rules:\n  - name: " + name + "\n    identities: [\"spiffe://postern.local/**\"]\n    services: [" + service + "]\n"
}

func TestEngineSwap(t *testing.T) {
	ctx := context.Background()
	alice := req("spiffe://postern.local/user/alice", "db")

	var zero Engine
	if got := zero.Authorize(ctx, alice); got.Allow || got.Rule != protocols.DefaultDeny {
		t.Errorf("zero Engine: got %+v, want default-deny", got)
	}

	e := NewEngine(nil)
	if got := e.Authorize(ctx, alice); got.Allow || got.Rule != protocols.DefaultDeny {
		t.Errorf("nil policy: got %+v, want default-deny", got)
	}

	first := mustParse(t, allowPolicy("first", "db"))
	e.Set(first)
	if e.Policy() != first {
		t.Error("Policy() did not return the policy just set")
	}
	if got := e.Authorize(ctx, alice); !got.Allow || got.Rule != "first" {
		t.Errorf("got %+v, want allowed by first", got)
	}

	e.Set(mustParse(t, allowPolicy("second", "other")))
	if got := e.Authorize(ctx, alice); got.Allow || got.Rule != protocols.DefaultDeny {
		t.Errorf("after swap: got %+v, want default-deny", got)
	}
}

// TestEngineConcurrentSwap runs decisions while the policy changes, for the
// race detector; every decision comes from one policy or the other.
func TestEngineConcurrentSwap(t *testing.T) {
	ctx := context.Background()
	a := mustParse(t, allowPolicy("a", "db"))
	b := mustParse(t, allowPolicy("b", "db"))
	e := NewEngine(a)
	alice := req("spiffe://postern.local/user/alice", "db")

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 2000 {
				if got := e.Authorize(ctx, alice); !got.Allow || (got.Rule != "a" && got.Rule != "b") {
					t.Errorf("got %+v, want allowed by a or b", got)
					return
				}
			}
		})
	}
	for i := range 2000 {
		if i%2 == 0 {
			e.Set(b)
		} else {
			e.Set(a)
		}
	}
	wg.Wait()
}
