package oidctest

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Audience is the audience of a Client's tokens unless it names others.
const Audience = "postern"

// JWKSPath is where the provider serves its keys (its discovery document's
// jwks_uri).
const JWKSPath = "/keys"

// Client is a machine client of the provider: it may use only the
// client-credentials grant, authenticating with HTTP Basic, and gets JWT
// access tokens with sub = ID.
type Client struct {
	ID, Secret string
	// Audience is the aud of its tokens; nil means [Audience].
	Audience []string
	// Groups go in its tokens' "groups" claim (a list; absent when nil).
	Groups []string
}

// Provider is a running OpenID provider.
type Provider struct {
	issuer   string
	storage  *machineStorage
	down     atomic.Bool   // answer 503 to everything
	refused  chan struct{} // gets a value (if there is room) for each 503
	jwksHits atomic.Int64  // GET /keys served
}

// Start runs the example OpenID provider with clients on a loopback port
// until the test ends. Its issuer is http://127.0.0.1:PORT (no trailing
// slash).
func Start(t testing.TB, clients ...Client) *Provider {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	p := &Provider{issuer: "http://" + srv.Listener.Addr().String(), refused: make(chan struct{}, 1)}
	p.storage = &machineStorage{
		Storage: storage.NewStorage(storage.NewUserStore(p.issuer + "/")),
		clients: map[string]machineClient{},
	}
	for _, c := range clients {
		if c.ID == "" {
			t.Fatal("oidctest: a client needs an ID")
		}
		if _, dup := p.storage.clients[c.ID]; dup {
			t.Fatalf("oidctest: client %q given twice", c.ID)
		}
		if c.Audience == nil {
			c.Audience = []string{Audience}
		}
		c.Audience = slices.Clone(c.Audience)
		c.Groups = slices.Clone(c.Groups)
		p.storage.clients[c.ID] = machineClient{c}
	}
	// SetupServer replaces slog's default logger; keep it quiet.
	router := exampleop.SetupServer(p.issuer, p.storage, slog.New(slog.DiscardHandler), false)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			select {
			case p.refused <- struct{}{}:
			default:
			}
			return
		}
		if r.URL.Path == JWKSPath {
			p.jwksHits.Add(1)
		}
		router.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// Issuer is the provider's issuer, as its tokens' iss and its discovery
// document say.
func (p *Provider) Issuer() string { return p.issuer }

// JWKSURL is the URL of the provider's JWKS.
func (p *Provider) JWKSURL() string { return p.issuer + JWKSPath }

// SetDown makes the provider answer every request with 503 (down) or
// serve again.
func (p *Provider) SetDown(down bool) { p.down.Store(down) }

// Refused receives a value after a request was answered 503 while the
// provider was down (one value is buffered; more are dropped).
func (p *Provider) Refused() <-chan struct{} { return p.refused }

// JWKSHits is how many requests for the JWKS the provider has served.
func (p *Provider) JWKSHits() int64 { return p.jwksHits.Load() }

// SigningKey returns the provider's own RS256 signing key and its kid.
func (p *Provider) SigningKey(t testing.TB) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := p.storage.SigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	key, ok := k.Key().(*rsa.PrivateKey)
	if !ok {
		t.Fatalf("oidctest: the provider's signing key is a %T, want *rsa.PrivateKey", k.Key())
	}
	return key, k.ID()
}

