package policy

import (
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/postern/postern/protocols"
)

// ReasonRateLimited is the reason of a decision refused by a rule's rate.
const ReasonRateLimited = "over the rate limit of rule"

// limits holds the token buckets of rules' rates, one per rule and
// identity. A bucket is found again after a reload while its rule keeps its
// name and rate; buckets unused for idleBucket are dropped.
type limits struct {
	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	sweep   time.Time
}

// bucketKey names a bucket: a rule, which of its rates (-1: the rule's own,
// else the index of the http or grpc entry), the rate, and the identity. It
// is built without allocating.
type bucketKey struct {
	rule    string
	section byte // 0 for the rule's own rate, 'h' http, 'g' grpc
	entry   int
	rate    Rate
	id      string
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

const idleBucket = 10 * time.Minute

// allow takes one event from the bucket of rule r's own rate for identity id.
func (l *limits) allow(r *Rule, id string, now time.Time) bool {
	return l.take(bucketKey{rule: r.Name, entry: -1, rate: *r.Rate, id: id}, now)
}

// take takes one event from the bucket k.
func (l *limits) take(k bucketKey, now time.Time) bool {
	rt := k.rate
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[bucketKey]*bucket{}
	}
	if now.Sub(l.sweep) > idleBucket {
		for k, b := range l.buckets {
			if now.Sub(b.used) > idleBucket {
				delete(l.buckets, k)
			}
		}
		l.sweep = now
	}
	b := l.buckets[k]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(rt.PerSecond()), rt.Count)}
		l.buckets[k] = b
	}
	b.used = now
	return b.lim.AllowN(now, 1)
}

// limit applies the rate of the rule that allowed d to the request: a TCP
// connection, or one Postgres statement (not a session's startup). HTTP
// requests and gRPC calls go through limitCall.
func (l *limits) limit(p *Policy, r protocols.Request, d protocols.Decision, now time.Time) protocols.Decision {
	if !d.Allow || p == nil {
		return d
	}
	switch {
	case r.Postgres != nil && !r.Postgres.Startup && !r.Postgres.Setting:
	case r.Postgres == nil && r.Protocol == protocols.TCP:
	default:
		return d
	}
	rule := p.rule(d.Rule)
	if rule == nil || rule.Rate == nil || l.allow(rule, r.Identity.String(), now) {
		return d
	}
	return rateLimited(d.Rule, *rule.Rate)
}

// limitCall applies to an allowed HTTP request or gRPC call the rate of
// its rule, then the rate of the entry that matched it (entry < 0: none).
func (l *limits) limitCall(rule *Rule, entry int, r protocols.Request, d protocols.Decision, now time.Time) protocols.Decision {
	id := r.Identity.String()
	if rule.Rate != nil && !l.allow(rule, id, now) {
		return rateLimited(rule.Name, *rule.Rate)
	}
	if er := rule.entryRate(r, entry); er != nil {
		section := byte('h')
		if r.GRPC != nil {
			section = 'g'
		}
		if !l.take(bucketKey{rule: rule.Name, section: section, entry: entry, rate: *er, id: id}, now) {
			return rateLimited(rule.Name, *er)
		}
	}
	return d
}

func rateLimited(rule string, rt Rate) protocols.Decision {
	return protocols.Decision{Rule: rule, Reason: ReasonRateLimited + " " + strconv.Quote(rule) + " (" + rt.String() + " per identity)",
		RateLimited: true}
}

// rule returns the rule named name, nil if there is none.
func (p *Policy) rule(name string) *Rule {
	for i := range p.rules {
		if p.rules[i].Name == name {
			return &p.rules[i]
		}
	}
	return nil
}
