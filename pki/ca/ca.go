package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/x509util"

	"github.com/postern/postern/pki"
)

// File names inside a CA directory.
const (
	RootFile            = "root.pem"
	RootKeyFile         = "root_key.pem"
	IntermediateFile    = "intermediate.pem"
	IntermediateKeyFile = "intermediate_key.pem"
)

const (
	rootValidity         = 10 * 365 * 24 * time.Hour
	intermediateValidity = 365 * 24 * time.Hour
	// renewIntermediateBefore is how long before its expiry the intermediate
	// is replaced.
	renewIntermediateBefore = 30 * 24 * time.Hour
)

// Backdate moves every NotBefore into the past to absorb clock skew between
// the CA and the peers that verify its certificates. It is short so that the
// half-life of a one-minute SVID stays close to thirty seconds; a leaf's TTL
// is its NotAfter − NotBefore − Backdate.
const Backdate = 10 * time.Second

// caTemplate is the x509util template of the root and the intermediate.
const caTemplate = `{
	"subject": {{ toJson .Subject }},
	"uris": [{{ toJson .trustDomainID }}],
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": {{ .maxPathLen }}}
}`

// leafTemplate is the x509util template of an X.509-SVID.
const leafTemplate = `{
	"subject": {{ toJson .Subject }},
	"uris": [{{ toJson .spiffeID }}],
{{- if .dnsNames }}
	"dnsNames": {{ toJson .dnsNames }},
{{- end }}
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["serverAuth", "clientAuth"],
	"basicConstraints": {"isCA": false}
}`

// CA is an embedded certificate authority for one trust domain. It is safe for
// concurrent use.
type CA struct {
	td      spiffeid.TrustDomain
	dir     string // "" when the CA lives in memory only
	now     func() time.Time
	root    *x509.Certificate
	rootKey crypto.Signer

	mu       sync.Mutex
	inter    *x509.Certificate
	interKey crypto.Signer
}

var _ pki.Issuer = (*CA)(nil)

// New returns a CA for td that lives in memory only.
func New(td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("creating CA: empty trust domain")
	}
	c := &CA{td: td, now: time.Now}
	if err := c.createRoot(); err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	if err := c.renewIntermediate(c.now()); err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	return c, nil
}

// LoadOrCreate returns the CA for td kept in dir. The first call creates the
// root and intermediate and writes them; later calls load them, re-issuing the
// intermediate when fewer than 30 days of it remain. A directory whose root
// belongs to another trust domain is refused.
func LoadOrCreate(dir string, td spiffeid.TrustDomain) (*CA, error) {
	return loadOrCreate(dir, td, time.Now)
}

func loadOrCreate(dir string, td spiffeid.TrustDomain, now func() time.Time) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("loading CA: empty trust domain")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	c := &CA{td: td, dir: dir, now: now}

	root, rootKey, err := readPair(dir, RootFile, RootKeyFile)
	fresh := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A missing root certificate means no bundle was ever handed out, so
		// a fresh root (overwriting any stray key or intermediate) breaks no
		// one.
		if err := c.createRoot(); err != nil {
			return nil, fmt.Errorf("loading CA: %w", err)
		}
		fresh = true
	case err != nil:
		return nil, fmt.Errorf("loading CA in %s: %w", dir, err)
	default:
		if err := checkCA(root, td); err != nil {
			return nil, fmt.Errorf("loading CA in %s: root: %w", dir, err)
		}
		if err := root.CheckSignatureFrom(root); err != nil {
			return nil, fmt.Errorf("loading CA in %s: root is not self-signed: %w", dir, err)
		}
		if !now().Before(root.NotAfter) {
			return nil, fmt.Errorf("loading CA in %s: root expired at %s; move the directory away to create a new CA", dir, root.NotAfter.Format(time.RFC3339))
		}
		c.root, c.rootKey = root, rootKey
	}

	inter, interKey, err := readPair(dir, IntermediateFile, IntermediateKeyFile)
	switch {
	case fresh, errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("loading CA in %s: %w", dir, err)
	default:
		if err := checkCA(inter, td); err != nil {
			return nil, fmt.Errorf("loading CA in %s: intermediate: %w", dir, err)
		}
		if err := inter.CheckSignatureFrom(c.root); err != nil {
			return nil, fmt.Errorf("loading CA in %s: intermediate is not signed by the root: %w", dir, err)
		}
		c.inter, c.interKey = inter, interKey
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, _, err := c.signer(now()); err != nil {
		return nil, fmt.Errorf("loading CA in %s: %w", dir, err)
	}
	return c, nil
}

