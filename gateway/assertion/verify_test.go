package assertion

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// forge signs claims with any method and key, naming kid in the header
// when it is not empty.
func forge(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// good returns the claims that Assert would sign at t0, changed by f.
func good(f func(*wireClaims)) *wireClaims {
	wc := &wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    testIssuer,
			Subject:   alice.Subject,
			Audience:  jwt.ClaimStrings{"orders"},
			IssuedAt:  jwt.NewNumericDate(t0),
			ExpiresAt: jwt.NewNumericDate(t0.Add(Lifetime)),
			ID:        "0123456789abcdef0123456789abcdef",
		},
		Groups: alice.Groups,
	}
	if f != nil {
		f(wc)
	}
	return wc
}

func TestVerifyRejects(t *testing.T) {
	s, _, _ := testSigner(t)
	key, kid := s.keys.Load().cur.priv, s.KeyID()
	jwks := s.JWKS()
	tok := assert(t, s, t0, alice)
	parts := strings.Split(tok, ".")

	other, _, _ := testSigner(t)
	otherKey := other.keys.Load().cur.priv

	var payload map[string]any
	decodeSegment(t, parts[1], &payload)
	payload["sub"] = "spiffe://postern.test/user/admin"
	adminJSON, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(adminJSON) + "." + parts[2]

	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	none := forge(t, jwt.SigningMethodNone, good(nil), jwt.UnsafeAllowNoneSignatureType, kid)

	tests := map[string]struct {
		token, audience string
		now             time.Time
		want            error
	}{
		"wrong audience":            {tok, "billing", t0, ErrInvalid},
		"audience prefix":           {tok, "order", t0, ErrInvalid},
		"expired":                   {tok, "orders", t0.Add(Lifetime + Leeway + time.Second), ErrExpired},
		"issued in the future":      {tok, "orders", t0.Add(-Leeway - time.Second), ErrInvalid},
		"other key, own kid":        {forge(t, jwt.SigningMethodES256, good(nil), otherKey, other.KeyID()), "orders", t0, ErrInvalid},
		"other key, our kid":        {forge(t, jwt.SigningMethodES256, good(nil), otherKey, kid), "orders", t0, ErrInvalid},
		"other key, expired":        {forge(t, jwt.SigningMethodES256, good(nil), otherKey, kid), "orders", t0.Add(time.Hour), ErrInvalid},
		"tampered payload":          {tampered, "orders", t0, ErrInvalid},
		"signature of another":      {parts[0] + "." + parts[1] + "." + strings.Split(assert(t, s, t0, Claims{Subject: "x", Audience: "orders"}), ".")[2], "orders", t0, ErrInvalid},
		"no signature":              {parts[0] + "." + parts[1] + ".", "orders", t0, ErrInvalid},
		"alg none":                  {none, "orders", t0, ErrInvalid},
		"alg none, our header":      {parts[0] + "." + strings.Split(none, ".")[1] + ".", "orders", t0, ErrInvalid},
		"HS256 with the JWKS":       {forge(t, jwt.SigningMethodHS256, good(nil), jwks, kid), "orders", t0, ErrInvalid},
		"HS256 with DER public key": {forge(t, jwt.SigningMethodHS256, good(nil), pubDER, kid), "orders", t0, ErrInvalid},
		"HS256 with PEM public key": {forge(t, jwt.SigningMethodHS256, good(nil), pubPEM, kid), "orders", t0, ErrInvalid},
		"ES384":                     {forge(t, jwt.SigningMethodES384, good(nil), p384, kid), "orders", t0, ErrInvalid},
		"no kid":                    {forge(t, jwt.SigningMethodES256, good(nil), key, ""), "orders", t0, ErrInvalid},
		"unknown kid":               {forge(t, jwt.SigningMethodES256, good(nil), key, "nope"), "orders", t0, ErrInvalid},
		"lifetime of an hour":       {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.ExpiresAt = jwt.NewNumericDate(t0.Add(time.Hour)) }), key, kid), "orders", t0, ErrInvalid},
		"exp before iat":            {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.IssuedAt = jwt.NewNumericDate(t0.Add(Lifetime + time.Second)) }), key, kid), "orders", t0.Add(Lifetime), ErrInvalid},
		"no exp":                    {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.ExpiresAt = nil }), key, kid), "orders", t0, ErrInvalid},
		"no iat":                    {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.IssuedAt = nil }), key, kid), "orders", t0, ErrInvalid},
		"no sub":                    {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.Subject = "" }), key, kid), "orders", t0, ErrInvalid},
		"no iss":                    {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.Issuer = "" }), key, kid), "orders", t0, ErrInvalid},
		"no jti":                    {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.ID = "" }), key, kid), "orders", t0, ErrInvalid},
		"no aud":                    {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.Audience = nil }), key, kid), "orders", t0, ErrInvalid},
		"two audiences":             {forge(t, jwt.SigningMethodES256, good(func(w *wireClaims) { w.Audience = jwt.ClaimStrings{"orders", "billing"} }), key, kid), "orders", t0, ErrInvalid},
		"no audience to check":      {tok, "", t0, ErrInvalid},
		"empty":                     {"", "orders", t0, ErrInvalid},
		"two parts":                 {parts[0] + "." + parts[1], "orders", t0, ErrInvalid},
		"four parts":                {tok + ".x", "orders", t0, ErrInvalid},
		"garbage":                   {"not.a.token", "orders", t0, ErrInvalid},
		"padded base64":             {parts[0] + "." + parts[1] + "==." + parts[2], "orders", t0, ErrInvalid},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := Verify(tt.token, jwks, tt.audience, tt.now)
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify: got %+v, %v, want an error wrapping %v", c, err, tt.want)
			}
		})
	}
}

