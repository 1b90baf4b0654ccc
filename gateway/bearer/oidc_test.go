package bearer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestRealToken: a token the OP issued through the client-credentials
// grant, verified with keys fetched from the OP over HTTP, with the JWKS
// found by discovery or configured.
func TestRealToken(t *testing.T) {
	o := startOP(t)
	token := o.clientCredentialsToken(t, "ci-runner", "ci-secret")
	configs := map[string]func(*IssuerConfig){
		"discovery": func(*IssuerConfig) {},
		"jwks_url":  func(c *IssuerConfig) { c.JWKSURL = o.JWKSURL() },
	}
	for name, mod := range configs {
		t.Run(name, func(t *testing.T) {
			c := o.issuerConfig()
			mod(&c)
			v := newVerifier(t, c)
			got, err := v.Verify(context.Background(), token)
			if err != nil {
				t.Fatalf("Verify: got %v, want an identity", err)
			}
			if want := "spiffe://postern.local/workload/ci-runner"; got.ID.String() != want {
				t.Errorf("got ID %s, want %s", got.ID, want)
			}
			if want := []string{"deployers", "ci"}; !slices.Equal(got.Groups, want) {
				t.Errorf("got groups %v, want %v", got.Groups, want)
			}
			if got.Method != MethodOIDC || got.Issuer != o.Issuer() || got.KeyID == "" {
				t.Errorf("got method %q issuer %q jti %q, want oidc, %s and the token's jti", got.Method, got.Issuer, got.KeyID, o.Issuer())
			}
		})
	}
}

