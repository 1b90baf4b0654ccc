package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/enroll"
	"github.com/postern/postern/pki/jointoken"
)

// enroll trades the join token and a CSR for an SVID. The agent has no trust
// roots yet: it fetches the gateway's bundle, accepts it only when its root
// matches the fingerprint carried in the token, and then talks to the
// gateway verified against that bundle.
func (a *Agent) enroll(ctx context.Context) (*x509svid.SVID, []*x509.Certificate, error) {
	claims, err := jointoken.Inspect(a.cfg.Token)
	if err != nil {
		return nil, nil, fmt.Errorf("reading join token: %w", err)
	}
	if claims.Name != a.cfg.Name {
		return nil, nil, fmt.Errorf("reading join token: it is for agent %q, not %q", claims.Name, a.cfg.Name)
	}
	td, err := spiffeid.TrustDomainFromString(claims.TrustDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("reading join token trust domain: %w", err)
	}
	roots, err := a.fetchBundle(ctx, claims.Fingerprint)
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return nil, nil, fmt.Errorf("making CSR: %w", err)
	}
	pool := x509bundleFrom(td, roots)
	conf := tlsconfig.TLSClientConfig(pool, tlsconfig.AdaptMatcher(matchGateway(td)))
	resp, err := a.post(ctx, conf, enroll.PathEnroll, enroll.EnrollRequest{Token: a.cfg.Token, CSR: csr})
	if err != nil {
		return nil, nil, fmt.Errorf("enrolling with %s: %w", a.cfg.Gateway, err)
	}
	svid, err := svidFrom(resp, key)
	if err != nil {
		return nil, nil, fmt.Errorf("enrolling: %w", err)
	}
	return svid, roots, nil
}

// renew is the rotate.Renewer: a CSR sent over mTLS with the current SVID.
func (a *Agent) renew(ctx context.Context, key crypto.Signer, csr []byte) (*x509svid.SVID, error) {
	conf := tlsconfig.MTLSClientConfig(a.source, a.bundle, tlsconfig.AdaptMatcher(matchGateway(a.id.TrustDomain())))
	resp, err := a.post(ctx, conf, enroll.PathRenew, enroll.RenewRequest{CSR: csr})
	if err != nil {
		return nil, fmt.Errorf("renewing SVID: %w", err)
	}
	return svidFrom(resp, key)
}

func (a *Agent) fetchBundle(ctx context.Context, fingerprint string) ([]*x509.Certificate, error) {
	// Nothing is trusted on this connection: what it returns is checked
	// against the fingerprint from the (gateway-signed) token.
	conf := &tls.Config{InsecureSkipVerify: true} // #nosec G402 -- pinned by fingerprint below
	body, err := a.do(ctx, conf, http.MethodGet, enroll.PathBundle, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching gateway bundle: %w", err)
	}
	roots, err := pki.ParseCerts(body)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("fetching gateway bundle: no certificates in answer")
	}
	if got := jointoken.Fingerprint(roots[0]); got != fingerprint {
		return nil, fmt.Errorf("checking gateway CA: its fingerprint %s is not the one in the join token (%s)", got, fingerprint)
	}
	return roots, nil
}

func (a *Agent) post(ctx context.Context, conf *tls.Config, path string, body any) (*enroll.Response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	out, err := a.do(ctx, conf, http.MethodPost, path, data)
	if err != nil {
		return nil, err
	}
	var resp enroll.Response
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	return &resp, nil
}

func (a *Agent) do(ctx context.Context, conf *tls.Config, method, path string, body []byte) ([]byte, error) {
	conf = conf.Clone()
	conf.NextProtos = []string{enroll.ALPN, "http/1.1"}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "https://"+a.cfg.Gateway+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e enroll.Response
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("gateway refused: %s", e.Error)
		}
		return nil, fmt.Errorf("gateway answered %s", resp.Status)
	}
	return out, nil
}

func svidFrom(resp *enroll.Response, key crypto.Signer) (*x509svid.SVID, error) {
	certs, err := pki.ParseCerts([]byte(resp.SVID))
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("reading issued SVID: no certificate")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, fmt.Errorf("reading issued SVID: %w", err)
	}
	return pki.WithKey(&x509svid.SVID{ID: id, Certificates: certs}, key), nil
}

// matchGateway accepts only spiffe://TD/gateway/*.
func matchGateway(td spiffeid.TrustDomain) spiffeid.Matcher {
	return func(id spiffeid.ID) error {
		if id.TrustDomain() != td || pki.Kind(id) != "gateway" {
			return fmt.Errorf("peer %s is not a gateway of trust domain %q", id, td.Name())
		}
		return nil
	}
}

func x509bundleFrom(td spiffeid.TrustDomain, roots []*x509.Certificate) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, roots)
}
