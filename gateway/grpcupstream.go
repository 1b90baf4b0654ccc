package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/postern/postern/protocols/tunnel"
)

// grpcUpstream spreads the calls of a gRPC service over the agents that
// serve it: one HTTP/2 connection (a tunnel stream) per agent, each call on
// the next healthy agent in turn (registry.candidates). A call whose
// agent cannot be reached is sent to the next one: nothing of it has been
// sent yet. The connection of an agent that has gone is closed.
type grpcUpstream struct {
	s       *Server
	service string

	mu sync.Mutex
	ts map[*agentConn]*http2.Transport
}

// dialError is an agent that could not be reached: no byte of the call
// was sent.
type dialError struct{ error }

func (e dialError) Unwrap() error { return e.error }

func (u *grpcUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	cands := u.s.reg.candidates(u.service)
	if len(cands) == 0 {
		return nil, fmt.Errorf("no agent serves service %q", u.service)
	}
	var errs []error
	for _, a := range cands {
		res, err := u.transport(a).RoundTrip(req)
		var de dialError
		if err == nil || !errors.As(err, &de) {
			return res, err
		}
		errs = append(errs, fmt.Errorf("agent %s: %w", a.name, err))
	}
	return nil, fmt.Errorf("reaching service %q: %w", u.service, errors.Join(errs...))
}

// transport returns the HTTP/2 transport whose one connection goes to a.
func (u *grpcUpstream) transport(a *agentConn) *http2.Transport {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.ts[a]; ok {
		return t
	}
	h := tunnel.Header{Kind: tunnel.KindData, Service: u.service, Identity: u.s.id.String(), Source: "gateway"}
	t := &http2.Transport{
		AllowHTTP:          true, // h2c inside the tunnel stream
		DisableCompression: true,
		ReadIdleTimeout:    30 * time.Second,
		PingTimeout:        10 * time.Second,
		DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			st, err := u.s.openOn(ctx, a, h)
			if err != nil {
				u.s.log.Warn("agent could not serve stream", "agent", a.name, "service", u.service, "err", err)
				return nil, dialError{err}
			}
			return st, nil
		},
	}
	if u.ts == nil {
		u.ts = map[*agentConn]*http2.Transport{}
	}
	u.ts[a] = t
	go func() {
		<-a.session.Done()
		u.mu.Lock()
		delete(u.ts, a)
		u.mu.Unlock()
		t.CloseIdleConnections()
	}()
	return t
}

// CloseIdleConnections closes the connections that carry no call.
func (u *grpcUpstream) CloseIdleConnections() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.ts {
		t.CloseIdleConnections()
	}
}
