package jointoken

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/pki"
)

// DefaultTTL is the lifetime of a token minted with ttl 0.
const DefaultTTL = 15 * time.Minute

// Fixed claims of every join token.
const (
	Issuer   = "postern"
	Audience = "postern-join"
)

// Errors returned (wrapped) by Verify and Inspect.
var (
	ErrExpired = errors.New("join token expired")
	ErrInvalid = errors.New("invalid join token")
)

// Claims are the facts a join token carries.
type Claims struct {
	ID          string    // jti, random
	Name        string    // agent name (jwt "sub")
	TrustDomain string    // trust domain the agent joins
	Fingerprint string    // hex SHA-256 of the root CA certificate DER
	ExpiresAt   time.Time // exp
	IssuedAt    time.Time // iat
}

// wireClaims is the JWT payload.
type wireClaims struct {
	jwt.RegisteredClaims
	TrustDomain string `json:"td"`
	Fingerprint string `json:"fp"`
}

const alg = "ES256"

// Fingerprint returns the hex SHA-256 of cert's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// LoadOrCreateKey returns the ECDSA P-256 signing key kept at path (PKCS#8
// PEM), creating it with mode 0600 (and its directory with 0700) when absent.
func LoadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		key, err := pki.ParseKey(data)
		if err != nil {
			return nil, fmt.Errorf("loading join key %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loading join key: %w", err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("creating join key: %w", err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("creating join key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating join key: %w", err)
	}
	if err := pki.WriteFileAtomic(path, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("creating join key: %w", err)
	}
	return key, nil
}

// Mint returns a signed join token for the agent name in trustDomain, with
// the root CA fingerprint the agent should pin, valid for ttl (DefaultTTL
// when 0).
func Mint(key *ecdsa.PrivateKey, name, trustDomain, fingerprint string, ttl time.Duration) (string, Claims, error) {
	return mint(key, name, trustDomain, fingerprint, ttl, time.Now())
}

func mint(key *ecdsa.PrivateKey, name, trustDomain, fingerprint string, ttl time.Duration, now time.Time) (string, Claims, error) {
	if key == nil {
		return "", Claims{}, errors.New("minting join token: no key")
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 {
		return "", Claims{}, fmt.Errorf("minting join token: negative TTL %s", ttl)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, fmt.Errorf("minting join token: %w", err)
	}
	now = now.Truncate(time.Second) // JWT times have second precision
	c := Claims{
		ID:          hex.EncodeToString(id[:]),
		Name:        name,
		TrustDomain: trustDomain,
		Fingerprint: fingerprint,
		IssuedAt:    now,
		ExpiresAt:   now.Add(ttl),
	}
	if err := check(c); err != nil {
		return "", Claims{}, fmt.Errorf("minting join token: %w", err)
	}
	wc := wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   c.Name,
			Audience:  jwt.ClaimStrings{Audience},
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ID:        c.ID,
		},
		TrustDomain: c.TrustDomain,
		Fingerprint: c.Fingerprint,
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodES256, wc).SignedString(key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("minting join token: %w", err)
	}
	return token, c, nil
}

// Verify checks token's ES256 signature under pub and its claims, and returns
// them. Errors wrap ErrExpired or ErrInvalid.
func Verify(pub *ecdsa.PublicKey, token string) (Claims, error) {
	return verify(pub, token, time.Now)
}

func verify(pub *ecdsa.PublicKey, token string, now func() time.Time) (Claims, error) {
	if pub == nil {
		return Claims{}, fmt.Errorf("verifying join token: %w: no verification key", ErrInvalid)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{alg}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithAudience(Audience),
		jwt.WithIssuer(Issuer),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(now),
	)
	var wc wireClaims
	_, err := p.ParseWithClaims(token, &wc, func(*jwt.Token) (any, error) { return pub, nil })
	if errors.Is(err, jwt.ErrTokenExpired) {
		return Claims{}, fmt.Errorf("verifying join token: %w: %v", ErrExpired, err)
	}
	if err != nil {
		return Claims{}, fmt.Errorf("verifying join token: %w: %v", ErrInvalid, err)
	}
	c := fromWire(wc)
	if err := check(c); err != nil {
		return Claims{}, fmt.Errorf("verifying join token: %w: %v", ErrInvalid, err)
	}
	return c, nil
}

// Inspect parses token without checking its signature or expiry, so an agent
// can read the name and CA fingerprint before it trusts anything. It still
// requires a well-formed ES256 token with every claim present. Errors wrap
// ErrInvalid.
func Inspect(token string) (Claims, error) {
	p := jwt.NewParser(jwt.WithStrictDecoding())
	var wc wireClaims
	t, _, err := p.ParseUnverified(token, &wc)
	if err != nil {
		return Claims{}, fmt.Errorf("inspecting join token: %w: %v", ErrInvalid, err)
	}
	if t.Method.Alg() != alg {
		return Claims{}, fmt.Errorf("inspecting join token: %w: algorithm %q, want %s", ErrInvalid, t.Method.Alg(), alg)
	}
	if len(t.Signature) != 64 { // ES256: r and s, 32 bytes each
		return Claims{}, fmt.Errorf("inspecting join token: %w: signature of %d bytes, want 64", ErrInvalid, len(t.Signature))
	}
	if wc.Issuer != Issuer || len(wc.Audience) != 1 || wc.Audience[0] != Audience {
		return Claims{}, fmt.Errorf("inspecting join token: %w: not a Postern join token", ErrInvalid)
	}
	c := fromWire(wc)
	if err := check(c); err != nil {
		return Claims{}, fmt.Errorf("inspecting join token: %w: %v", ErrInvalid, err)
	}
	return c, nil
}

func fromWire(wc wireClaims) Claims {
	c := Claims{
		ID:          wc.ID,
		Name:        wc.Subject,
		TrustDomain: wc.TrustDomain,
		Fingerprint: wc.Fingerprint,
	}
	if wc.ExpiresAt != nil {
		c.ExpiresAt = wc.ExpiresAt.Time
	}
	if wc.IssuedAt != nil {
		c.IssuedAt = wc.IssuedAt.Time
	}
	return c
}

// check validates the claims every join token must carry.
func check(c Claims) error {
	if c.ID == "" {
		return errors.New("missing token ID (jti)")
	}
	if err := spiffeid.ValidatePathSegment(c.Name); err != nil {
		return fmt.Errorf("agent name %q: %w", c.Name, err)
	}
	if td, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil || td.Name() != c.TrustDomain {
		return fmt.Errorf("trust domain %q is not valid", c.TrustDomain)
	}
	if b, err := hex.DecodeString(c.Fingerprint); err != nil || len(b) != sha256.Size || strings.ToLower(c.Fingerprint) != c.Fingerprint {
		return fmt.Errorf("CA fingerprint %q is not a lowercase hex SHA-256", c.Fingerprint)
	}
	if c.ExpiresAt.IsZero() || c.IssuedAt.IsZero() {
		return errors.New("missing exp or iat")
	}
	return nil
}
