package policy

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocols"
)

// Engine is a protocols.Authorizer whose policy can be swapped while it
// serves. Each decision uses one policy from start to end. The zero Engine
// denies everything.
type Engine struct {
	p      atomic.Pointer[Policy]
	limits limits
}

var _ protocols.Authorizer = (*Engine)(nil)

// NewEngine returns an Engine that decides with p; a nil p denies
// everything until Set is called.
func NewEngine(p *Policy) *Engine {
	e := &Engine{}
	e.p.Store(p)
	return e
}

// Set makes p the policy of decisions from now on.
func (e *Engine) Set(p *Policy) { e.p.Store(p) }

// Policy returns the policy in force, nil if none was set.
func (e *Engine) Policy() *Policy { return e.p.Load() }

// Authorize decides with the policy in force (see Policy.Authorize), then
// holds the identity to the rate of the rule that allowed a TCP connection,
// a Postgres statement, an HTTP request or a gRPC call, and for the last
// two also to the rate of the http or grpc entry that matched: over
// either, the decision is refused with RateLimited set.
func (e *Engine) Authorize(ctx context.Context, r protocols.Request) protocols.Decision {
	p := e.p.Load()
	if p != nil && (r.HTTP != nil || r.GRPC != nil) {
		d, rule, entry := p.decideCall(r)
		if rule == nil {
			return d
		}
		return e.limits.limitCall(rule, entry, r, d, time.Now())
	}
	return e.limits.limit(p, r, p.Authorize(ctx, r), time.Now())
}