// TestVerifyLeeway: a gateway clock a little ahead or behind is tolerated.
func TestVerifyLeeway(t *testing.T) {
	s, _, _ := testSigner(t)
	tok := assert(t, s, t0, alice)
	for name, now := range map[string]time.Time{
		"upstream behind":      t0.Add(-Leeway),
		"just before exp":      t0.Add(Lifetime - time.Second),
		"just after exp, skew": t0.Add(Lifetime + Leeway - time.Second),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Verify(tok, s.JWKS(), "orders", now); err != nil {
				t.Errorf("Verify: got %v, want success", err)
			}
		})
	}
}

func TestVerifyTruncated(t *testing.T) {
	s, _, _ := testSigner(t)
	tok := assert(t, s, t0, alice)
	v, err := NewVerifier(s.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	for i := range tok {
		if _, err := v.Verify(tok[:i], "orders", t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Verify of the first %d of %d characters: got %v, want ErrInvalid", i, len(tok), err)
		}
	}
}

func TestNewVerifier(t *testing.T) {
	s, _, _ := testSigner(t)
	ours := strings.TrimSuffix(strings.TrimPrefix(string(s.JWKS()), `{"keys":[`), `]}`)
	rsa := `{"kty":"RSA","kid":"r1","use":"sig","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}`
	tests := map[string]struct {
		jwks    string
		wantErr bool
	}{
		"ours":                 {jwks: string(s.JWKS())},
		"ours among others":    {jwks: `{"keys":[` + rsa + `,` + ours + `]}`},
		"no alg, no use":       {jwks: `{"keys":[` + strings.NewReplacer(`"alg":"ES256",`, ``, `"use":"sig",`, ``).Replace(ours) + `]}`},
		"not JSON":             {jwks: "keys", wantErr: true},
		"no keys":              {jwks: `{"keys":[]}`, wantErr: true},
		"only RSA":             {jwks: `{"keys":[` + rsa + `]}`, wantErr: true},
		"encryption key":       {jwks: `{"keys":[` + strings.Replace(ours, `"use":"sig"`, `"use":"enc"`, 1) + `]}`, wantErr: true},
		"other alg":            {jwks: `{"keys":[` + strings.Replace(ours, `"alg":"ES256"`, `"alg":"ES384"`, 1) + `]}`, wantErr: true},
		"no kid":               {jwks: `{"keys":[` + strings.Replace(ours, `"kid":"`+s.KeyID()+`",`, ``, 1) + `]}`, wantErr: true},
		"point not on curve":   {jwks: `{"keys":[` + strings.Replace(ours, `"x":"`, `"x":"AA`, 1) + `]}`, wantErr: true},
		"P-384 claiming P-256": {jwks: `{"keys":[` + strings.Replace(ours, `"crv":"P-256"`, `"crv":"P-384"`, 1) + `]}`, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := NewVerifier([]byte(tt.jwks))
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("NewVerifier(%s): got error %v, want error %v", tt.jwks, err, tt.wantErr)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	s, _, _ := testSigner(b)
	tok := assert(b, s, t0, alice)
	jwks := s.JWKS()
	b.Run("Verifier", func(b *testing.B) {
		v, err := NewVerifier(jwks)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok, "orders", t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("with JWKS parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Verify(tok, jwks, "orders", t0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
