package bearer

import (
	"context"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/internal/oidctest"
)

// The tests run zitadel/oidc's example OpenID provider in process, over
// real HTTP on 127.0.0.1, with one addition: machine clients that get JWT
// access tokens through the client-credentials grant (internal/oidctest).

var testTD = spiffeid.RequireTrustDomainFromString("postern.local")

const testAudience = oidctest.Audience

// testOP is a running OpenID provider with one machine client, ci-runner
// (secret ci-secret, groups deployers and ci).
type testOP struct {
	*oidctest.Provider
}

// startOP runs the example OP on a loopback port until the test ends.
func startOP(t testing.TB) *testOP {
	t.Helper()
	return &testOP{oidctest.Start(t, oidctest.Client{
		ID: "ci-runner", Secret: "ci-secret", Groups: []string{"deployers", "ci"},
	})}
}

// signingKey returns the OP's own RS256 signing key and its kid.
func (o *testOP) signingKey(t testing.TB) (*rsa.PrivateKey, string) {
	t.Helper()
	return o.SigningKey(t)
}

// clientCredentialsToken gets a real access token from the OP's token
// endpoint, found through its discovery document.
func (o *testOP) clientCredentialsToken(t testing.TB, clientID, secret string) string {
	t.Helper()
	tok, err := o.ClientCredentials(clientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claims are the claims of a token the OP would issue to ci-runner.
func (o *testOP) claims() jwt.MapClaims {
	c := o.Claims("ci-runner", "deployers")
	c["jti"] = "jti-1"
	return c
}

// mint signs claims with the OP's own key, as the OP would.
func (o *testOP) mint(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return o.Mint(t, claims)
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	return oidctest.Sign(t, m, key, kid, claims)
}

// issuerConfig is the configuration that trusts o.
func (o *testOP) issuerConfig() IssuerConfig {
	return IssuerConfig{
		Issuer:   o.Issuer(),
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