// TestRefused: each token is refused, with a reason that says why.
func TestRefused(t *testing.T) {
	o := startOP(t)
	key, kid := o.signingKey(t)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := o.claims()
		mod(c)
		return c
	}
	now := time.Now()

	tests := map[string]struct {
		token  func(t *testing.T) string
		config func(*IssuerConfig) // nil: o.issuerConfig()
		want   string              // part of the reason
	}{
		"alg none": {
			token: func(t *testing.T) string {
				return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, o.claims())
			},
			want: `algorithm "none" is not allowed`,
		},
		"HS256 keyed with the RSA public key": {
			token: func(t *testing.T) string { return sign(t, jwt.SigningMethodHS256, pubPEM, kid, o.claims()) },
			want:  `algorithm "HS256" is not allowed`,
		},
		"HS256 keyed with the RSA public key DER": {
			token: func(t *testing.T) string { return sign(t, jwt.SigningMethodHS256, pubDER, kid, o.claims()) },
			want:  `algorithm "HS256" is not allowed`,
		},
		"PS256 with the OP's key, not in the allow-list": {
			token: func(t *testing.T) string { return sign(t, jwt.SigningMethodPS256, key, kid, o.claims()) },
			want:  `algorithm "PS256" is not allowed`,
		},
		"RS256 to an issuer that allows only ES256": {
			token:  func(t *testing.T) string { return o.mint(t, o.claims()) },
			config: func(c *IssuerConfig) { c.Algorithms = []string{"ES256"} },
			want:   `algorithm "RS256" is not allowed`,
		},
		"ES256 with a key not in the JWKS": {
			token: func(t *testing.T) string { return sign(t, jwt.SigningMethodES256, ecKey, "ec-1", o.claims()) },
			want:  `no key with kid "ec-1"`,
		},
		"unknown kid": {
			token: func(t *testing.T) string { return sign(t, jwt.SigningMethodRS256, otherRSA, "not-in-jwks", o.claims()) },
			want:  `no key with kid "not-in-jwks"`,
		},
		"OP's kid, another key": {
			token: func(t *testing.T) string { return sign(t, jwt.SigningMethodRS256, otherRSA, kid, o.claims()) },
			want:  "invalid signature",
		},
		"tampered payload": {
			token: func(t *testing.T) string {
				good := strings.Split(o.mint(t, o.claims()), ".")
				evil := strings.Split(o.mint(t, with(func(c jwt.MapClaims) { c["sub"] = "admin" })), ".")
				return good[0] + "." + evil[1] + "." + good[2]
			},
			want: "invalid signature",
		},
		"wrong aud": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["aud"] = []string{"someone-else"} }))
			},
			want: `aud does not contain "postern"`,
		},
		"no aud": {
			token: func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { delete(c, "aud") })) },
			want:  "aud claim is required",
		},
		"wrong iss": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }))
			},
			want: "iss is not",
		},
		"expired": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-5 * time.Minute).Unix() }))
			},
			want: "token expired",
		},
		"no exp": {
			token: func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { delete(c, "exp") })) },
			want:  "exp claim is required",
		},
		"not yet valid": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Minute).Unix() }))
			},
			want: "not valid yet",
		},
		"issued in the future": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Minute).Unix() }))
			},
			want: "issued in the future",
		},
		"missing sub": {
			token: func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { delete(c, "sub") })) },
			want:  "has no sub",
		},
		"sub with a slash": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["sub"] = "ci/../../agent/db1" }))
			},
			want: "which a SPIFFE ID path segment cannot hold",
		},
		"sub is ..": {
			token: func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { c["sub"] = ".." })) },
			want:  "dot segment",
		},
		"sub is an email": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["sub"] = "ann@example.com" }))
			},
			want: "cannot hold",
		},
		"template claim with a slash": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["repository"] = "org/repo" }))
			},
			config: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/gh-{claim:repository}" },
			want:   "which a SPIFFE ID path segment cannot hold",
		},
		"template claim is ..": {
			token:  func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { c["repository"] = ".." })) },
			config: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{claim:repository}" },
			want:   "dot segment",
		},
		"template claim missing": {
			token:  func(t *testing.T) string { return o.mint(t, o.claims()) },
			config: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{claim:repository}" },
			want:   `claim "repository" is missing`,
		},
		"template claim not a string": {
			token:  func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { c["repository"] = 42 })) },
			config: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/workload/{claim:repository}" },
			want:   "not a string",
		},
		"groups not strings": {
			token: func(t *testing.T) string { return o.mint(t, with(func(c jwt.MapClaims) { c["groups"] = []int{1, 2} })) },
			want:  "not a list of non-empty strings",
		},
		"groups an object": {
			token: func(t *testing.T) string {
				return o.mint(t, with(func(c jwt.MapClaims) { c["groups"] = map[string]string{"a": "b"} }))
			},
			want: "neither a string nor a list",
		},
		"malformed": {
			token: func(t *testing.T) string { return "abc.def.ghi" },
			want:  "malformed token",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := o.issuerConfig()
			if tc.config != nil {
				tc.config(&c)
			}
			v := newVerifier(t, c)
			token := tc.token(t)
			got, err := v.Verify(context.Background(), token)
			if err == nil {
				t.Fatalf("got identity %s, want a refusal containing %q", got.ID, tc.want)
			}
			t.Log(err)
			if !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("got %v, want it to wrap ErrUnauthenticated", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %q, want one line without the token", err)
			}
		})
	}
}

// TestAccepted: tokens that differ from the OP's usual ones but are valid.
func TestAccepted(t *testing.T) {
	o := startOP(t)
	now := time.Now()
	tests := map[string]struct {
		claims func(jwt.MapClaims)
		config func(*IssuerConfig)
		wantID string
		groups []string
	}{
		"expired within the leeway": {
			claims: func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() },
			wantID: "spiffe://postern.local/workload/ci-runner",
			groups: []string{"deployers"},
		},
		"aud a string": {
			claims: func(c jwt.MapClaims) { c["aud"] = testAudience },
			wantID: "spiffe://postern.local/workload/ci-runner",
			groups: []string{"deployers"},
		},
		"aud among others": {
			claims: func(c jwt.MapClaims) { c["aud"] = []string{"a", testAudience, "b"} },
			wantID: "spiffe://postern.local/workload/ci-runner",
			groups: []string{"deployers"},
		},
		"groups a string, other claim": {
			claims: func(c jwt.MapClaims) { c["roles"] = "admins" },
			config: func(c *IssuerConfig) { c.GroupsClaim = "roles" },
			wantID: "spiffe://postern.local/workload/ci-runner",
			groups: []string{"admins"},
		},
		"no groups": {
			claims: func(c jwt.MapClaims) { delete(c, "groups") },
			wantID: "spiffe://postern.local/workload/ci-runner",
		},
		"user template with a claim": {
			claims: func(c jwt.MapClaims) { c["preferred_username"] = "ann.smith" },
			config: func(c *IssuerConfig) { c.Identity = "spiffe://postern.local/user/idp-{claim:preferred_username}" },
			wantID: "spiffe://postern.local/user/idp-ann.smith",
			groups: []string{"deployers"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := o.issuerConfig()
			if tc.config != nil {
				tc.config(&c)
			}
			claims := o.claims()
			tc.claims(claims)
			got, err := newVerifier(t, c).Verify(context.Background(), o.mint(t, claims))
			if err != nil {
				t.Fatalf("got %v, want %s", err, tc.wantID)
			}
			if got.ID.String() != tc.wantID || !slices.Equal(got.Groups, tc.groups) {
				t.Fatalf("got %s %v, want %s %v", got.ID, got.Groups, tc.wantID, tc.groups)
			}
		})
	}
}

