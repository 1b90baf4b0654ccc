package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/tunnel"
)

// agentUpstream spreads the requests of an HTTP or gRPC service over the
// agents that serve it: a pool of connections (tunnel streams) per agent —
// HTTP/1.1 keep-alive connections for an HTTP service, one HTTP/2
// connection for a gRPC service — and each request on the next healthy
// agent in turn (registry.candidates). A request whose agent cannot be
// reached is sent to the next one: nothing of it has been sent yet. The
// pool of an agent that has gone is closed; that of an agent that drains
// takes no new request and is closed as its requests end.
type agentUpstream struct {
	s       *Server
	service string
	grpc    bool

	mu sync.Mutex
	ts map[*agentConn]idleCloser
}

// idleCloser is an agent's pool: an http.Transport or an http2.Transport.
type idleCloser interface {
	http.RoundTripper
	CloseIdleConnections()
}

// dialError is an agent that could not be reached: no byte of the request
// was sent.
type dialError struct{ error }

func (e dialError) Unwrap() error { return e.error }

func (u *agentUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	cands := u.s.reg.candidates(u.service)
	if len(cands) == 0 {
		return nil, fmt.Errorf("no agent serves service %q", u.service)
	}
	if !u.grpc && len(cands) > 1 && req.Body != nil && req.Body != http.NoBody {
		// http.Transport closes the body of a request it could not send; the
		// next agent needs it open. (The server closes it when the handler
		// returns.)
		req.Body = keptBody{req.Body}
	}
	var errs []error
	for _, a := range cands {
		t := u.transport(a)
		if t == nil {
			continue // drained since
		}
		res, err := t.RoundTrip(req)
		var de dialError
		if err == nil || !errors.As(err, &de) {
			return res, err
		}
		errs = append(errs, fmt.Errorf("agent %s: %w", a.name, err))
	}
	return nil, fmt.Errorf("reaching service %q: %w", u.service, errors.Join(errs...))
}

// keptBody is a request body whose Close is left to the server.
type keptBody struct{ io.ReadCloser }

func (keptBody) Close() error { return nil }

// transport returns the pool of a, or nil when a drains.
func (u *agentUpstream) transport(a *agentConn) idleCloser {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.ts[a]; ok {
		return t
	}
	if a.draining.Load() {
		return nil
	}
	h := tunnel.Header{Kind: tunnel.KindData, Service: u.service, Identity: u.s.id.String(), Source: "gateway"}
	dial := func(ctx context.Context) (net.Conn, error) {
		st, err := u.s.openOn(ctx, a, h)
		if err != nil {
			u.s.log.Warn("agent could not serve stream", "agent", a.name, "service", u.service, "err", err)
			return nil, dialError{err}
		}
		return st, nil
	}
	var t idleCloser
	if u.grpc {
		t = &http2.Transport{
			AllowHTTP:          true, // h2c inside the tunnel stream
			DisableCompression: true,
			ReadIdleTimeout:    30 * time.Second,
			PingTimeout:        10 * time.Second,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				return dial(ctx)
			},
		}
	} else {
		t = &http.Transport{
			DialContext:            func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			MaxIdleConns:           256,
			MaxIdleConnsPerHost:    256,
			IdleConnTimeout:        90 * time.Second,
			DisableCompression:     true, // the client's Accept-Encoding goes through as sent
			MaxResponseHeaderBytes: 1 << 20,
			ExpectContinueTimeout:  time.Second,
		}
	}
	if u.ts == nil {
		u.ts = map[*agentConn]idleCloser{}
	}
	u.ts[a] = t
	go func() {
		<-a.session.Done()
		u.mu.Lock()
		if u.ts[a] == t {
			delete(u.ts, a)
		}
		u.mu.Unlock()
		t.CloseIdleConnections()
	}()
	return t
}

// drain stops sending requests to a and closes its connections as their
// requests end, so that the agent is left with none.
func (u *agentUpstream) drain(a *agentConn) {
	u.mu.Lock()
	t, ok := u.ts[a]
	delete(u.ts, a)
	u.mu.Unlock()
	if !ok {
		return
	}
	t.CloseIdleConnections()
	go func() {
		tick := time.NewTicker(drainPoll)
		defer tick.Stop()
		for {
			select {
			case <-a.session.Done():
				return
			case <-tick.C:
				t.CloseIdleConnections()
			}
		}
	}()
}

// drainPoll is how often a draining agent's connections are looked at for
// requests that ended.
const drainPoll = 50 * time.Millisecond

// CloseIdleConnections closes the connections that carry no request.
func (u *agentUpstream) CloseIdleConnections() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.ts {
		t.CloseIdleConnections()
	}
}

// upstreams holds one agentUpstream per HTTP or gRPC service, shared by
// all its clients, so that tunnel streams are reused across requests.
type upstreams struct {
	mu sync.Mutex
	m  map[string]*agentUpstream
}

// upstream returns the shared RoundTripper of service.
func (s *Server) upstream(service, proto string) http.RoundTripper {
	s.ups.mu.Lock()
	defer s.ups.mu.Unlock()
	key := proto + "/" + service
	if u, ok := s.ups.m[key]; ok {
		return u
	}
	if s.ups.m == nil {
		s.ups.m = map[string]*agentUpstream{}
	}
	u := &agentUpstream{s: s, service: service, grpc: proto == protocols.GRPC}
	s.ups.m[key] = u
	return u
}

// drainUpstreams takes a draining agent out of every service's pools.
func (s *Server) drainUpstreams(a *agentConn) {
	s.ups.mu.Lock()
	defer s.ups.mu.Unlock()
	for _, u := range s.ups.m {
		u.drain(a)
	}
}

// closeUpstreams drops the idle upstream connections (at shutdown).
func (s *Server) closeUpstreams() {
	s.ups.mu.Lock()
	defer s.ups.mu.Unlock()
	for _, u := range s.ups.m {
		u.CloseIdleConnections()
	}
}
