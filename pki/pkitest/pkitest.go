package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a root and an intermediate for one trust domain, held in memory.
type CA struct {
	TD           spiffeid.TrustDomain
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	interKey     crypto.Signer
}

// NewCA makes a root and an intermediate for td. It fails the test on error.
func NewCA(t testing.TB, td spiffeid.TrustDomain) *CA {
	t.Helper()
	rootKey := mustKey(t)
	tdURI, _ := url.Parse(td.IDString())
	root := sign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "pkitest root " + td.Name()},
		URIs:                  []*url.URL{tdURI},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
	}, nil, rootKey, rootKey)
	interKey := mustKey(t)
	inter := sign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "pkitest intermediate " + td.Name()},
		URIs:                  []*url.URL{tdURI},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
	}, root, interKey, rootKey)
	return &CA{TD: td, Root: root, Intermediate: inter, interKey: interKey}
}

// Bundle returns the CA's trust roots as a go-spiffe bundle.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.TD, []*x509.Certificate{c.Root})
}

// Roots returns the CA's root certificate in a slice.
func (c *CA) Roots() []*x509.Certificate { return []*x509.Certificate{c.Root} }

// Pool returns the CA's root in a certificate pool.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// Option shapes an SVID made by CA.SVID.
type Option func(*x509.Certificate)

// Valid sets the validity window.
func Valid(notBefore, notAfter time.Time) Option {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// Expired makes a certificate that expired an hour ago.
func Expired() Option {
	return Valid(time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
}

// Groups sets the groups (Subject OU).
func Groups(groups ...string) Option {
	return func(c *x509.Certificate) { c.Subject.OrganizationalUnit = groups }
}

// DNSNames adds DNS SANs, as the gateway's certificate carries.
func DNSNames(names ...string) Option {
	return func(c *x509.Certificate) { c.DNSNames = names }
}

// SVID issues an X.509-SVID for id (any trust domain: the CA signs what it is
// told), valid for an hour unless an option says otherwise.
func (c *CA) SVID(t testing.TB, id spiffeid.ID, opts ...Option) *x509svid.SVID {
	t.Helper()
	key := mustKey(t)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.Path()},
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore:   time.Now().Add(-time.Minute),
		NotAfter:    time.Now().Add(time.Hour),
	}
	for _, o := range opts {
		o(tmpl)
	}
	leaf := sign(t, tmpl, c.Intermediate, key, c.interKey)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, c.Intermediate}, PrivateKey: key}
}

// TLSCertificate turns an SVID into a tls.Certificate.
func TLSCertificate(s *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, cert := range s.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	return k
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("making serial: %v", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("creating certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing certificate: %v", err)
	}
	return cert
}

// FromIssuer wraps an existing root, intermediate and intermediate key (a
// real CA's, read from its files) so a test can mint SVIDs that the real CA
// would refuse to issue, such as expired ones.
func FromIssuer(td spiffeid.TrustDomain, root, intermediate *x509.Certificate, key crypto.Signer) *CA {
	return &CA{TD: td, Root: root, Intermediate: intermediate, interKey: key}
}
