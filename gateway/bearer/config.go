package bearer

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAlgorithms are the JWT algorithms accepted when an issuer lists none.
var DefaultAlgorithms = []string{"RS256", "ES256"}

// DefaultGroupsClaim is the claim read for groups when an issuer names none.
const DefaultGroupsClaim = "groups"

// asymmetric are the algorithms an allow-list may name. "none" and the
// HMAC algorithms are never accepted: with a public JWKS, an HMAC key is
// a key anyone can have.
var asymmetric = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// IssuerConfig is one trusted OpenID Connect issuer, as written in the
// gateway's YAML under "oidc:".
type IssuerConfig struct {
	// Issuer is pinned: a token's iss must equal it, byte for byte.
	Issuer string `yaml:"issuer"`
	// Audience is pinned: a token's aud must contain it.
	Audience string `yaml:"audience"`
	// JWKSURL is where the issuer's keys are; "" means the jwks_uri of
	// ISSUER/.well-known/openid-configuration.
	JWKSURL string `yaml:"jwks_url,omitempty"`
	// Algorithms is the allow-list of signing algorithms; empty means
	// DefaultAlgorithms.
	Algorithms []string `yaml:"algorithms,omitempty"`
	// Identity is the template of the caller's SPIFFE ID, for example
	// spiffe://postern.local/workload/{sub}. Placeholders are {sub} and
	// {claim:NAME}; each stands for part of one path segment.
	Identity string `yaml:"identity"`
	// GroupsClaim names the claim (a string or a list of strings) that
	// holds the caller's groups; "" means DefaultGroupsClaim.
	GroupsClaim string `yaml:"groups_claim,omitempty"`
}

// Validate reports the first problem with c, naming the field. Identities
// must be in td.
func (c IssuerConfig) Validate(td spiffeid.TrustDomain) error {
	if c.Issuer == "" {
		return errors.New("issuer: required")
	}
	if err := checkURL(c.Issuer); err != nil {
		return fmt.Errorf("issuer %q: %w", c.Issuer, err)
	}
	if strings.TrimSpace(c.Audience) == "" {
		return errors.New("audience: required (tokens for any audience would be accepted)")
	}
	if c.JWKSURL != "" {
		if err := checkURL(c.JWKSURL); err != nil {
			return fmt.Errorf("jwks_url %q: %w", c.JWKSURL, err)
		}
	}
	for _, a := range c.Algorithms {
		if err := checkAlgorithm(a); err != nil {
			return fmt.Errorf("algorithms: %w", err)
		}
	}
	if c.Identity == "" {
		return errors.New("identity: required, for example spiffe://" + td.Name() + "/workload/{sub}")
	}
	if _, err := parseTemplate(c.Identity, td); err != nil {
		return fmt.Errorf("identity %q: %w", c.Identity, err)
	}
	if c.GroupsClaim != "" && strings.TrimSpace(c.GroupsClaim) != c.GroupsClaim {
		return fmt.Errorf("groups_claim %q: has surrounding spaces", c.GroupsClaim)
	}
	return nil
}

// algorithms returns the allow-list with its default.
func (c IssuerConfig) algorithms() []string {
	if len(c.Algorithms) == 0 {
		return slices.Clone(DefaultAlgorithms)
	}
	return slices.Clone(c.Algorithms)
}

// groupsClaim returns the groups claim with its default.
func (c IssuerConfig) groupsClaim() string {
	if c.GroupsClaim == "" {
		return DefaultGroupsClaim
	}
	return c.GroupsClaim
}

func checkAlgorithm(a string) error {
	switch {
	case strings.EqualFold(a, "none"):
		return errors.New(`"none" is never allowed: it means an unsigned token`)
	case strings.HasPrefix(strings.ToUpper(a), "HS"):
		return fmt.Errorf("%q is never allowed: HMAC algorithms would accept a token signed with the public key", a)
	case !slices.Contains(asymmetric, a):
		return fmt.Errorf("%q is not one of %s", a, strings.Join(asymmetric, ", "))
	}
	return nil
}

// checkURL accepts https URLs, and http ones only on a loopback host.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have user info, a query or a fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("must be https (http only for a loopback host)")
	}
	return errors.New("must be https")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Config is everything an Authenticator needs.
type Config struct {
	// TrustDomain is the gateway's; every identity must be in it.
	TrustDomain spiffeid.TrustDomain `yaml:"-"`
	// OIDC are the trusted issuers; none means JWTs are refused.
	OIDC []IssuerConfig `yaml:"oidc"`
	// APIKeys looks up API keys; nil means API keys are refused.
	APIKeys KeyStore `yaml:"-"`
	// Options tune how issuers are reached.
	Options Options `yaml:"-"`
}

// Validate reports the first problem with c; an issuer's errors name its
// position and the bad field.
func (c Config) Validate() error {
	if c.TrustDomain.IsZero() {
		return errors.New("trust domain: required")
	}
	seen := map[string]bool{}
	for i, ic := range c.OIDC {
		if err := ic.Validate(c.TrustDomain); err != nil {
			return fmt.Errorf("oidc[%d]: %w", i, err)
		}
		if seen[ic.Issuer] {
			return fmt.Errorf("oidc[%d]: issuer %q: listed twice", i, ic.Issuer)
		}
		seen[ic.Issuer] = true
	}
	return nil
}

// Defaults of Options.
const (
	DefaultHTTPTimeout        = 10 * time.Second
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultUnknownKIDInterval = 30 * time.Second
	// maxResponseBytes caps a discovery document or a JWKS.
	maxResponseBytes = 1 << 20
)

// Options tune how verifiers reach identity providers. Zero fields mean
// the defaults.
type Options struct {
	// HTTPClient fetches discovery documents and JWKS. Default: a client
	// with a DefaultHTTPTimeout timeout. Responses are capped at 1 MiB.
	HTTPClient *http.Client
	// Logger gets key-refresh failures. Default: slog.Default().
	Logger *slog.Logger
	// RefreshInterval is how often a JWKS is refetched. Default:
	// DefaultRefreshInterval.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two refetches caused
	// by a token whose kid is not in the JWKS. Default:
	// DefaultUnknownKIDInterval.
	UnknownKIDInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	c := *o.HTTPClient
	c.Transport = limitTransport{next: c.Transport}
	o.HTTPClient = &c
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.UnknownKIDInterval <= 0 {
		o.UnknownKIDInterval = DefaultUnknownKIDInterval
	}
	return o
}