// TrustDomain returns the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Roots returns the CA's trust roots (its root certificate).
func (c *CA) Roots() []*x509.Certificate { return []*x509.Certificate{c.root} }

// Bundle returns the X.509 bundle of the CA's trust domain.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, c.Roots())
}

// Intermediate returns the intermediate certificate that currently signs
// leaves.
func (c *CA) Intermediate() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inter
}

// Issue signs an X.509-SVID for r.ID and r.PublicKey. The returned SVID holds
// the leaf and the intermediate, and no private key.
func (c *CA) Issue(ctx context.Context, r pki.IssueRequest) (*x509svid.SVID, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("issuing SVID: %w", err)
	}
	if r.ID.IsZero() {
		return nil, errors.New("issuing SVID: empty SPIFFE ID")
	}
	if r.ID.TrustDomain() != c.td {
		return nil, fmt.Errorf("issuing SVID for %s: trust domain %q is not this CA's %q", r.ID, r.ID.TrustDomain(), c.td)
	}
	kind := pki.Kind(r.ID)
	if kind == "" {
		return nil, fmt.Errorf("issuing SVID for %s: path must be /gateway/, /agent/, /user/ or /workload/ then a name", r.ID)
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = pki.DefaultTTL(r.ID)
	}
	if ttl < pki.MinTTL {
		return nil, fmt.Errorf("issuing SVID for %s: TTL %s is shorter than %s", r.ID, r.TTL, pki.MinTTL)
	}
	if err := pki.CheckPublicKey(r.PublicKey); err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: %w", r.ID, err)
	}
	for _, g := range r.Groups {
		if g == "" {
			return nil, fmt.Errorf("issuing SVID for %s: empty group name", r.ID)
		}
	}
	if len(r.DNSNames) > 0 && kind != pki.KindGateway {
		return nil, fmt.Errorf("issuing SVID for %s: DNS names are only for gateway certificates", r.ID)
	}
	for _, n := range r.DNSNames {
		if n == "" {
			return nil, fmt.Errorf("issuing SVID for %s: empty DNS name", r.ID)
		}
	}

	now := c.now()
	c.mu.Lock()
	inter, interKey, err := c.signer(now)
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: %w", r.ID, err)
	}

	path := r.ID.Path()
	data := x509util.NewTemplateData()
	data.SetSubject(x509util.Subject{
		CommonName:         path[strings.LastIndex(path, "/")+1:],
		OrganizationalUnit: r.Groups,
	})
	data.Set("spiffeID", r.ID.String())
	data.Set("dnsNames", r.DNSNames)
	notAfter := now.Add(ttl)
	if notAfter.After(inter.NotAfter) {
		notAfter = inter.NotAfter
	}
	leaf, err := sign(leafTemplate, data, r.PublicKey, now.Add(-Backdate), notAfter, inter, interKey)
	if err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: %w", r.ID, err)
	}
	if got, err := x509svid.IDFromCert(leaf); err != nil || got != r.ID {
		return nil, fmt.Errorf("issuing SVID for %s: signed certificate names %s (%v)", r.ID, got, err)
	}
	return &x509svid.SVID{ID: r.ID, Certificates: []*x509.Certificate{leaf, inter}}, nil
}

// signer returns the intermediate and its key, replacing the intermediate
// first when it is missing or close to expiry. c.mu must be held.
func (c *CA) signer(now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if c.inter == nil || needsRenewal(c.inter, c.root, now) {
		if err := c.renewIntermediate(now); err != nil {
			return nil, nil, err
		}
	}
	return c.inter, c.interKey, nil
}

// needsRenewal reports whether the intermediate should be replaced at now:
// it has expired, or fewer than 30 days remain and a new one (capped at the
// root's expiry) would last longer.
func needsRenewal(inter, root *x509.Certificate, now time.Time) bool {
	if !now.Before(inter.NotAfter) {
		return true
	}
	return inter.NotAfter.Sub(now) < renewIntermediateBefore && root.NotAfter.After(inter.NotAfter)
}

