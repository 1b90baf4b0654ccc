package bearer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenLen is the longest token looked at; longer ones are refused
// before any parsing.
const MaxTokenLen = 16 << 10

// Authenticator turns bearer tokens into identities: API keys (tokens that
// start with APIKeyPrefix) through the KeyStore, everything else as a JWT
// of one of the configured OIDC issuers. It is safe for concurrent use.
type Authenticator struct {
	issuers map[string]*OIDCVerifier
	keys    apiKeys
}

// New validates c and returns an Authenticator. It does not wait for any
// identity provider: issuers' keys are fetched in the background (see
// NewOIDCVerifier), which ends when ctx is done or Close is called.
func New(ctx context.Context, c Config) (*Authenticator, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("configuring bearer authentication: %w", err)
	}
	a := &Authenticator{
		issuers: make(map[string]*OIDCVerifier, len(c.OIDC)),
		keys:    apiKeys{store: c.APIKeys, td: c.TrustDomain, now: time.Now},
	}
	for _, ic := range c.OIDC {
		v, err := NewOIDCVerifier(ctx, c.TrustDomain, ic, c.Options)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("configuring bearer authentication: %w", err)
		}
		a.issuers[ic.Issuer] = v
	}
	return a, nil
}

// Authenticate returns the identity token proves. Errors wrap
// ErrUnauthenticated and say why in words safe to log.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Identity, error) {
	switch {
	case token == "":
		return Identity{}, refusef("empty token")
	case len(token) > MaxTokenLen:
		return Identity{}, refusef("token longer than %d bytes", MaxTokenLen)
	case strings.HasPrefix(token, APIKeyPrefix):
		return a.keys.verify(ctx, token)
	}
	// Unverified, only to pick the issuer; that issuer's verifier then
	// checks everything, iss included.
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return Identity{}, refusef("neither an API key nor a well-formed JWT")
	}
	v, ok := a.issuers[claims.Issuer]
	if !ok {
		return Identity{}, refusef("token issuer %s is not a configured OIDC issuer", quote(claims.Issuer))
	}
	return v.Verify(ctx, token)
}

// WaitReady blocks until every issuer's keys have been fetched once, or ctx
// is done.
func (a *Authenticator) WaitReady(ctx context.Context) error {
	var errs []error
	for _, v := range a.issuers {
		if err := v.WaitReady(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops the background fetching of issuers' keys.
func (a *Authenticator) Close() {
	for _, v := range a.issuers {
		v.Close()
	}
}
