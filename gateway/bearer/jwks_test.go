package bearer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// httptestServer serves every request by calling during, then 503, and
// returns its URL.
func httptestServer(t testing.TB, during func()) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		during()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// jwksServer is a minimal issuer: a JWKS on loopback whose keys the test
// changes, for algorithms and rotations the example OP does not do.
type jwksServer struct {
	URL  string
	mu   sync.Mutex
	keys map[string]crypto.Signer // kid → key
	algs map[string]jwkset.ALG
}

func startJWKS(t testing.TB) *jwksServer {
	t.Helper()
	j := &jwksServer{keys: map[string]crypto.Signer{}, algs: map[string]jwkset.ALG{}}
	srv := httptest.NewServer(http.HandlerFunc(j.serve))
	t.Cleanup(srv.Close)
	j.URL = srv.URL
	return j
}

func (j *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := jwkset.NewMemoryStorage()
	for kid, k := range j.keys {
		jwk, err := jwkset.NewJWKFromKey(k.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: j.algs[kid], USE: jwkset.UseSig},
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		st.KeyWrite(r.Context(), jwk)
	}
	raw, err := st.JSONPublic(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}

// add publishes a new key of alg ("RS256" or "ES256") under kid.
func (j *jwksServer) add(t testing.TB, kid, alg string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("add: no %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.keys[kid], j.algs[kid] = k, jwkset.ALG(alg)
	return k
}

// config trusts j as issuer "https://idp.test" for both algorithms.
func (j *jwksServer) config() IssuerConfig {
	return IssuerConfig{
		Issuer:     "https://idp.test",
		Audience:   testAudience,
		JWKSURL:    j.URL,
		Algorithms: []string{"RS256", "ES256"},
		Identity:   "spiffe://postern.local/workload/{sub}",
	}
}

func jwksClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": "https://idp.test", "sub": "svc", "aud": testAudience,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "groups": "g"}
}

// TestKeyRotation: a key the IdP publishes after the verifier loaded its
// JWKS is found by the refetch on its unknown kid.
func TestKeyRotation(t *testing.T) {
	j := startJWKS(t)
	j.add(t, "old", "RS256")
	v := newVerifier(t, j.config())
	newKey := j.add(t, "new", "ES256")
	tok := sign(t, jwt.SigningMethodES256, newKey, "new", jwksClaims())
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("token with the rotated-in key: got %v, want an identity", err)
	}
	if want := "spiffe://postern.local/workload/svc"; id.ID.String() != want {
		t.Fatalf("got %s, want %s", id.ID, want)
	}
}

// TestKeyAlgMismatch: a token whose alg differs from its JWK's alg is
// refused, though both are allowed.
func TestKeyAlgMismatch(t *testing.T) {
	j := startJWKS(t)
	rsaKey := j.add(t, "r", "RS256")
	ecKey := j.add(t, "e", "ES256")
	v := newVerifier(t, j.config())
	tests := map[string]string{
		"ES256 token naming the RSA key": sign(t, jwt.SigningMethodES256, ecKey, "r", jwksClaims()),
		"RS256 token naming the EC key":  sign(t, jwt.SigningMethodRS256, rsaKey, "e", jwksClaims()),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tok)
			t.Log(err)
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("got %v, want a refusal", err)
			}
		})
	}
}

// TestResponseLimit: a discovery document or JWKS over 1 MiB is refused;
// one of exactly 1 MiB is read.
func TestResponseLimit(t *testing.T) {
	tests := map[string]struct {
		size int
		want string // "" means fetched
	}{
		"at the limit":   {size: maxResponseBytes},
		"over the limit": {size: maxResponseBytes + 1, want: "larger than"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// The padding is inside the JSON, so a decoder must read it all.
			head, tail := []byte(`{"keys": [`), []byte(`]}`)
			body := append(head, bytes.Repeat([]byte(" "), tc.size-len(head)-len(tail))...)
			body = append(body, tail...)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
			defer srv.Close()
			ks := newKeySet("https://idp.test", srv.URL, Options{}.withDefaults())
			_, stop, err := ks.fetch(context.Background())
			if stop != nil {
				defer stop()
			}
			if tc.want == "" && err != nil {
				t.Fatalf("got %v, want the JWKS fetched", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDiscover: the discovery document must be for the configured issuer
// and point at an acceptable JWKS URL.
func TestDiscover(t *testing.T) {
	var issuer string
	tests := map[string]struct {
		doc  func() string
		want string // "" means found
	}{
		"good":            {doc: func() string { return `{"issuer": "` + issuer + `", "jwks_uri": "` + issuer + `/keys"}` }},
		"other issuer":    {doc: func() string { return `{"issuer": "https://evil.example", "jwks_uri": "` + issuer + `/keys"}` }, want: `the document is for issuer "https://evil.example"`},
		"plain http jwks": {doc: func() string { return `{"issuer": "` + issuer + `", "jwks_uri": "http://idp.example/keys"}` }, want: "must be https"},
		"no jwks_uri":     {doc: func() string { return `{"issuer": "` + issuer + `"}` }, want: "jwks_uri"},
		"not JSON":        {doc: func() string { return `<html>` }, want: "invalid character"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/.well-known/openid-configuration" {
					http.NotFound(w, r)
					return
				}
				w.Write([]byte(tc.doc()))
			}))
			defer srv.Close()
			issuer = srv.URL
			got, err := discover(context.Background(), Options{}.withDefaults().HTTPClient, issuer)
			if tc.want == "" {
				if err != nil || got != issuer+"/keys" {
					t.Fatalf("got %q, %v; want %s/keys", got, err, issuer)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}
