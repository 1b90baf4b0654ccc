package jointoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/ca"
)

const testTD = "postern.test"

// testFingerprint is the fingerprint of a real root CA certificate.
func testFingerprint(t testing.TB) string {
	t.Helper()
	c, err := ca.New(spiffeid.RequireTrustDomainFromString(testTD))
	if err != nil {
		t.Fatal(err)
	}
	return Fingerprint(c.Roots()[0])
}

func testKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestMintVerify(t *testing.T) {
	key := testKey(t)
	fp := testFingerprint(t)
	token, minted, err := Mint(key, "db1", testTD, fp, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := minted.ExpiresAt.Sub(minted.IssuedAt); got != DefaultTTL {
		t.Errorf("TTL 0: got lifetime %s, want %s", got, DefaultTTL)
	}
	if len(minted.ID) != 32 {
		t.Errorf("ID: got %q, want 32 hex digits", minted.ID)
	}
	got, err := Verify(&key.PublicKey, token)
	if err != nil {
		t.Fatal(err)
	}
	if got != minted {
		t.Errorf("Verify: got %+v, want %+v", got, minted)
	}
	_, again, err := Mint(key, "db1", testTD, fp, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID == minted.ID {
		t.Error("two tokens share an ID")
	}
	if got := again.ExpiresAt.Sub(again.IssuedAt); got != time.Hour {
		t.Errorf("TTL 1h: got lifetime %s, want 1h", got)
	}
}

func TestVerifyExpired(t *testing.T) {
	key := testKey(t)
	token, _, err := mint(key, "db1", testTD, testFingerprint(t), DefaultTTL, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(&key.PublicKey, token); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify of an expired token: got %v, want ErrExpired", err)
	}
}

func TestVerifyExpiredForgedIsInvalid(t *testing.T) {
	// An expired token under another key must say invalid, not expired: the
	// signature is checked first.
	token, _, err := mint(testKey(t), "db1", testTD, testFingerprint(t), DefaultTTL, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(&testKey(t).PublicKey, token); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify: got %v, want ErrInvalid", err)
	}
}

// signed builds a token with arbitrary header algorithm and claims.
func signed(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyRejects(t *testing.T) {
	key := testKey(t)
	fp := testFingerprint(t)
	token, minted, err := Mint(key, "db1", testTD, fp, 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	wire := wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   "db1",
			Audience:  jwt.ClaimStrings{Audience},
			ExpiresAt: jwt.NewNumericDate(minted.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(minted.IssuedAt),
			ID:        minted.ID,
		},
		TrustDomain: testTD,
		Fingerprint: fp,
	}
	with := func(edit func(*wireClaims)) *wireClaims {
		w := wire
		edit(&w)
		return &w
	}

	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	none := signed(t, jwt.SigningMethodNone, &wire, jwt.UnsafeAllowNoneSignatureType)
	adminJSON, err := json.Marshal(with(func(w *wireClaims) { w.Subject = "admin" }))
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(adminJSON) + "." + parts[2]
	if _, err := Inspect(tampered); err != nil {
		t.Fatalf("the tampered token should be well formed: %v", err)
	}

	tests := map[string]string{
		"other key":              signed(t, jwt.SigningMethodES256, &wire, testKey(t)),
		"alg none":               none,
		"alg none, no signature": parts[0] + "." + strings.Split(none, ".")[1] + ".",
		"HS256 with DER key":     signed(t, jwt.SigningMethodHS256, &wire, pubDER),
		"HS256 with PEM key":     signed(t, jwt.SigningMethodHS256, &wire, pubPEM),
		"ES384":                  signed(t, jwt.SigningMethodES384, &wire, p384),
		"tampered payload":       tampered,
		"signature swapped":      parts[0] + "." + parts[1] + "." + strings.Split(signed(t, jwt.SigningMethodES256, &wire, key), ".")[2][:10] + parts[2][10:],
		"wrong audience":         signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.Audience = jwt.ClaimStrings{"other"} }), key),
		"wrong issuer":           signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.Issuer = "someone" }), key),
		"no exp":                 signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.ExpiresAt = nil }), key),
		"no jti":                 signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.ID = "" }), key),
		"no name":                signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.Subject = "" }), key),
		"name with slash":        signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.Subject = "a/b" }), key),
		"bad fingerprint":        signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.Fingerprint = "abc" }), key),
		"no trust domain":        signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.TrustDomain = "" }), key),
		"issued in the future":   signed(t, jwt.SigningMethodES256, with(func(w *wireClaims) { w.IssuedAt = jwt.NewNumericDate(time.Now().Add(time.Hour)) }), key),
		"empty":                  "",
		"two parts":              parts[0] + "." + parts[1],
		"four parts":             token + ".x",
		"garbage":                "not.a.token",
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(&key.PublicKey, tok)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Verify: got %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := Verify(nil, token); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify with nil key: got %v, want ErrInvalid", err)
	}
}