// TestUnknownKIDRefetches: a kid the verifier does not know makes it
// refetch the JWKS (still refusing a key the IdP does not publish), and a
// second one within the interval does not.
func TestUnknownKIDRefetches(t *testing.T) {
	o := startOP(t)
	v := newVerifier(t, o.issuerConfig())
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	before := o.JWKSHits()
	for i, tc := range []struct {
		fetches int64
		says    string
	}{
		{fetches: 1, says: `no key with kid "rotated-away" in the issuer's JWKS, even refetched`},
		{fetches: 1, says: `no key with kid "rotated-away" in the issuer's JWKS (refetched at most every 30s)`},
	} {
		want := tc.fetches
		_, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, other, "rotated-away", o.claims()))
		if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.says) {
			t.Fatalf("token %d: got %v, want a refusal saying %q", i, err, tc.says)
		}
		if got := o.JWKSHits() - before; got != want {
			t.Fatalf("token %d: got %d JWKS fetches since start, want %d", i, got, want)
		}
	}
	// The OP's own tokens still pass.
	if _, err := v.Verify(context.Background(), o.mint(t, o.claims())); err != nil {
		t.Fatalf("OP token after refetch: %v", err)
	}
}

// TestIdPDownAtStart: the verifier is made while the IdP answers 503;
// tokens are refused with a clear reason until the keys load, then pass.
func TestIdPDownAtStart(t *testing.T) {
	o := startOP(t)
	o.SetDown(true)
	a, err := New(context.Background(), Config{TrustDomain: testTD, OIDC: []IssuerConfig{o.issuerConfig()}})
	if err != nil {
		t.Fatalf("New with the IdP down: %v", err)
	}
	t.Cleanup(a.Close)
	token := o.mint(t, o.claims())
	_, err = a.Authenticate(context.Background(), token)
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "are not available") {
		t.Fatalf("IdP down: got %v, want a refusal saying the keys are not available", err)
	}
	<-o.Refused() // the first attempt failed
	for {
		_, err = a.Authenticate(context.Background(), token)
		if !strings.Contains(err.Error(), "not fetched yet") {
			break // the failure is recorded
		}
		runtime.Gosched()
	}
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("IdP down: got %v, want a refusal naming the IdP's answer", err)
	}
	o.SetDown(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady after the IdP came back: %v", err)
	}
	if _, err := a.Authenticate(context.Background(), token); err != nil {
		t.Fatalf("after the IdP came back: got %v, want an identity", err)
	}
}

// TestIdPHangs: an IdP that never answers does not hold up New or
// Authenticate.
func TestIdPHangs(t *testing.T) {
	hang := make(chan struct{})
	srv := httptestServer(t, func() { <-hang })
	defer close(hang)
	c := IssuerConfig{Issuer: srv, Audience: testAudience, Identity: "spiffe://postern.local/workload/{sub}"}
	a, err := New(context.Background(), Config{TrustDomain: testTD, OIDC: []IssuerConfig{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	token := sign(t, jwt.SigningMethodHS256, []byte("x"), "", jwt.MapClaims{"iss": srv})
	if _, err := a.Authenticate(context.Background(), token); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("got %v, want a refusal", err)
	}
}
