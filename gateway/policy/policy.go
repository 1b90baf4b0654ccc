package policy

import (
	"context"
	"crypto/sha256"
	"iter"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols"
)

// Effect is what a rule does to the requests it matches.
type Effect uint8

// Effects. The zero Effect is Allow, the default of a rule with no effect.
const (
	Allow Effect = iota
	Deny
)

// String returns "allow" or "deny".
func (e Effect) String() string {
	if e == Deny {
		return "deny"
	}
	return "allow"
}

// Statement classes of the postgres section; see SPEC §6.
const (
	ClassRead  = "read"
	ClassWrite = "write"
	ClassDDL   = "ddl"
	ClassAdmin = "admin"
)

// Rule is one compiled rule of a policy. A Rule is read-only: its slices
// are shared with the Policy it came from.
type Rule struct {
	Name       string
	Effect     Effect
	Identities []string // as written: SPIFFE ID patterns and group:NAME
	Services   []string // as written: service name globs
	Postgres   *PostgresRule
	HTTP       []HTTPRule
	GRPC       []GRPCRule
	Rate       *Rate // per-identity limit on the whole rule, nil for none
	Line       int   // line of the rule in the policy file

	identities []identityPattern
	services   []glob
}

// ConnectionLevel reports whether the rule has no postgres, http or grpc
// section, so that it decides whole connections. A deny rule decides at
// connection level only then; a deny rule with a section refuses only the
// statements, requests or calls that the section matches.
func (r *Rule) ConnectionLevel() bool {
	return r.Postgres == nil && r.HTTP == nil && r.GRPC == nil
}

// MatchIdentity reports whether any of the rule's identity patterns matches
// id, or names one of groups.
func (r *Rule) MatchIdentity(id spiffeid.ID, groups []string) bool {
	for i := range r.identities {
		if r.identities[i].match(id, groups) {
			return true
		}
	}
	return false
}

// MatchService reports whether any of the rule's service globs matches name.
func (r *Rule) MatchService(name string) bool {
	for i := range r.services {
		if r.services[i].match(name) {
			return true
		}
	}
	return false
}

// Applies reports whether the rule applies to the request: its identity
// and its service both match. The protocol is not considered.
func (r *Rule) Applies(req protocols.Request) bool {
	return r.MatchService(req.Service) && r.MatchIdentity(req.Identity, req.Groups)
}

// PostgresRule narrows a rule to some databases, login roles and
// statements. A nil list matches everything.
type PostgresRule struct {
	Databases  []string // globs, as written
	Users      []string // globs of database roles, as written
	Statements []string // as written: classes and command tags
	Classes    []string // the statement classes among Statements (read, write, ddl, admin)
	Tags       []string // the command tags among Statements (SELECT, "CREATE TABLE", …)

	databases []glob
	users     []glob
	classes   classSet // Classes as bits
	readOnly  bool     // see ReadOnly
}

// MatchDatabase reports whether db is one of the section's databases.
func (p *PostgresRule) MatchDatabase(db string) bool {
	return p.Databases == nil || matchAny(p.databases, db)
}

// MatchUser reports whether role is one of the section's database roles.
func (p *PostgresRule) MatchUser(role string) bool {
	return p.Users == nil || matchAny(p.users, role)
}

