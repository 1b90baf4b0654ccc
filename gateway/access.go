package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres"
	"github.com/postern/postern/protocols/tcp"
	"github.com/postern/postern/protocols/tunnel"
)

// replyTimeout bounds how long an agent may take to dial its local service
// and answer a new stream.
const replyTimeout = 10 * time.Second

func newSessionID() string { return uuid.Must(uuid.NewV7()).String() }

// refuse records and logs a connection refused before an identity was
// established (no TLS, bad or missing certificate, timeout), then closes it.
func (s *Server) refuse(ctx context.Context, conn net.Conn, source, service, what, reason string) {
	conn.Close()
	s.metrics.refused.WithLabelValues(what).Inc()
	id := newSessionID()
	now := time.Now()
	s.recorder.Record(protocols.Event{Session: id, Time: now, Type: protocols.SessionStarted,
		Data: &protocols.SessionStart{Source: source, Service: service}})
	s.recorder.Record(protocols.Event{Session: id, Time: now, Type: protocols.AuthzDenied,
		Data: &protocols.AuthzDeny{Rule: "authentication", Reason: what + ": " + reason}})
	s.recorder.Record(protocols.Event{Session: id, Time: now, Type: protocols.SessionEnded,
		Data: &protocols.SessionEnd{Outcome: protocols.OutcomeDenied, Error: what}})
	s.log.WarnContext(ctx, "access refused",
		"session", id, "source", source, "service", service, "verdict", "deny", "rule", "authentication",
		"reason", what+": "+reason)
}

// track makes ctx of session sid cancellable by closeSession; the caller
// calls done when the session ends.
func (s *Server) track(ctx context.Context, sid string) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	s.live.Store(sid, cancel)
	return ctx, func() {
		s.live.Delete(sid)
		cancel()
	}
}

// closeSession ends a live session: the recorder calls it for a session
// whose events cannot be recorded (fail closed).
func (s *Server) closeSession(sid string, err error) {
	if cancel, ok := s.live.LoadAndDelete(sid); ok {
		s.log.Error("closing session: its events cannot be recorded", "session", sid, "err", err)
		cancel.(context.CancelFunc)()
	}
}

// endSession records the end of an authenticated session and counts it.
func (s *Server) endSession(sid string, start time.Time, outcome, errText string, in, out int64) {
	s.recorder.Record(protocols.Event{Session: sid, Time: time.Now(), Type: protocols.SessionEnded,
		Data: &protocols.SessionEnd{Outcome: outcome, BytesIn: in, BytesOut: out,
			Duration: time.Since(start).Milliseconds(), Error: errText}})
	s.metrics.sessions.WithLabelValues(outcome).Inc()
}