// Token gets a real access token for the client clientID (given to Start)
// from the provider's token endpoint, found through its discovery
// document, with the client-credentials grant.
func (p *Provider) Token(t testing.TB, clientID string) string {
	t.Helper()
	c, ok := p.storage.clients[clientID]
	if !ok {
		t.Fatalf("oidctest: no client %q", clientID)
	}
	tok, err := p.ClientCredentials(clientID, c.Secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ClientCredentials asks the provider's token endpoint, found through its
// discovery document, for an access token with the client-credentials
// grant, authenticating as clientID with secret. It fails unless it gets
// an access token.
func (p *Provider) ClientCredentials(clientID, secret string) (string, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	var disco struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := getJSON(hc, p.issuer+"/.well-known/openid-configuration", &disco); err != nil {
		return "", err
	}
	if disco.Issuer != p.issuer || disco.TokenEndpoint == "" {
		return "", fmt.Errorf("oidctest: discovery names issuer %q, token endpoint %q; want %s and one", disco.Issuer, disco.TokenEndpoint, p.issuer)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}
	req, err := http.NewRequest(http.MethodPost, disco.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("oidctest: token endpoint: %w", err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return "", fmt.Errorf("oidctest: token endpoint: status %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		return "", fmt.Errorf("oidctest: token endpoint: got status %d error %q (%s), want an access token", resp.StatusCode, tr.Error, tr.Description)
	}
	return tr.AccessToken, nil
}

func getJSON(hc *http.Client, u string, v any) error {
	resp, err := hc.Get(u)
	if err != nil {
		return fmt.Errorf("oidctest: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oidctest: GET %s: status %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("oidctest: GET %s: %w", u, err)
	}
	return nil
}

// Claims are the claims of a token the provider would issue to a client
// sub with groups: its iss, aud [Audience], exp in 5 minutes, iat and nbf
// now, a fresh jti, and groups when there are any. Change them and Mint or
// Sign them to make tokens it never issued.
func (p *Provider) Claims(sub string, groups ...string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": p.issuer,
		"sub": sub,
		"aud": []string{Audience},
		"exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"jti": uuid.NewString(),
	}
	if groups != nil {
		c["groups"] = slices.Clone(groups)
	}
	return c
}

// Mint signs claims with the provider's own key and kid (RS256), as the
// provider would.
func (p *Provider) Mint(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	key, kid := p.SigningKey(t)
	return Sign(t, jwt.SigningMethodRS256, key, kid, claims)
}

// Sign makes a JWT of claims signed by m with key, with kid in its header
// unless kid is "". For alg none, m is jwt.SigningMethodNone and key
// jwt.UnsafeAllowNoneSignatureType.
func Sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// machineStorage is the example storage plus machine clients whose
// client-credentials access tokens are JWTs for their audience, carrying
// their groups. The clients do not change after Start.
type machineStorage struct {
	*storage.Storage
	clients map[string]machineClient
}

var _ op.ClientCredentialsStorage = (*machineStorage)(nil)

func (s *machineStorage) ClientCredentials(ctx context.Context, clientID, secret string) (op.Client, error) {
	c, ok := s.clients[clientID]
	if !ok || c.Secret != secret {
		return nil, errors.New("wrong client id or secret")
	}
	return c, nil
}

func (s *machineStorage) ClientCredentialsTokenRequest(ctx context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	c, ok := s.clients[clientID]
	if !ok {
		return nil, errors.New("unknown client")
	}
	return &oidc.JWTTokenRequest{Subject: clientID, Audience: slices.Clone(c.Audience), Scopes: scopes}, nil
}

func (s *machineStorage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	if c, ok := s.clients[clientID]; ok {
		if c.Groups == nil {
			return map[string]any{}, nil
		}
		return map[string]any{"groups": slices.Clone(c.Groups)}, nil
	}
	return s.Storage.GetPrivateClaimsFromScopes(ctx, userID, clientID, scopes)
}

// machineClient is an op.Client allowed only the client-credentials grant.
type machineClient struct{ Client }

func (c machineClient) GetID() string                       { return c.ID }
func (c machineClient) RedirectURIs() []string              { return nil }
func (c machineClient) PostLogoutRedirectURIs() []string    { return nil }
func (c machineClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c machineClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c machineClient) ResponseTypes() []oidc.ResponseType  { return nil }
func (c machineClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c machineClient) LoginURL(string) string               { return "" }
func (c machineClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c machineClient) IDTokenLifetime() time.Duration       { return time.Hour }
func (c machineClient) DevMode() bool                        { return false }
func (c machineClient) IsScopeAllowed(string) bool           { return false }
func (c machineClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c machineClient) ClockSkew() time.Duration             { return 0 }
func (c machineClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c machineClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