// MatchStatement reports whether a statement of the given class (read,
// write, ddl, admin) and command tag (SELECT, "CREATE TABLE", …) is one of
// the section's statements.
func (p *PostgresRule) MatchStatement(class, tag string) bool {
	if p.Statements == nil {
		return true
	}
	for _, c := range p.Classes {
		if c == class {
			return true
		}
	}
	for _, t := range p.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// HTTPRule is one entry of a rule's http section. Nil Methods or Paths
// match every method or path.
type HTTPRule struct {
	Methods []string // upper case, or "*"
	Paths   []string // as written: path patterns starting with "/"
	Rate    *Rate    // per-identity limit on the requests this entry matches

	anyMethod bool
	paths     []pathPattern
}

// Match reports whether a request with the given method and path (without
// query) matches the entry. In paths, * matches within a segment and **
// matches any number of segments, including none.
func (h *HTTPRule) Match(method, path string) bool {
	if h.Methods != nil && !h.anyMethod {
		found := false
		for _, m := range h.Methods {
			if m == method {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if h.Paths == nil {
		return true
	}
	for i := range h.paths {
		if h.paths[i].match(path) {
			return true
		}
	}
	return false
}

// GRPCRule is one entry of a rule's grpc section. Nil Methods match every
// call.
type GRPCRule struct {
	Methods []string // as written: "/package.Service/Method" globs
	Rate    *Rate    // per-identity limit on the calls this entry matches

	methods []grpcPattern
}

// Match reports whether a call of the full method name
// "/package.Service/Method" matches the entry.
func (g *GRPCRule) Match(fullMethod string) bool {
	if g.Methods == nil {
		return true
	}
	if len(fullMethod) < 2 || fullMethod[0] != '/' {
		return false
	}
	for i := 1; i < len(fullMethod); i++ {
		if fullMethod[i] == '/' {
			svc, m := fullMethod[1:i], fullMethod[i+1:]
			for j := range g.methods {
				if g.methods[j].service.match(svc) && g.methods[j].method.match(m) {
					return true
				}
			}
			return false
		}
	}
	return false
}

type grpcPattern struct{ service, method glob }

// Rate is a per-identity token bucket: up to Count events at once,
// refilled at Count per Per.
type Rate struct {
	Count int
	Per   time.Duration // time.Second, time.Minute or time.Hour
}

// PerSecond returns the refill rate in events per second.
func (r Rate) PerSecond() float64 { return float64(r.Count) / r.Per.Seconds() }

// String returns the rate as written in a policy, like "100/s".
func (r Rate) String() string {
	unit := "s"
	switch r.Per {
	case time.Minute:
		unit = "m"
	case time.Hour:
		unit = "h"
	}
	return strconv.Itoa(r.Count) + "/" + unit
}

func matchAny(gs []glob, s string) bool {
	for i := range gs {
		if gs[i].match(s) {
			return true
		}
	}
	return false
}

// Policy is a compiled, immutable set of rules. The zero Policy and a nil
// *Policy deny everything.
type Policy struct {
	rules    []Rule
	denies   []*Rule // connection-level deny rules, in file order
	pgDenies []*Rule // deny rules that are connection-level or have a postgres section, in file order
	allows   []*Rule // allow rules, in file order
	sum      [sha256.Size]byte
}

func newPolicy(rules []Rule, data []byte) *Policy {
	p := &Policy{rules: rules, sum: sha256.Sum256(data)}
	for i := range p.rules {
		r := &p.rules[i]
		if r.Postgres != nil {
			r.Postgres.compile()
		}
		if r.Effect == Deny && (r.ConnectionLevel() || r.Postgres != nil) {
			p.pgDenies = append(p.pgDenies, r)
		}
		switch {
		case r.Effect == Allow:
			p.allows = append(p.allows, r)
		case r.ConnectionLevel():
			p.denies = append(p.denies, r)
		}
	}
	return p
}

// Rules returns the policy's rules in file order. The rules are shared with
// the policy and must not be modified.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	return append([]Rule(nil), p.rules...)
}

// Len returns the number of rules.
func (p *Policy) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// Applicable yields, in file order, the rules whose identities and services
// match the request, whatever their effect and sections. Protocol handlers
// use it to decide on statements, requests and calls.
func (p *Policy) Applicable(r protocols.Request) iter.Seq[*Rule] {
	return func(yield func(*Rule) bool) {
		if p == nil {
			return
		}
		for i := range p.rules {
			if p.rules[i].Applies(r) && !yield(&p.rules[i]) {
				return
			}
		}
	}
}

// Reasons given in decisions.
const (
	ReasonDenied  = "denied by rule"
	ReasonAllowed = "allowed by rule"
)

// Authorize decides on r. Without r.Postgres it decides whether r's
// identity may connect to r's service: a connection-level deny rule that
// applies wins; otherwise the first allow rule that applies, in file order,
// allows; otherwise the decision is default-deny. Rules with postgres, http
// or grpc sections are not narrowed then: the protocol handlers ask again
// for what those sections decide.
//
// With r.Postgres it decides a Postgres session's startup (database and
// role) or one of its statements, by the rules' postgres sections, as
// docs/POLICY.md describes. With r.HTTP or r.GRPC it decides one request
// or call by the rules' http or grpc sections (see decideCall). Deciding a statement that is allowed does not
// allocate.
func (p *Policy) Authorize(ctx context.Context, r protocols.Request) protocols.Decision {
	if p == nil {
		return defaultDeny(r)
	}
	if r.Postgres != nil {
		return p.authorizePostgres(r)
	}
	if r.HTTP != nil || r.GRPC != nil {
		return p.authorizeCall(r)
	}
	for _, rule := range p.denies {
		if rule.Applies(r) {
			return protocols.Decision{Allow: false, Rule: rule.Name, Reason: ReasonDenied}
		}
	}
	for _, rule := range p.allows {
		if rule.Applies(r) {
			return protocols.Decision{Allow: true, Rule: rule.Name, Reason: ReasonAllowed}
		}
	}
	return defaultDeny(r)
}

// defaultDeny is the decision when no rule applies to r's identity and
// service.
func defaultDeny(r protocols.Request) protocols.Decision {
	return protocols.Decision{
		Allow:  false,
		Rule:   protocols.DefaultDeny,
		Reason: "no rule allows identity " + identity(r) + " to reach service " + r.Service,
	}
}

// identity names r's caller in reasons.
func identity(r protocols.Request) string {
	if r.Identity.IsZero() {
		return "(none)"
	}
	return r.Identity.String()
}
