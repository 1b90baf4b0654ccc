package bearer

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The tests run zitadel/oidc's example OpenID provider in process, over
// real HTTP on 127.0.0.1, with one addition: machine clients that get JWT
// access tokens through the client-credentials grant.

var testTD = spiffeid.RequireTrustDomainFromString("postern.local")

const testAudience = "postern"

// testOP is a running OpenID provider.
type testOP struct {
	Issuer   string
	srv      *httptest.Server
	storage  *machineStorage
	down     atomic.Bool   // answer 503 to everything
	refused  chan struct{} // gets a value (if there is room) for each 503
	jwksHits atomic.Int64  // GET /keys served
}

// startOP runs the example OP on a loopback port until the test ends.
func startOP(t testing.TB) *testOP {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	o := &testOP{Issuer: "http://" + srv.Listener.Addr().String(), srv: srv, refused: make(chan struct{}, 1)}
	o.storage = &machineStorage{
		Storage: storage.NewStorage(storage.NewUserStore(o.Issuer + "/")),
		clients: map[string]machineClient{
			"ci-runner": {id: "ci-runner", secret: "ci-secret", groups: []string{"deployers", "ci"}},
		},
	}
	// SetupServer replaces slog's default logger; keep it quiet.
	router := exampleop.SetupServer(o.Issuer, o.storage, slog.New(slog.DiscardHandler), false)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			select {
			case o.refused <- struct{}{}:
			default:
			}
			return
		}
		if r.URL.Path == "/keys" {
			o.jwksHits.Add(1)
		}
		router.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return o
}

// signingKey returns the OP's own RS256 signing key and its kid.
func (o *testOP) signingKey(t testing.TB) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := o.storage.SigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return k.Key().(*rsa.PrivateKey), k.ID()
}

// clientCredentialsToken gets a real access token from the OP's token
// endpoint, found through its discovery document.
func (o *testOP) clientCredentialsToken(t testing.TB, clientID, secret string) string {
	t.Helper()
	var disco struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	getJSON(t, o.Issuer+"/.well-known/openid-configuration", &disco)
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}
	req, err := http.NewRequest(http.MethodPost, disco.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("token endpoint: got status %d error %q, want an access token", resp.StatusCode, tr.Error)
	}
	return tr.AccessToken
}

func getJSON(t testing.TB, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// claims are the claims of a token the OP would issue to ci-runner.
func (o *testOP) claims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":    o.Issuer,
		"sub":    "ci-runner",
		"aud":    []string{testAudience},
		"exp":    now.Add(5 * time.Minute).Unix(),
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"jti":    "jti-1",
		"groups": []string{"deployers"},
	}
}

// mint signs claims with the OP's own key, as the OP would.
func (o *testOP) mint(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	key, kid := o.signingKey(t)
	return sign(t, jwt.SigningMethodRS256, key, kid, claims)
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
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

// issuerConfig is the configuration that trusts o.
func (o *testOP) issuerConfig() IssuerConfig {
	return IssuerConfig{
		Issuer:   o.Issuer,
		Audience: testAudience,
		Identity: "spiffe://postern.local/workload/{sub}",
	}
}

// newVerifier makes a verifier for c and waits for its keys.
func newVerifier(t testing.TB, c IssuerConfig) *OIDCVerifier {
	t.Helper()
	v, err := NewOIDCVerifier(context.Background(), testTD, c, Options{})
	if err != nil {
		t.Fatalf("NewOIDCVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return v
}

// machineStorage is the example storage plus machine clients whose
// client-credentials access tokens are JWTs for the audience "postern",
// carrying their groups.
type machineStorage struct {
	*storage.Storage
	clients map[string]machineClient
}

var _ op.ClientCredentialsStorage = (*machineStorage)(nil)

func (s *machineStorage) ClientCredentials(ctx context.Context, clientID, secret string) (op.Client, error) {
	c, ok := s.clients[clientID]
	if !ok || c.secret != secret {
		return nil, errors.New("wrong client id or secret")
	}
	return c, nil
}

func (s *machineStorage) ClientCredentialsTokenRequest(ctx context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	if _, ok := s.clients[clientID]; !ok {
		return nil, errors.New("unknown client")
	}
	return &oidc.JWTTokenRequest{Subject: clientID, Audience: []string{testAudience}, Scopes: scopes}, nil
}

func (s *machineStorage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	if c, ok := s.clients[clientID]; ok {
		return map[string]any{"groups": c.groups}, nil
	}
	return s.Storage.GetPrivateClaimsFromScopes(ctx, userID, clientID, scopes)
}

// machineClient is an op.Client allowed only the client-credentials grant.
type machineClient struct {
	id, secret string
	groups     []string
}

func (c machineClient) GetID() string                       { return c.id }
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