// serveClient authorizes one client connection, picks an agent for the
// service and relays the connection through a tunnel stream.
func (s *Server) serveClient(ctx context.Context, conn *tls.Conn, source, service string) {
	defer conn.Close()
	proto, _ := s.reg.protocol(service)
	if proto == protocols.HTTP || proto == protocols.GRPC {
		s.serveHTTP(ctx, conn, source, service, proto)
		return
	}
	start := time.Now()
	state := conn.ConnectionState()
	leaf := state.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil { // VerifyPeerCertificate already checked; keep the guard.
		s.refuse(ctx, conn, source, service, "bad client certificate", err.Error())
		return
	}
	groups := pki.Groups(leaf)
	sid := newSessionID()
	ctx, done := s.track(ctx, sid)
	defer done()
	if proto == "" {
		proto = protocols.TCP
	}
	begin := &protocols.SessionStart{Identity: id.String(), Groups: groups, Source: source, Service: service, Protocol: proto}
	end := func(outcome, errText string, c tcp.Counts) { s.endSession(sid, start, outcome, errText, c.In, c.Out) }

	d := s.policy.Authorize(ctx, protocols.Request{Identity: id, Groups: groups, Service: service, Protocol: proto})
	verdict := "allow"
	if !d.Allow {
		verdict = "deny"
	}
	s.log.InfoContext(ctx, "authorization", "session", sid, "identity", id.String(),
		"source", source, "service", service, "rule", d.Rule, "verdict", verdict, "reason", d.Reason)
	if !d.Allow {
		if proto == protocols.Postgres {
			// A Postgres client is told why, as SPEC §7 says, not just cut off.
			postgres.Refuse(conn, s.cfg.HandshakeTimeout, fmt.Sprintf("Postern: rule %q refuses this session: %s", d.Rule, d.Reason))
		}
		s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
		s.recorder.Record(protocols.Event{Session: sid, Time: time.Now(), Type: protocols.AuthzDenied,
			Data: &protocols.AuthzDeny{Rule: d.Rule, Reason: d.Reason}})
		end(protocols.OutcomeDenied, "denied by policy", tcp.Counts{})
		return
	}

	if proto == protocols.Postgres {
		s.servePostgres(ctx, conn, sid, start, begin, id, groups)
		return
	}
	stream, agent, err := s.openService(ctx, service, tunnel.Header{Kind: tunnel.KindData, Service: service,
		Session: sid, Identity: id.String(), Groups: groups, Source: source})
	if err != nil {
		s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
		end(protocols.OutcomeError, err.Error(), tcp.Counts{})
		s.log.WarnContext(ctx, "session failed", "session", sid, "identity", id.String(),
			"service", service, "err", err.Error())
		return
	}
	begin.Agent, begin.Transport = agent.name, agent.session.Transport()
	s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
	s.metrics.active.Inc()
	relay := &tcp.Relay{Session: sid, Recorder: s.recorder}
	counts, rerr := relay.Run(ctx, conn, stream)
	s.metrics.active.Dec()
	s.metrics.bytes.WithLabelValues(protocols.ClientToService).Add(float64(counts.In))
	s.metrics.bytes.WithLabelValues(protocols.ServiceToClient).Add(float64(counts.Out))
	outcome, errText := protocols.OutcomeOK, ""
	if rerr != nil && !errors.Is(rerr, context.Canceled) {
		errText = rerr.Error()
	}
	end(outcome, errText, counts)
	s.log.InfoContext(ctx, "session ended", "session", sid, "identity", id.String(),
		"service", service, "agent", agent.name, "transport", agent.session.Transport(),
		"bytes_in", counts.In, "bytes_out", counts.Out, "duration", time.Since(start).String())
}

// openService opens a stream to a healthy agent that serves service, trying
// the next agent when one fails to open a stream or to reach its service.
func (s *Server) openService(ctx context.Context, service string, h tunnel.Header) (net.Conn, *agentConn, error) {
	cands := s.reg.candidates(service)
	if len(cands) == 0 {
		return nil, nil, fmt.Errorf("no agent serves service %q", service)
	}
	var errs []error
	for _, a := range cands {
		st, err := s.openOn(ctx, a, h)
		if err == nil {
			return st, a, nil
		}
		s.log.Warn("agent could not serve stream", "agent", a.name, "service", service, "err", err)
		errs = append(errs, fmt.Errorf("agent %s: %w", a.name, err))
	}
	return nil, nil, fmt.Errorf("reaching service %q: %w", service, errors.Join(errs...))
}

func (s *Server) openOn(ctx context.Context, a *agentConn, h tunnel.Header) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, replyTimeout)
	defer cancel()
	st, err := a.session.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening stream: %w", err)
	}
	st.SetDeadline(time.Now().Add(replyTimeout))
	if err := tunnel.WriteHeader(st, h); err != nil {
		st.Close()
		return nil, fmt.Errorf("writing stream header: %w", err)
	}
	r, err := tunnel.ReadReply(st)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("reading agent reply: %w", err)
	}
	if !r.OK {
		st.Close()
		return nil, errors.New(r.Error)
	}
	st.SetDeadline(time.Time{})
	return st, nil
}