func TestVerifyTruncated(t *testing.T) {
	key := testKey(t)
	token, _, err := Mint(key, "db1", testTD, testFingerprint(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range token {
		if _, err := Verify(&key.PublicKey, token[:i]); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Verify of the first %d of %d characters: got %v, want ErrInvalid", i, len(token), err)
		}
	}
}

func TestInspect(t *testing.T) {
	key := testKey(t)
	fp := testFingerprint(t)
	token, minted, err := mint(key, "db1", testTD, fp, DefaultTTL, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Inspect(token)
	if err != nil {
		t.Fatal(err)
	}
	if got != minted {
		t.Errorf("Inspect of an expired token: got %+v, want %+v", got, minted)
	}
	none := signed(t, jwt.SigningMethodNone, jwt.MapClaims{"sub": "db1"}, jwt.UnsafeAllowNoneSignatureType)
	for name, tok := range map[string]string{
		"alg none": none,
		"empty":    "",
		"garbage":  "a.b.c",
	} {
		if _, err := Inspect(tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("Inspect %s: got %v, want ErrInvalid", name, err)
		}
	}
}

func TestInspectTruncated(t *testing.T) {
	token, _, err := Mint(testKey(t), "db1", testTD, testFingerprint(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range token {
		if _, err := Inspect(token[:i]); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Inspect of the first %d of %d characters: got %v, want ErrInvalid", i, len(token), err)
		}
	}
}

func FuzzInspect(f *testing.F) {
	token, _, err := Mint(testKey(f), "db1", testTD, testFingerprint(f), 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(token)
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Inspect(tok)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Inspect: got %v, want an error wrapping ErrInvalid", err)
			}
			return
		}
		if c.ID == "" || c.Name == "" || c.TrustDomain == "" || c.Fingerprint == "" {
			t.Errorf("Inspect accepted a token with missing claims: %+v", c)
		}
	})
}

func FuzzVerify(f *testing.F) {
	key := testKey(f)
	token, _, err := Mint(key, "db1", testTD, testFingerprint(f), 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(token)
	f.Fuzz(func(t *testing.T, tok string) {
		if _, err := Verify(&key.PublicKey, tok); err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Errorf("Verify: got %v, want ErrInvalid or ErrExpired", err)
		}
	})
}

func TestMintRejects(t *testing.T) {
	key := testKey(t)
	fp := testFingerprint(t)
	tests := map[string]struct {
		key         *ecdsa.PrivateKey
		name, td    string
		fingerprint string
		ttl         time.Duration
	}{
		"no key":                {nil, "db1", testTD, fp, 0},
		"empty name":            {key, "", testTD, fp, 0},
		"name with slash":       {key, "a/b", testTD, fp, 0},
		"dot name":              {key, "..", testTD, fp, 0},
		"empty trust domain":    {key, "db1", "", fp, 0},
		"trust domain as URI":   {key, "db1", "spiffe://" + testTD, fp, 0},
		"uppercase trust dom.":  {key, "db1", "Postern.test", fp, 0},
		"empty fingerprint":     {key, "db1", testTD, "", 0},
		"short fingerprint":     {key, "db1", testTD, fp[:10], 0},
		"uppercase fingerprint": {key, "db1", testTD, strings.ToUpper(fp), 0},
		"negative TTL":          {key, "db1", testTD, fp, -time.Minute},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, _, err := Mint(tt.key, tt.name, tt.td, tt.fingerprint, tt.ttl); err == nil {
				t.Error("Mint: got nil error, want a refusal")
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	c, err := ca.New(spiffeid.RequireTrustDomainFromString(testTD))
	if err != nil {
		t.Fatal(err)
	}
	root := c.Roots()[0]
	sum := sha256.Sum256(root.Raw)
	if got, want := Fingerprint(root), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("Fingerprint: got %s, want %s", got, want)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "join_key.pem")
	first, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode: got %o, want 600", got)
	}
	second, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Equal(first) {
		t.Error("second load: got a new key, want the first one")
	}
	token, _, err := Mint(first, "db1", testTD, testFingerprint(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(&second.PublicKey, token); err != nil {
		t.Errorf("verifying with the reloaded key: %v", err)
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Error("LoadOrCreateKey of a corrupt file: got nil error")
	}
}
