package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/gateway/assertion"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/ca"
	"github.com/postern/postern/pki/enroll"
	"github.com/postern/postern/pki/jointoken"
)

// maxAPIBody bounds API request bodies.
const maxAPIBody = 64 << 10

func (s *Server) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+enroll.PathBundle, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(pki.EncodeCerts(s.data.CA.Roots()))
	})
	mux.HandleFunc("POST "+enroll.PathEnroll, s.handleEnroll)
	mux.HandleFunc("POST "+enroll.PathRenew, s.handleRenew)
	// The keys upstreams verify Postern-Jwt-Assertion with (SPEC §8).
	mux.Handle("GET "+assertion.JWKSPath, s.signer.Handler())
	return mux
}

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req enroll.EnrollRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody)).Decode(&req); err != nil {
		s.apiFail(w, r, "enroll", http.StatusBadRequest, fmt.Errorf("reading request: %w", err))
		return
	}
	claims, err := jointoken.Verify(&s.data.TokenKey.PublicKey, req.Token)
	if err != nil {
		s.apiFail(w, r, "enroll", http.StatusUnauthorized, fmt.Errorf("checking join token: %w", err))
		return
	}
	if claims.TrustDomain != s.data.CA.TrustDomain().Name() {
		s.apiFail(w, r, "enroll", http.StatusUnauthorized, fmt.Errorf("checking join token: it is for trust domain %q", claims.TrustDomain))
		return
	}
	id, err := spiffeid.FromSegments(s.data.CA.TrustDomain(), "agent", claims.Name)
	if err != nil {
		s.apiFail(w, r, "enroll", http.StatusBadRequest, fmt.Errorf("making agent id: %w", err))
		return
	}
	csr, err := pki.ParseCSR(req.CSR)
	if err != nil {
		s.apiFail(w, r, "enroll", http.StatusBadRequest, err)
		return
	}
	if err := s.data.Store.UseToken(r.Context(), claims.ID, claims.Name, claims.ExpiresAt); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, store.ErrTokenUsed) {
			status = http.StatusUnauthorized
			err = fmt.Errorf("checking join token %s: it was already used", claims.ID)
		}
		s.apiFail(w, r, "enroll", status, err)
		return
	}
	svid, err := s.data.Issue(r.Context(), pki.IssueRequest{ID: id, TTL: s.cfg.AgentTTL, PublicKey: csr.PublicKey})
	if err != nil {
		s.apiFail(w, r, "enroll", http.StatusInternalServerError, err)
		return
	}
	s.log.Info("agent enrolled", "agent", claims.Name, "id", id.String(), "token", claims.ID,
		"not_after", svid.Certificates[0].NotAfter, "remote", r.RemoteAddr)
	s.apiIssued(w, "enroll", svid)
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		s.apiFail(w, r, "renew", http.StatusUnauthorized, errors.New("renewal needs the current SVID as client certificate"))
		return
	}
	leaf := r.TLS.VerifiedChains[0][0]
	id, err := x509svid.IDFromCert(leaf)
	if err == nil {
		err = s.matchKind("agent", "user", "workload")(id)
	}
	if err != nil {
		s.apiFail(w, r, "renew", http.StatusForbidden, err)
		return
	}
	var req enroll.RenewRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody)).Decode(&req); err != nil {
		s.apiFail(w, r, "renew", http.StatusBadRequest, fmt.Errorf("reading request: %w", err))
		return
	}
	csr, err := pki.ParseCSR(req.CSR)
	if err != nil {
		s.apiFail(w, r, "renew", http.StatusBadRequest, err)
		return
	}
	// The same identity, groups and lifetime as the certificate renewed.
	ttl := max(leaf.NotAfter.Sub(leaf.NotBefore)-ca.Backdate, pki.MinTTL)
	svid, err := s.data.Issue(r.Context(), pki.IssueRequest{ID: id, Groups: pki.Groups(leaf),
		TTL: ttl, PublicKey: csr.PublicKey})
	if err != nil {
		s.apiFail(w, r, "renew", http.StatusInternalServerError, err)
		return
	}
	s.log.Info("SVID renewed", "id", id.String(), "not_after", svid.Certificates[0].NotAfter, "remote", r.RemoteAddr)
	s.apiIssued(w, "renew", svid)
}

func (s *Server) apiIssued(w http.ResponseWriter, request string, svid *x509svid.SVID) {
	s.metrics.enrolled.WithLabelValues(request, "ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(enroll.Response{
		SVID:   string(pki.EncodeCerts(svid.Certificates)),
		Bundle: string(pki.EncodeCerts(s.data.CA.Roots())),
	})
}

func (s *Server) apiFail(w http.ResponseWriter, r *http.Request, request string, status int, err error) {
	s.metrics.enrolled.WithLabelValues(request, "refused").Inc()
	s.log.Warn(request+" refused", "remote", r.RemoteAddr, "status", status, "err", err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(enroll.Response{Error: err.Error()})
}

func (s *Server) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttpHandler(s.metrics))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.readiness(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// readiness is nil when the CA is loaded, the store answers and the
// listeners are up.
func (s *Server) readiness(ctx context.Context) error {
	if !s.ready.Load() {
		return errors.New("listeners not up")
	}
	if _, err := s.svid.GetX509SVID(); err != nil {
		return fmt.Errorf("gateway SVID: %w", err)
	}
	if err := s.data.Store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
