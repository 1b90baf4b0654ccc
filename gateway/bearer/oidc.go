package bearer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Leeway is the clock skew allowed on exp, nbf and iat.
const Leeway = 30 * time.Second

// maxGroups is the most groups a token may carry.
const maxGroups = 256

// OIDCVerifier verifies JWTs of one OpenID Connect issuer and maps them to
// identities. Its keys are fetched in the background; it is safe for
// concurrent use.
type OIDCVerifier struct {
	cfg    IssuerConfig
	tmpl   *template
	algs   []string
	parser *jwt.Parser
	keys   *keySet
	opts   Options
	cancel context.CancelFunc
}

// NewOIDCVerifier validates c and starts fetching the issuer's keys in the
// background: it does not wait for the identity provider, so a gateway
// starts while it is down. Tokens are refused until the keys are loaded.
// The background work ends when ctx is done or Close is called.
func NewOIDCVerifier(ctx context.Context, td spiffeid.TrustDomain, c IssuerConfig, o Options) (*OIDCVerifier, error) {
	if err := c.Validate(td); err != nil {
		return nil, fmt.Errorf("configuring OIDC issuer %q: %w", c.Issuer, err)
	}
	tmpl, err := parseTemplate(c.Identity, td)
	if err != nil {
		return nil, fmt.Errorf("configuring OIDC issuer %q: identity: %w", c.Issuer, err)
	}
	o = o.withDefaults()
	algs := c.algorithms()
	ctx, cancel := context.WithCancel(ctx)
	v := &OIDCVerifier{
		cfg:  c,
		tmpl: tmpl,
		algs: algs,
		parser: jwt.NewParser(
			jwt.WithValidMethods(algs),
			jwt.WithIssuer(c.Issuer),
			jwt.WithAudience(c.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
		),
		keys:   newKeySet(c.Issuer, c.JWKSURL, o),
		opts:   o,
		cancel: cancel,
	}
	go v.keys.load(ctx)
	return v, nil
}

// Issuer returns the pinned issuer.
func (v *OIDCVerifier) Issuer() string { return v.cfg.Issuer }

// WaitReady blocks until the issuer's keys have been fetched once, or ctx
// is done. A gateway's readiness check can use it; Verify does not wait.
func (v *OIDCVerifier) WaitReady(ctx context.Context) error { return v.keys.wait(ctx) }

// Close stops fetching and refreshing keys.
func (v *OIDCVerifier) Close() {
	v.cancel()
	<-v.keys.done
	v.keys.close()
}

// Verify checks token's signature, issuer, audience and times and returns
// the identity its claims map to. Errors wrap ErrUnauthenticated.
func (v *OIDCVerifier) Verify(ctx context.Context, token string) (Identity, error) {
	kf, err := v.keys.get()
	if err != nil {
		return Identity{}, refusef("keys of issuer %s are not available: %s", v.cfg.Issuer, oneLine(err))
	}
	claims := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(token, claims, kf.KeyfuncCtx(ctx))
	if err != nil {
		return Identity{}, refusef("verifying token from %s: %s", v.cfg.Issuer, v.reason(tok, err))
	}
	return v.identity(claims)
}

// identity maps verified claims to an Identity.
func (v *OIDCVerifier) identity(claims jwt.MapClaims) (Identity, error) {
	if sub, _ := claims["sub"].(string); sub == "" {
		return Identity{}, refusef("token from %s has no sub", v.cfg.Issuer)
	}
	id, err := v.tmpl.expand(claims)
	if err != nil {
		return Identity{}, refusef("mapping token from %s to an identity: %s", v.cfg.Issuer, oneLine(err))
	}
	groups, err := groupsOf(claims, v.cfg.groupsClaim())
	if err != nil {
		return Identity{}, refusef("token from %s: %s", v.cfg.Issuer, oneLine(err))
	}
	jti, _ := claims["jti"].(string)
	return Identity{ID: id, Groups: groups, Method: MethodOIDC, Issuer: v.cfg.Issuer, KeyID: jti}, nil
}

// groupsOf reads the groups claim: absent, a string, or a list of strings.
func groupsOf(claims jwt.MapClaims, name string) ([]string, error) {
	switch g := claims[name].(type) {
	case nil:
		return nil, nil
	case string:
		if g == "" {
			return nil, nil
		}
		return []string{g}, nil
	case []any:
		if len(g) > maxGroups {
			return nil, fmt.Errorf("claim %s has %d groups, more than %d", quote(name), len(g), maxGroups)
		}
		out := make([]string, 0, len(g))
		for _, e := range g {
			s, ok := e.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("claim %s is not a list of non-empty strings", quote(name))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("claim %s is neither a string nor a list of strings", quote(name))
}

// reason says in one line why jwt refused the token.
func (v *OIDCVerifier) reason(tok *jwt.Token, err error) string {
	var alg, kid string
	if tok != nil {
		alg, _ = tok.Header["alg"].(string)
		kid, _ = tok.Header["kid"].(string)
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case tok != nil && !slices.Contains(v.algs, alg):
		return fmt.Sprintf("algorithm %s is not allowed (allowed: %s)", quote(alg), strings.Join(v.algs, ", "))
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return fmt.Sprintf("no key with kid %s in the issuer's JWKS, even refetched", quote(kid))
	case errors.Is(err, keyfunc.ErrKeyfunc) && strings.Contains(err.Error(), "rate limit"):
		// jwkset's rate limiter said no: the JWKS was refetched recently.
		return fmt.Sprintf("no key with kid %s in the issuer's JWKS (refetched at most every %s)", quote(kid), v.opts.UnknownKIDInterval)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid signature"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "cannot be verified: " + oneLine(err)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fmt.Sprintf("iss is not %q", v.cfg.Issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fmt.Sprintf("aud does not contain %q", v.cfg.Audience)
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future (iat)"
	}
	return oneLine(err)
}
