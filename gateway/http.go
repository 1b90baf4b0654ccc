package gateway

import (
	"context"
	"crypto/tls"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/gateway/assertion"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/protocols"
	phttp "github.com/postern/postern/protocols/http"
)

// serveHTTP serves one client connection to an HTTP or gRPC service: every
// request is authenticated (the connection's SVID, or a bearer token),
// decided and recorded on its own, so the connection itself is not decided.
func (s *Server) serveHTTP(ctx context.Context, conn *tls.Conn, source, service, proto string) {
	start := time.Now()
	sid := newSessionID()
	ctx, done := s.track(ctx, sid)
	defer done()
	begin := &protocols.SessionStart{Source: source, Service: service, Protocol: proto}
	peer := phttp.Caller{}
	if certs := conn.ConnectionState().PeerCertificates; len(certs) > 0 {
		id, err := x509svid.IDFromCert(certs[0])
		if err != nil { // VerifyPeerCertificate already checked; keep the guard.
			s.refuse(ctx, conn, source, service, "bad client certificate", err.Error())
			return
		}
		peer = phttp.Caller{ID: id, Groups: pki.Groups(certs[0]), Auth: protocols.AuthSVID}
		begin.Identity, begin.Groups = id.String(), peer.Groups
	}
	s.recorder.Record(protocols.Event{Session: sid, Time: start, Type: protocols.SessionStarted, Data: begin})
	s.metrics.active.Inc()
	calls := s.metrics.httpRequests
	if proto == protocols.GRPC {
		calls = s.metrics.grpcCalls
	}
	res := phttp.Serve(ctx, conn, phttp.Config{
		Session: sid, Service: service, GRPC: proto == protocols.GRPC, Source: source, Peer: peer,
		Authenticate: s.authenticateBearer,
		Authorizer:   s.policy,
		Recorder:     s.recorder,
		Transport:    s.upstream(service, proto),
		Assert:       s.assertFor,
		Observe: func(verdict string, status int) {
			calls.WithLabelValues(verdict, strconv.Itoa(status)).Inc()
		},
		Logger: s.log,
	})
	s.metrics.active.Dec()
	s.metrics.bytes.WithLabelValues(protocols.ClientToService).Add(float64(res.BytesIn))
	s.metrics.bytes.WithLabelValues(protocols.ServiceToClient).Add(float64(res.BytesOut))
	outcome := protocols.OutcomeOK
	if res.Requests > 0 && res.Denied == res.Requests {
		outcome = protocols.OutcomeDenied
	}
	s.endSession(sid, start, outcome, "", res.BytesIn, res.BytesOut)
	s.log.InfoContext(ctx, "session ended", "session", sid, "identity", begin.Identity, "service", service,
		"protocol", proto, "requests", res.Requests, "denied", res.Denied,
		"bytes_in", res.BytesIn, "bytes_out", res.BytesOut, "duration", time.Since(start).String())
}

// authenticateBearer checks a bearer token of an HTTP or gRPC request.
func (s *Server) authenticateBearer(ctx context.Context, token string) (phttp.Caller, error) {
	who, err := s.bearer.Authenticate(ctx, token)
	if err != nil {
		return phttp.Caller{}, err
	}
	return phttp.Caller{ID: who.ID, Groups: who.Groups, Auth: who.Method}, nil
}

// assertFor signs the Postern-Jwt-Assertion of a request of c to audience.
func (s *Server) assertFor(now time.Time, c phttp.Caller, audience string) (string, error) {
	return s.signer.Assert(now, assertion.Claims{Subject: c.ID.String(), Audience: audience, Groups: c.Groups})
}
