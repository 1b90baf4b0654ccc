package assertion

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Leeway is the clock skew Verify tolerates between gateway and upstream.
const Leeway = 30 * time.Second

// Errors returned (wrapped) by Verify for a token it refuses.
var (
	ErrExpired = errors.New("assertion expired")
	ErrInvalid = errors.New("invalid assertion")
)

// ParsedClaims are the claims of a verified assertion.
type ParsedClaims struct {
	Issuer    string    // iss: the gateway's SPIFFE ID
	Subject   string    // sub: the caller's SPIFFE ID
	Audience  string    // aud: the service, the audience Verify was given
	Groups    []string  // groups
	ID        string    // jti: names the token, not the request
	IssuedAt  time.Time // iat
	ExpiresAt time.Time // exp
	KeyID     string    // kid of the key that signed it
}

// Verifier checks assertions against a fixed JWKS. It is safe for
// concurrent use. An upstream that refreshes the JWKS makes a new one.
type Verifier struct {
	keys map[string]*ecdsa.PublicKey // by kid
}

// NewVerifier parses jwks (the body that Signer.Handler serves). It keeps
// the keys that can check an assertion, EC P-256 with a kid, alg ES256 or
// none and use sig or none, and fails when there is no such key.
func NewVerifier(jwks []byte) (*Verifier, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("parsing JWKS: %w", err)
	}
	v := &Verifier{keys: make(map[string]*ecdsa.PublicKey)}
	for _, m := range set.Keys {
		if m.KTY != jwkset.KtyEC || m.CRV != jwkset.CrvP256 || m.KID == "" ||
			(m.ALG != "" && m.ALG != jwkset.AlgES256) || (m.USE != "" && m.USE != jwkset.UseSig) {
			continue
		}
		j, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			return nil, fmt.Errorf("parsing JWKS key %q: %w", m.KID, err)
		}
		pub, ok := j.Key().(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("parsing JWKS key %q: got %T, want an ECDSA P-256 public key", m.KID, j.Key())
		}
		v.keys[m.KID] = pub
	}
	if len(v.keys) == 0 {
		return nil, errors.New("parsing JWKS: no EC P-256 signing key with a kid")
	}
	return v, nil
}

// Verify checks token against the keys in jwks and for audience at now;
// see Verifier.Verify. Parsing the JWKS costs more than checking a token:
// code that checks many tokens keeps a Verifier.
func Verify(token string, jwks []byte, audience string, now time.Time) (*ParsedClaims, error) {
	v, err := NewVerifier(jwks)
	if err != nil {
		return nil, fmt.Errorf("verifying assertion: %w", err)
	}
	return v.Verify(token, audience, now)
}

// Verify checks that token is an ES256 JWT signed by the key its kid names,
// that its aud is exactly audience, that it is valid at now (within Leeway),
// lives no longer than Lifetime, and carries iss, sub and jti. Errors wrap
// ErrExpired for an expired token that is otherwise good, ErrInvalid for
// every other refusal.
func (v *Verifier) Verify(token, audience string, now time.Time) (*ParsedClaims, error) {
	if audience == "" {
		return nil, fmt.Errorf("verifying assertion: %w: no audience to check against", ErrInvalid)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{alg}),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	)
	var wc wireClaims
	t, err := p.ParseWithClaims(token, &wc, v.keyfunc)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return nil, fmt.Errorf("verifying assertion: %w: %v", ErrExpired, err)
	}
	if err != nil {
		return nil, fmt.Errorf("verifying assertion: %w: %v", ErrInvalid, err)
	}
	if wc.IssuedAt == nil {
		return nil, fmt.Errorf("verifying assertion: %w: no iat", ErrInvalid)
	}
	if life := wc.ExpiresAt.Sub(wc.IssuedAt.Time); life > Lifetime || life <= 0 {
		return nil, fmt.Errorf("verifying assertion: %w: lifetime %s, want at most %s", ErrInvalid, life, Lifetime)
	}
	if len(wc.Audience) != 1 {
		return nil, fmt.Errorf("verifying assertion: %w: %d audiences, want 1", ErrInvalid, len(wc.Audience))
	}
	if wc.Issuer == "" || wc.Subject == "" || wc.ID == "" {
		return nil, fmt.Errorf("verifying assertion: %w: missing iss, sub or jti", ErrInvalid)
	}
	kid, _ := t.Header["kid"].(string)
	return &ParsedClaims{
		Issuer:    wc.Issuer,
		Subject:   wc.Subject,
		Audience:  wc.Audience[0],
		Groups:    wc.Groups,
		ID:        wc.ID,
		IssuedAt:  wc.IssuedAt.Time,
		ExpiresAt: wc.ExpiresAt.Time,
		KeyID:     kid,
	}, nil
}

func (v *Verifier) keyfunc(t *jwt.Token) (any, error) {
	kid, ok := t.Header["kid"].(string)
	if !ok || kid == "" {
		return nil, errors.New("token names no key (kid)")
	}
	pub, ok := v.keys[kid]
	if !ok {
		return nil, fmt.Errorf("no key %q in the JWKS", kid)
	}
	return pub, nil
}
