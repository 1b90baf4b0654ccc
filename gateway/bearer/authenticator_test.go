package bearer

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAuthenticate: one Authenticator with two issuers and API keys sends
// each token to the right verifier.
func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	o := startOP(t)
	j := startJWKS(t)
	ecKey := j.add(t, "e1", "ES256")
	d := openStore(t)
	a, err := New(ctx, Config{TrustDomain: testTD, OIDC: []IssuerConfig{o.issuerConfig(), j.config()}, APIKeys: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	forgedIss := jwksClaims()
	forgedIss["iss"] = o.Issuer() // signed by the other issuer's key
	tests := map[string]struct {
		token  string
		wantID string // "" means refused
		method string
		want   string // part of the refusal
	}{
		"OP token": {token: o.clientCredentialsToken(t, "ci-runner", "ci-secret"),
			wantID: "spiffe://postern.local/workload/ci-runner", method: MethodOIDC},
		"second issuer": {token: sign(t, jwt.SigningMethodES256, ecKey, "e1", jwksClaims()),
			wantID: "spiffe://postern.local/workload/svc", method: MethodOIDC},
		"API key": {token: createKey(t, d, "spiffe://postern.local/user/ann", nil),
			wantID: "spiffe://postern.local/user/ann", method: MethodAPIKey},
		"one issuer's key, the other's iss": {token: sign(t, jwt.SigningMethodES256, ecKey, "e1", forgedIss),
			want: "no key with kid"},
		"unknown issuer": {token: sign(t, jwt.SigningMethodES256, ecKey, "e1", jwt.MapClaims{"iss": "https://evil.example"}),
			want: `token issuer "https://evil.example" is not a configured OIDC issuer`},
		"no issuer":      {token: sign(t, jwt.SigningMethodES256, ecKey, "e1", jwt.MapClaims{"sub": "x"}), want: `token issuer "" is not`},
		"empty":          {token: "", want: "empty token"},
		"too long":       {token: strings.Repeat("a", MaxTokenLen+1), want: "longer than"},
		"not a JWT":      {token: "opaque-token-from-somewhere", want: "neither an API key nor a well-formed JWT"},
		"pk_ but broken": {token: "pk_nonsense", want: "API key has 11 characters"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := a.Authenticate(ctx, tc.token)
			if tc.wantID != "" {
				if err != nil || got.ID.String() != tc.wantID || got.Method != tc.method {
					t.Fatalf("got %+v, %v; want %s by %s", got, err, tc.wantID, tc.method)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal containing %q", err, tc.want)
			}
		})
	}
}

// TestCloseStopsBackground: after Close no goroutine of the key loading
// or of keyfunc's refresh is left, whether the keys loaded or not.
func TestCloseStopsBackground(t *testing.T) {
	o := startOP(t)
	down := startOP(t)
	down.SetDown(true)
	a, err := New(context.Background(), Config{TrustDomain: testTD, OIDC: []IssuerConfig{o.issuerConfig(), down.issuerConfig()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.verifier(o.Issuer()).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	<-down.Refused()
	if stacks := goroutines(); !strings.Contains(stacks, "jwkset.NewStorageFromHTTP") || !strings.Contains(stacks, "bearer.(*keySet).load") {
		t.Fatalf("before Close: got no refresh or loading goroutine, want both:\n%s", stacks)
	}
	a.Close()
	// keyfunc's refresh goroutine notices the cancelled context on its own
	// schedule; wait for it rather than for a fixed time.
	for {
		stacks := goroutines()
		if !strings.Contains(stacks, "jwkset.NewStorageFromHTTP") && !strings.Contains(stacks, "bearer.(*keySet).load") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("goroutines left after Close:\n%s", stacks)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func (a *Authenticator) verifier(issuer string) *OIDCVerifier { return a.issuers[issuer] }
