package assertion

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

const testIssuer = "spiffe://postern.test/gateway/gw1"

// t0 is the fixed time tests start at.
var t0 = time.Unix(1_700_000_000, 0)

var alice = Claims{
	Subject:  "spiffe://postern.test/user/alice",
	Audience: "orders",
	Groups:   []string{"analysts", "oncall"},
}

// testSigner returns a Signer with a new key file in a temporary directory
// and a clock that the test moves with *clock.
func testSigner(t testing.TB) (s *Signer, path string, clock *time.Time) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state", KeyFile)
	s, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Issuer = testIssuer
	now := t0
	s.now = func() time.Time { return now }
	return s, path, &now
}

func assert(t testing.TB, s *Signer, now time.Time, c Claims) string {
	t.Helper()
	tok, err := s.Assert(now, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAssertVerify(t *testing.T) {
	s, _, _ := testSigner(t)
	tests := map[string]struct {
		claims     Claims
		wantGroups []string
	}{
		"with groups":   {alice, alice.Groups},
		"nil groups":    {Claims{Subject: alice.Subject, Audience: "orders"}, []string{}},
		"empty groups":  {Claims{Subject: alice.Subject, Audience: "orders", Groups: []string{}}, []string{}},
		"odd names":     {Claims{Subject: "spiffe://postern.test/workload/a\"b", Audience: "pg-1", Groups: []string{"", "é", "a\x00b"}}, []string{"", "é", "a\x00b"}},
		"many groups":   {Claims{Subject: alice.Subject, Audience: "orders", Groups: strings.Fields(strings.Repeat("g ", 100))}, strings.Fields(strings.Repeat("g ", 100))},
		"non-SPIFFE id": {Claims{Subject: "machine-7", Audience: "orders"}, []string{}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			now := t0.Add(500 * time.Millisecond)
			tok := assert(t, s, now, tt.claims)
			got, err := Verify(tok, s.JWKS(), tt.claims.Audience, now)
			if err != nil {
				t.Fatal(err)
			}
			want := &ParsedClaims{
				Issuer:    testIssuer,
				Subject:   tt.claims.Subject,
				Audience:  tt.claims.Audience,
				Groups:    tt.wantGroups,
				ID:        got.ID,
				IssuedAt:  t0,
				ExpiresAt: t0.Add(Lifetime),
				KeyID:     s.KeyID(),
			}
			if fmt.Sprint(got) != fmt.Sprint(want) || !slices.Equal(got.Groups, want.Groups) {
				t.Errorf("Verify: got %+v, want %+v", got, want)
			}
			if len(got.ID) != 32 {
				t.Errorf("jti: got %q, want 32 hex digits", got.ID)
			}
		})
	}
}

// TestWire pins what upstreams in other languages rely on: the header and
// the claims as JSON.
func TestWire(t *testing.T) {
	s, _, _ := testSigner(t)
	tok := assert(t, s, t0, alice)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token: got %d parts, want 3", len(parts))
	}
	var header map[string]any
	decodeSegment(t, parts[0], &header)
	if want := map[string]any{"alg": "ES256", "typ": "JWT", "kid": s.KeyID()}; fmt.Sprint(header) != fmt.Sprint(want) {
		t.Errorf("header: got %v, want %v", header, want)
	}
	var claims map[string]any
	decodeSegment(t, parts[1], &claims)
	want := map[string]any{
		"iss":    testIssuer,
		"sub":    alice.Subject,
		"aud":    []any{"orders"},
		"groups": []any{"analysts", "oncall"},
		"iat":    float64(t0.Unix()),
		"exp":    float64(t0.Add(5 * time.Minute).Unix()),
		"jti":    claims["jti"],
	}
	if fmt.Sprint(claims) != fmt.Sprint(want) {
		t.Errorf("claims: got %v, want %v", claims, want)
	}
	if sig, _ := base64.RawURLEncoding.DecodeString(parts[2]); len(sig) != 64 {
		t.Errorf("signature: got %d bytes, want 64 (ES256 r||s)", len(sig))
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestAssertRejects(t *testing.T) {
	s, _, _ := testSigner(t)
	noIssuer, _, _ := testSigner(t)
	noIssuer.Issuer = ""
	tests := map[string]struct {
		s *Signer
		c Claims
	}{
		"no issuer":   {noIssuer, alice},
		"no subject":  {s, Claims{Audience: "orders"}},
		"no audience": {s, Claims{Subject: alice.Subject}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if tok, err := tt.s.Assert(t0, tt.c); err == nil {
				t.Errorf("Assert: got %q, want an error", tok)
			}
		})
	}
}

func TestAssertCache(t *testing.T) {
	s, _, _ := testSigner(t)
	first := assert(t, s, t0, alice)
	other := func(f func(*Claims)) Claims {
		c := alice
		c.Groups = slices.Clone(alice.Groups)
		f(&c)
		return c
	}
	tests := map[string]struct {
		now       time.Time
		claims    Claims
		wantReuse bool
	}{
		"same instant":            {t0, alice, true},
		"after 59s":               {t0.Add(59 * time.Second), alice, true},
		"after 59.9s":             {t0.Add(59*time.Second + 900*time.Millisecond), alice, true},
		"equal groups, new slice": {t0.Add(time.Second), other(func(*Claims) {}), true},
		"after a minute":          {t0.Add(time.Minute), alice, false},
		"after four minutes":      {t0.Add(4 * time.Minute), alice, false},
		"clock went back":         {t0.Add(-time.Second), alice, false},
		"other audience":          {t0, other(func(c *Claims) { c.Audience = "billing" }), false},
		"other subject":           {t0, other(func(c *Claims) { c.Subject += "2" }), false},
		"other groups":            {t0, other(func(c *Claims) { c.Groups = c.Groups[:1] }), false},
		"groups reordered":        {t0, other(func(c *Claims) { slices.Reverse(c.Groups) }), false},
		"no groups":               {t0, other(func(c *Claims) { c.Groups = nil }), false},
		"groups split otherwise":  {t0, other(func(c *Claims) { c.Groups = []string{"analystsoncall"} }), false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			// Start from the first token each time: sub-tests that re-sign
			// would otherwise move the cache along.
			s.cache.clear()
			s.cache.put(appendCacheKey(nil, alice), entry{token: first, iat: t0, key: s.keys.Load().cur}, t0)
			got := assert(t, s, tt.now, tt.claims)
			if reused := got == first; reused != tt.wantReuse {
				t.Errorf("reused the first token: got %v, want %v", reused, tt.wantReuse)
			}
			c, err := Verify(got, s.JWKS(), tt.claims.Audience, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if left := c.ExpiresAt.Sub(tt.now); left <= Lifetime-ReuseFor {
				t.Errorf("token handed out with %s left, want more than %s", left, Lifetime-ReuseFor)
			}
			if c.Subject != tt.claims.Subject || c.Audience != tt.claims.Audience || !slices.Equal(c.Groups, tt.claims.Groups) {
				t.Errorf("token claims: got %+v, want %+v", c, tt.claims)
			}
		})
	}
}

func TestCacheKeyUnambiguous(t *testing.T) {
	pairs := map[string][2]Claims{
		"subject/audience boundary": {{Subject: "ab", Audience: "c"}, {Subject: "a", Audience: "bc"}},
		"audience/group boundary":   {{Subject: "a", Audience: "bc"}, {Subject: "a", Audience: "b", Groups: []string{"c"}}},
		"group boundary":            {{Subject: "a", Audience: "b", Groups: []string{"c", "d"}}, {Subject: "a", Audience: "b", Groups: []string{"cd"}}},
		"empty group":               {{Subject: "a", Audience: "b"}, {Subject: "a", Audience: "b", Groups: []string{""}}},
		"length-like bytes":         {{Subject: "a\x01", Audience: "b"}, {Subject: "a", Audience: "\x01b"}},
	}
	for name, p := range pairs {
		t.Run(name, func(t *testing.T) {
			if a, b := appendCacheKey(nil, p[0]), appendCacheKey(nil, p[1]); string(a) == string(b) {
				t.Errorf("cache keys of %+v and %+v: both %q, want them to differ", p[0], p[1], a)
			}
		})
	}
}

// TestAssertResignsOncePerMinute walks a caller through ten minutes of
// requests, one a second: one signature a minute, never more.
func TestAssertResignsOncePerMinute(t *testing.T) {
	s, _, _ := testSigner(t)
	tokens := map[string]bool{}
	for i := range 600 {
		tokens[assert(t, s, t0.Add(time.Duration(i)*time.Second), alice)] = true
	}
	if got, want := len(tokens), 10; got != want {
		t.Errorf("distinct tokens in 10 minutes: got %d, want %d", got, want)
	}
}

func TestCacheBounded(t *testing.T) {
	s, _, _ := testSigner(t)
	for i := range MaxCached + 100 {
		c := alice
		c.Subject = fmt.Sprintf("spiffe://postern.test/user/u%d", i)
		assert(t, s, t0, c)
		if n := s.cache.len(); n > MaxCached {
			t.Fatalf("after %d callers: got %d cached tokens, want at most %d", i+1, n, MaxCached)
		}
	}
	// A minute on, every entry is stale: the next sweep drops them all.
	for i := range MaxCached {
		c := alice
		c.Subject = fmt.Sprintf("spiffe://postern.test/user/v%d", i)
		assert(t, s, t0.Add(time.Minute), c)
	}
	if n := s.cache.len(); n > MaxCached {
		t.Errorf("got %d cached tokens, want at most %d", n, MaxCached)
	}
}

func TestAssertConcurrent(t *testing.T) {
	s, path, _ := testSigner(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				c := alice
				c.Subject = fmt.Sprintf("spiffe://postern.test/user/u%d", i%10)
				now := t0.Add(time.Duration(g*200+i) * 100 * time.Millisecond)
				tok, err := s.Assert(now, c)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := Verify(tok, s.JWKS(), c.Audience, now); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			if err := s.Rotate(path); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", KeyFile)
	first, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode: got %04o, want 0600", got)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("key directory mode: got %04o, want 0700", got)
	}
	pemData, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(pemData), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file: got %.30q, want a PKCS#8 PEM block", pemData)
	}

	second, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if first.KeyID() != second.KeyID() {
		t.Errorf("second load: got key %s, want the first key %s", second.KeyID(), first.KeyID())
	}
	first.Issuer = testIssuer
	tok := assert(t, first, t0, alice)
	if _, err := Verify(tok, second.JWKS(), "orders", t0); err != nil {
		t.Errorf("verifying with the reloaded key's JWKS: %v", err)
	}

	dir := t.TempDir()
	for name, f := range map[string]struct {
		data []byte
		perm os.FileMode
	}{
		"corrupt":         {[]byte("not a key"), 0o600},
		"readable by all": {pemData, 0o644},
		"group readable":  {pemData, 0o640},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(p, f.data, f.perm); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, f.perm); err != nil { // past the umask
				t.Fatal(err)
			}
			if _, err := LoadOrCreate(p); err == nil {
				t.Error("LoadOrCreate: got nil error, want a refusal")
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	s, _, _ := testSigner(t)
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS: got %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	for member, want := range map[string]string{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": s.KeyID()} {
		if got := k[member]; got != want {
			t.Errorf("JWK %s: got %v, want %s", member, got, want)
		}
	}
	if _, ok := k["d"]; ok {
		t.Error("JWKS holds the private key (d)")
	}
	for _, c := range []string{"x", "y"} {
		if b, err := base64.RawURLEncoding.DecodeString(fmt.Sprint(k[c])); err != nil || len(b) != 32 {
			t.Errorf("JWK %s: got %v, want 32 bytes base64url", c, k[c])
		}
	}

	// The kid is the RFC 7638 thumbprint, as another implementation has it.
	var jk jose.JSONWebKey
	if err := jk.UnmarshalJSON(s.JWKS()[len(`{"keys":[`) : len(s.JWKS())-len(`]}`)]); err != nil {
		t.Fatal(err)
	}
	tp, err := jk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.KeyID(), base64.RawURLEncoding.EncodeToString(tp); got != want {
		t.Errorf("kid: got %s, want the go-jose thumbprint %s", got, want)
	}
}

func TestRotate(t *testing.T) {
	s, path, clock := testSigner(t)
	oldKID := s.KeyID()
	oldTok := assert(t, s, t0, alice)

	*clock = t0.Add(time.Minute)
	if err := s.Rotate(path); err != nil {
		t.Fatal(err)
	}
	if s.KeyID() == oldKID {
		t.Fatal("Rotate: the key ID did not change")
	}
	reloaded, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := reloaded.KeyID(); got != s.KeyID() {
		t.Errorf("key file after Rotate: got key %s, want the new key %s", got, s.KeyID())
	}
	if got := kids(t, s.JWKS()); !slices.Equal(got, []string{s.KeyID(), oldKID}) {
		t.Errorf("JWKS after Rotate: got kids %v, want the new then the old", got)
	}
	// A request right after: the cached token of the old key is not reused.
	newTok := assert(t, s, t0.Add(time.Minute-time.Second), alice)
	if newTok == oldTok {
		t.Error("Assert after Rotate handed out a token signed by the old key")
	}
	for name, tok := range map[string]string{"old": oldTok, "new": newTok} {
		if _, err := Verify(tok, s.JWKS(), "orders", t0.Add(time.Minute)); err != nil {
			t.Errorf("Verify of the %s token after Rotate: %v", name, err)
		}
	}

	*clock = t0.Add(time.Minute + RetainPrevious)
	if got := kids(t, s.JWKS()); !slices.Equal(got, []string{s.KeyID()}) {
		t.Errorf("JWKS %s after Rotate: got kids %v, want only the new one", RetainPrevious, got)
	}
	if _, err := Verify(oldTok, s.JWKS(), "orders", t0.Add(time.Minute)); err == nil {
		t.Error("Verify of an old-key token against the JWKS without the old key: got nil error")
	}

	// Two rotations in a row keep both previous keys.
	if err := s.Rotate(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Rotate(path); err != nil {
		t.Fatal(err)
	}
	if got := len(kids(t, s.JWKS())); got != 3 {
		t.Errorf("JWKS after two quick rotations: got %d keys, want 3", got)
	}

	if err := s.Rotate(filepath.Join(path, "not-a-dir", "key.pem")); err == nil {
		t.Error("Rotate to a path that cannot be written: got nil error")
	}
}

func kids(t *testing.T, jwks []byte) []string {
	t.Helper()
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KID)
	}
	return out
}

