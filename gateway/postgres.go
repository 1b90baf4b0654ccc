package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres"
	"github.com/postern/postern/protocols/postgres/login"
	"github.com/postern/postern/protocols/tunnel"
)

// servePostgres runs a client session with a Postgres service after the
// connection-level decision allowed it: the handler in protocols/postgres
// decides database, role and statements and relays through an agent.
func (s *Server) servePostgres(ctx context.Context, conn *tls.Conn, sid string, start time.Time,
	begin *protocols.SessionStart, id spiffeid.ID, groups []string) {
	service := begin.Service
	started := false
	var agent *agentConn
	open := func(ctx context.Context, user, database string, params map[string]string) (*postgres.Upstream, error) {
		h := tunnel.Header{Kind: tunnel.KindData, Service: service, Session: sid, Identity: id.String(),
			Groups: groups, Source: begin.Source, Params: map[string]string{login.ParamUser: user, login.ParamDatabase: database}}
		for k, v := range params {
			h.Params[login.ParamPrefix+k] = v
		}
		st, a, err := s.openService(ctx, service, h)
		if err != nil {
			return nil, err
		}
		agent = a
		begin.Agent, begin.Transport = a.name, a.session.Transport()
		begin.Database, begin.User = database, user
		s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
		started = true
		s.metrics.active.Inc()
		return &postgres.Upstream{Conn: st, Agent: a.name, Cancel: func(ctx context.Context, real postgres.CancelKey) error {
			return s.cancelOn(ctx, a, service, sid, real)
		}}, nil
	}
	capture := 0
	if n, ok := s.reg.captureRows(service); ok {
		capture = n
	}
	res := postgres.Serve(ctx, conn, postgres.Config{Session: sid, Identity: id, Groups: groups, Service: service,
		Authorizer: s.policy, Recorder: s.recorder, Classifier: s.pgClass, Keys: s.pgKeys, Open: open,
		CaptureRows: capture, StartupTimeout: s.cfg.HandshakeTimeout, Logger: s.log,
		Decided: func(verdict, class string) { s.metrics.pgQuery.WithLabelValues(verdict, class).Inc() }})
	if started {
		s.metrics.active.Dec()
	}
	if res.Cancel {
		s.metrics.pgCancel.WithLabelValues(strconv.FormatBool(res.CancelKnown)).Inc()
		s.log.InfoContext(ctx, "postgres cancel request", "identity", id.String(), "service", service,
			"source", begin.Source, "known_key", res.CancelKnown, "err", errString(res.Err))
		return
	}
	begin.Database, begin.User = res.Database, res.User
	end := func(outcome, errText string) { s.endSession(sid, start, outcome, errText, res.In, res.Out) }
	switch {
	case res.Refused != nil:
		s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
		s.recorder.Record(protocols.Event{Session: sid, Time: time.Now(), Type: protocols.AuthzDenied,
			Data: &protocols.AuthzDeny{Rule: res.Refused.Rule, Reason: res.Refused.Reason}})
		end(protocols.OutcomeDenied, "denied by policy")
		s.log.InfoContext(ctx, "authorization", "session", sid, "identity", id.String(), "source", begin.Source,
			"service", service, "database", res.Database, "db_user", res.User, "rule", res.Refused.Rule,
			"verdict", "deny", "reason", res.Refused.Reason)
		return
	case !started:
		s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
		end(protocols.OutcomeError, errString(res.Err))
		s.log.WarnContext(ctx, "session failed", "session", sid, "identity", id.String(), "service", service, "err", errString(res.Err))
		return
	}
	s.metrics.bytes.WithLabelValues(protocols.ClientToService).Add(float64(res.In))
	s.metrics.bytes.WithLabelValues(protocols.ServiceToClient).Add(float64(res.Out))
	outcome := protocols.OutcomeOK
	var le *login.LoginError
	if errors.As(res.Err, &le) {
		outcome = protocols.OutcomeError
	}
	end(outcome, errString(res.Err))
	s.log.InfoContext(ctx, "session ended", "session", sid, "identity", id.String(), "service", service,
		"database", res.Database, "db_user", res.User, "agent", agent.name, "transport", agent.session.Transport(),
		"bytes_in", res.In, "bytes_out", res.Out, "duration", time.Since(start).String(), "err", errString(res.Err))
}

// cancelOn asks agent a to cancel the backend of a session it serves.
func (s *Server) cancelOn(ctx context.Context, a *agentConn, service, sid string, real postgres.CancelKey) error {
	st, err := s.openOn(ctx, a, tunnel.Header{Kind: tunnel.KindData, Service: service, Session: sid,
		Params: map[string]string{login.ParamCancel: login.CancelValue(real.PID, real.Secret)}})
	if err != nil {
		return err
	}
	return st.Close()
}

// cancelPostgres serves a plaintext CancelRequest, the first and only
// message of its connection. Nothing is ever answered, as in Postgres.
func (s *Server) cancelPostgres(ctx context.Context, raw net.Conn, br *bufio.Reader, source string) {
	defer raw.Close()
	st, err := postgres.ReadStartup(br)
	if err != nil || st.Cancel == nil {
		s.log.Warn("reading postgres cancel request", "source", source, "err", errString(err))
		return
	}
	cctx, cancel := context.WithTimeout(ctx, replyTimeout)
	defer cancel()
	known, err := s.pgKeys.Cancel(cctx, *st.Cancel)
	s.metrics.pgCancel.WithLabelValues(strconv.FormatBool(known)).Inc()
	s.log.Info("postgres cancel request", "source", source, "known_key", known, "err", errString(err))
}

func errString(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return ""
	}
	return err.Error()
}