func (c *CA) createRoot() error {
	key, err := pki.GenerateKey()
	if err != nil {
		return fmt.Errorf("creating root: %w", err)
	}
	now := c.now()
	data := caData(c.td, "Postern root CA", 1)
	tmpl, err := render(caTemplate, data, key.Public(), now.Add(-Backdate), now.Add(rootValidity))
	if err != nil {
		return fmt.Errorf("creating root: %w", err)
	}
	root, err := x509util.CreateCertificate(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("creating root: %w", err)
	}
	if err := c.persist(RootFile, RootKeyFile, root, key); err != nil {
		return fmt.Errorf("creating root: %w", err)
	}
	c.root, c.rootKey = root, key
	return nil
}

// renewIntermediate replaces the intermediate. c.mu must be held (or c not
// yet shared).
func (c *CA) renewIntermediate(now time.Time) error {
	if !now.Before(c.root.NotAfter) {
		return fmt.Errorf("issuing intermediate: root expired at %s", c.root.NotAfter.Format(time.RFC3339))
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return fmt.Errorf("issuing intermediate: %w", err)
	}
	notAfter := now.Add(intermediateValidity)
	if notAfter.After(c.root.NotAfter) {
		notAfter = c.root.NotAfter
	}
	data := caData(c.td, "Postern intermediate CA", 0)
	inter, err := sign(caTemplate, data, key.Public(), now.Add(-Backdate), notAfter, c.root, c.rootKey)
	if err != nil {
		return fmt.Errorf("issuing intermediate: %w", err)
	}
	if err := c.persist(IntermediateFile, IntermediateKeyFile, inter, key); err != nil {
		return fmt.Errorf("issuing intermediate: %w", err)
	}
	c.inter, c.interKey = inter, key
	return nil
}

// persist writes a CA certificate and its key (key first, mode 0600) when
// the CA has a directory.
func (c *CA) persist(certFile, keyFile string, cert *x509.Certificate, key crypto.Signer) error {
	if c.dir == "" {
		return nil
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(c.dir, keyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(c.dir, certFile), pki.EncodeCerts([]*x509.Certificate{cert}), 0o644)
}

func caData(td spiffeid.TrustDomain, cn string, maxPathLen int) x509util.TemplateData {
	data := x509util.NewTemplateData()
	data.SetSubject(x509util.Subject{CommonName: cn, Organization: []string{td.Name()}})
	data.Set("trustDomainID", td.IDString())
	data.Set("maxPathLen", maxPathLen)
	return data
}

// render renders an x509util template for pub into an unsigned certificate
// with the given validity window.
func render(text string, data x509util.TemplateData, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	in := &x509.Certificate{PublicKey: pub, PublicKeyAlgorithm: x509.ECDSA}
	cert, err := x509util.NewCertificateFromX509(in, x509util.WithTemplate(text, data))
	if err != nil {
		return nil, fmt.Errorf("rendering certificate template: %w", err)
	}
	tmpl := cert.GetCertificate()
	tmpl.NotBefore = notBefore
	tmpl.NotAfter = notAfter
	return tmpl, nil
}

// sign renders a template and signs it with the issuer's key.
func sign(text string, data x509util.TemplateData, pub crypto.PublicKey, notBefore, notAfter time.Time, issuer *x509.Certificate, issuerKey crypto.Signer) (*x509.Certificate, error) {
	tmpl, err := render(text, data, pub, notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	cert, err := x509util.CreateCertificate(tmpl, issuer, pub, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	return cert, nil
}

// readPair reads a certificate and its key from dir and checks that they
// belong together. The error wraps fs.ErrNotExist when the certificate is
// absent.
func readPair(dir, certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("reading %s: %s exists without its key", keyFile, certFile)
		}
		return nil, nil, fmt.Errorf("reading %s: %w", keyFile, err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", certFile, err)
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("reading %s: got %d certificates, want 1", certFile, len(certs))
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", keyFile, err)
	}
	pub, ok := certs[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, nil, fmt.Errorf("reading %s: key does not match %s", keyFile, certFile)
	}
	return certs[0], key, nil
}

// checkCA checks that cert is a CA certificate for td.
func checkCA(cert *x509.Certificate, td spiffeid.TrustDomain) error {
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("not a CA certificate")
	}
	if len(cert.URIs) != 1 {
		return fmt.Errorf("got %d URI SANs, want 1 (spiffe://%s)", len(cert.URIs), td)
	}
	if got := cert.URIs[0].String(); got != td.IDString() {
		return fmt.Errorf("belongs to %s, not %s", got, td.IDString())
	}
	return nil
}
