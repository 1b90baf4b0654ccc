package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Identity kinds, the first segment of a Postern SPIFFE ID's path.
const (
	KindGateway  = "gateway"
	KindAgent    = "agent"
	KindUser     = "user"
	KindWorkload = "workload"
)

// MinTTL is the shortest certificate lifetime an issuer accepts.
const MinTTL = time.Minute

// Default lifetimes per kind of identity.
const (
	AgentTTL    = time.Hour
	UserTTL     = 8 * time.Hour
	WorkloadTTL = time.Hour
	GatewayTTL  = time.Hour
)

// IssueRequest asks an Issuer for an X.509-SVID.
type IssueRequest struct {
	ID        spiffeid.ID
	Groups    []string         // written as Subject OU, one per group
	TTL       time.Duration    // 0 = DefaultTTL(ID)
	PublicKey crypto.PublicKey // the subject's public key (from a CSR or a generated key)
	DNSNames  []string         // only for gateway certificates
}

// Issuer signs X.509-SVIDs. The returned SVID has ID and Certificates (leaf
// then intermediates) set and PrivateKey nil: the issuer never sees the
// subject's private key.
type Issuer interface {
	Issue(ctx context.Context, r IssueRequest) (*x509svid.SVID, error)
}

// Kind returns the kind of a Postern identity ("agent", "user", "workload" or
// "gateway"), or "" when id's path is not /KIND/NAME... for one of those kinds.
func Kind(id spiffeid.ID) string {
	path := id.Path()
	if !strings.HasPrefix(path, "/") {
		return ""
	}
	kind, rest, ok := strings.Cut(path[1:], "/")
	if !ok || rest == "" {
		return ""
	}
	switch kind {
	case KindGateway, KindAgent, KindUser, KindWorkload:
		return kind
	}
	return ""
}

// DefaultTTL returns the default certificate lifetime for id: 8h for users,
// 1h for everything else.
func DefaultTTL(id spiffeid.ID) time.Duration {
	switch Kind(id) {
	case KindUser:
		return UserTTL
	case KindAgent:
		return AgentTTL
	case KindWorkload:
		return WorkloadTTL
	case KindGateway:
		return GatewayTTL
	}
	return time.Hour
}

// GenerateKey returns a new ECDSA P-256 private key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating P-256 key: %w", err)
	}
	return key, nil
}

// CheckPublicKey returns an error unless pub is an ECDSA P-256 public key.
func CheckPublicKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k == nil {
		return fmt.Errorf("checking public key: got %T, want ECDSA P-256", pub)
	}
	if k.Curve != elliptic.P256() || k.X == nil || k.Y == nil {
		return errors.New("checking public key: want an ECDSA key on curve P-256")
	}
	if _, err := k.ECDH(); err != nil { // rejects points not on the curve
		return fmt.Errorf("checking public key: %w", err)
	}
	return nil
}

// NewCSR returns a DER certificate signing request for key. It carries no
// subject data: the issuer decides the identity, the CSR only proves
// possession of the key.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return der, nil
}

// ParseCSR parses a DER certificate signing request, checks its signature and
// requires an ECDSA P-256 key. Anything in the CSR other than the key is
// ignored by Postern's issuers.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CSR: %w", err)
	}
	if err := CheckPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("parsing CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("checking CSR signature: %w", err)
	}
	return csr, nil
}

// Groups returns the groups carried by cert (its Subject OU values), in
// certificate order, which need not be the order they were issued in.
func Groups(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	return slices.Clone(cert.Subject.OrganizationalUnit)
}

// WithKey returns a copy of svid with PrivateKey set to key.
func WithKey(svid *x509svid.SVID, key crypto.Signer) *x509svid.SVID {
	out := *svid
	out.Certificates = slices.Clone(svid.Certificates)
	out.PrivateKey = key
	return &out
}

// TLSCertificate returns svid as a tls.Certificate (chain and key), for a
// tls.Config's GetCertificate or GetClientCertificate.
func TLSCertificate(svid *x509svid.SVID) (*tls.Certificate, error) {
	if svid == nil || len(svid.Certificates) == 0 {
		return nil, errors.New("building TLS certificate: SVID has no certificates")
	}
	if svid.PrivateKey == nil {
		return nil, errors.New("building TLS certificate: SVID has no private key")
	}
	chain := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		chain[i] = c.Raw
	}
	return &tls.Certificate{
		Certificate: chain,
		PrivateKey:  svid.PrivateKey,
		Leaf:        svid.Certificates[0],
	}, nil
}
