package gateway

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocols/tunnel"
)

// agentConn is one live tunnel session of one agent and what it announced.
type agentConn struct {
	name     string
	session  tunnel.Session
	services map[string]string // name → protocol
	capture  map[string]int    // name → Postgres result rows to record
	lastSeen atomic.Int64      // unix nanoseconds of the last control message
	since    time.Time
	draining atomic.Bool // the agent is leaving: no new stream goes to it
}

func (a *agentConn) healthy(now time.Time, staleAfter time.Duration) bool {
	select {
	case <-a.session.Done():
		return false
	default:
	}
	return now.Sub(time.Unix(0, a.lastSeen.Load())) < staleAfter
}

// registry maps services to the agent sessions that serve them.
type registry struct {
	mu         sync.RWMutex
	conns      map[*agentConn]struct{}
	next       atomic.Uint64 // round-robin among healthy agents
	staleAfter time.Duration
}

func newRegistry(staleAfter time.Duration) *registry {
	return &registry{conns: map[*agentConn]struct{}{}, staleAfter: staleAfter}
}

func (r *registry) add(a *agentConn) {
	r.mu.Lock()
	r.conns[a] = struct{}{}
	r.mu.Unlock()
}

func (r *registry) remove(a *agentConn) {
	r.mu.Lock()
	delete(r.conns, a)
	r.mu.Unlock()
}

func (r *registry) announce(a *agentConn, services []tunnel.Service) {
	m := make(map[string]string, len(services))
	c := make(map[string]int)
	for _, s := range services {
		m[s.Name] = s.Protocol
		if s.CaptureRows > 0 {
			c[s.Name] = s.CaptureRows
		}
	}
	r.mu.Lock()
	a.services, a.capture = m, c
	r.mu.Unlock()
}

// protocol returns the protocol of a service as its agents announced it.
func (r *registry) protocol(service string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for a := range r.conns {
		if p, ok := a.services[service]; ok {
			return p, true
		}
	}
	return "", false
}

// candidates returns the sessions that serve service, healthy ones first in
// round-robin order, then those whose heartbeat is late (still worth a try);
// never one that drains.
func (r *registry) candidates(service string) []*agentConn {
	now := time.Now()
	var healthy, late []*agentConn
	r.mu.RLock()
	for a := range r.conns {
		if _, ok := a.services[service]; !ok || a.draining.Load() {
			continue
		}
		if a.healthy(now, r.staleAfter) {
			healthy = append(healthy, a)
		} else {
			late = append(late, a)
		}
	}
	r.mu.RUnlock()
	// Stable order first (newest session first), then rotate for fairness.
	byAge := func(x, y *agentConn) int { return y.since.Compare(x.since) }
	slices.SortFunc(healthy, byAge)
	slices.SortFunc(late, byAge)
	if n := len(healthy); n > 1 {
		k := int(r.next.Add(1) % uint64(n))
		healthy = append(healthy[k:], healthy[:k]...)
	}
	return append(healthy, late...)
}

// count returns how many agent sessions are registered.
func (r *registry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.conns)
}

// captureRows returns how many result rows of each Postgres query a
// service's agents asked to record.
func (r *registry) captureRows(service string) (int, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for a := range r.conns {
		if n, ok := a.capture[service]; ok {
			return n, true
		}
	}
	return 0, false
}