func TestHandler(t *testing.T) {
	s, _, _ := testSigner(t)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	tests := map[string]struct {
		method     string
		wantStatus int
		wantBody   bool
	}{
		"GET":  {http.MethodGet, http.StatusOK, true},
		"HEAD": {http.MethodHead, http.StatusOK, false},
		"POST": {http.MethodPost, http.StatusMethodNotAllowed, false},
		"PUT":  {http.MethodPut, http.StatusMethodNotAllowed, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+JWKSPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusOK {
				if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
					t.Errorf("Allow: got %q, want %q", got, "GET, HEAD")
				}
				return
			}
			for h, want := range map[string]string{"Content-Type": "application/jwk-set+json", "Cache-Control": "max-age=300"} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s: got %q, want %q", h, got, want)
				}
			}
			if tt.wantBody && string(body) != string(s.JWKS()) {
				t.Errorf("body: got %s, want %s", body, s.JWKS())
			}
		})
	}
}

// TestKeyfunc: an upstream that knows nothing of this package checks the
// header with golang-jwt and keyfunc, from the JWKS as JSON and as fetched
// from the Handler over HTTPS.
func TestKeyfunc(t *testing.T) {
	s, _, _ := testSigner(t)
	tok := assert(t, s, time.Now(), alice)
	parse := func(t *testing.T, kf jwt.Keyfunc) {
		t.Helper()
		var claims struct {
			jwt.RegisteredClaims
			Groups []string `json:"groups"`
		}
		_, err := jwt.ParseWithClaims(tok, &claims, kf,
			jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience("orders"), jwt.WithExpirationRequired())
		if err != nil {
			t.Fatal(err)
		}
		if claims.Subject != alice.Subject || !slices.Equal(claims.Groups, alice.Groups) {
			t.Errorf("claims: got %s %v, want %s %v", claims.Subject, claims.Groups, alice.Subject, alice.Groups)
		}
		if _, err := jwt.Parse(tok, kf, jwt.WithAudience("billing")); err == nil {
			t.Error("parsing for another audience: got nil error")
		}
	}
	t.Run("JSON", func(t *testing.T) {
		kf, err := keyfunc.NewJWKSetJSON(s.JWKS())
		if err != nil {
			t.Fatal(err)
		}
		parse(t, kf.Keyfunc)
	})
	t.Run("HTTPS", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle("GET "+JWKSPath, s.Handler())
		srv := httptest.NewTLSServer(mux)
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{srv.URL + JWKSPath}, keyfunc.Override{
			Client:                    srv.Client(),
			NoErrorReturnFirstHTTPReq: new(false), // fail here if the fetch fails
		})
		if err != nil {
			t.Fatal(err)
		}
		parse(t, kf.KeyfuncCtx(ctx))
	})
}

func BenchmarkAssert(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		s, _, _ := testSigner(b)
		assert(b, s, t0, alice)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Assert(t0, alice); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		s, _, _ := testSigner(b)
		now := t0
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(ReuseFor) // every call finds a stale entry and signs
			if _, err := s.Assert(now, alice); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached/parallel", func(b *testing.B) {
		s, _, _ := testSigner(b)
		assert(b, s, t0, alice)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Assert(t0, alice); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
