package policy

import (
	"strconv"

	"github.com/postern/postern/protocols"
)

// A call is an HTTP request or a gRPC call: both are decided one at a time
// by the rules' http or grpc sections, in the same way.

// authorizeCall decides r.HTTP or r.GRPC; see decideCall.
func (p *Policy) authorizeCall(r protocols.Request) protocols.Decision {
	d, _, _ := p.decideCall(r)
	return d
}

// decideCall decides one HTTP request or gRPC call:
//
//  1. A deny rule that applies refuses it when the rule has no sections, or
//     when its section for the call's protocol (http or grpc) has an entry
//     that matches. A deny rule with only other sections plays no part.
//  2. Otherwise the first allow rule that applies and has no section for
//     the protocol, or one whose entry matches, allows it.
//  3. Otherwise, if an allow rule applied but none of its entries matched,
//     the first such rule refuses it; else default-deny.
//
// With an allow it also returns the rule and the index of the entry that
// matched (-1 when the rule has no section for the protocol), whose rates
// the engine then applies.
func (p *Policy) decideCall(r protocols.Request) (protocols.Decision, *Rule, int) {
	for i := range p.rules {
		rule := &p.rules[i]
		if rule.Effect != Deny || !rule.Applies(r) {
			continue
		}
		if rule.ConnectionLevel() {
			return protocols.Decision{Rule: rule.Name, Reason: ReasonDenied}, nil, 0
		}
		if has, entry := rule.matchCall(r); has && entry >= 0 {
			return protocols.Decision{Rule: rule.Name, Reason: describeCall(r) + " is denied by rule"}, nil, 0
		}
	}
	var limit *Rule
	for _, rule := range p.allows {
		if !rule.Applies(r) {
			continue
		}
		has, entry := rule.matchCall(r)
		if !has || entry >= 0 {
			return protocols.Decision{Allow: true, Rule: rule.Name, Reason: ReasonAllowed}, rule, entry
		}
		if limit == nil {
			limit = rule
		}
	}
	if limit == nil {
		return defaultDeny(r), nil, 0
	}
	return protocols.Decision{Rule: limit.Name,
		Reason: describeCall(r) + " is not allowed by rule " + strconv.Quote(limit.Name)}, nil, 0
}

// matchCall reports whether the rule has a section for the call's protocol
// and, if so, the index of its first entry that matches the call (-1 for
// none).
func (r *Rule) matchCall(req protocols.Request) (has bool, entry int) {
	switch {
	case req.HTTP != nil:
		if r.HTTP == nil {
			return false, -1
		}
		for i := range r.HTTP {
			if r.HTTP[i].Match(req.HTTP.Method, req.HTTP.Path) {
				return true, i
			}
		}
	case req.GRPC != nil:
		if r.GRPC == nil {
			return false, -1
		}
		for i := range r.GRPC {
			if r.GRPC[i].Match(req.GRPC.Method) {
				return true, i
			}
		}
	}
	return true, -1
}

// entryRate returns the rate of the rule's entry for the call's protocol,
// nil for none.
func (r *Rule) entryRate(req protocols.Request, entry int) *Rate {
	switch {
	case entry < 0:
		return nil
	case req.HTTP != nil:
		return r.HTTP[entry].Rate
	case req.GRPC != nil:
		return r.GRPC[entry].Rate
	}
	return nil
}

// describeCall names a call in reasons: `request GET /v1/orders` or
// `call /orders.v1.Orders/Get`.
func describeCall(r protocols.Request) string {
	if r.HTTP != nil {
		return "request " + r.HTTP.Method + " " + strconv.Quote(r.HTTP.Path)
	}
	return "call " + r.GRPC.Method
}
