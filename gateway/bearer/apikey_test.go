package bearer

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/gateway/store/sqlite"
)

func openStore(t testing.TB) *sqlite.DB {
	t.Helper()
	d, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "postern.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// createKey makes a key for id, changes its record with mod and stores it.
func createKey(t testing.TB, d *sqlite.DB, id string, mod func(*store.APIKey)) string {
	t.Helper()
	key, rec, err := NewAPIKey(spiffeid.RequireFromString(id), []string{"deployers"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&rec)
	}
	if err := d.CreateAPIKey(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key
}

func TestNewAPIKey(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://postern.local/workload/ci")
	now := time.Now()
	key, rec, err := NewAPIKey(id, []string{"a", "b"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != APIKeyLen || !strings.HasPrefix(key, "pk_"+rec.KeyID+"_") {
		t.Fatalf("got key of %d characters starting %.16q, want %d starting pk_%s_", len(key), key, APIKeyLen, rec.KeyID)
	}
	keyID, secret, err := ParseAPIKey(key)
	if err != nil {
		t.Fatalf("ParseAPIKey of a new key: %v", err)
	}
	if keyID != rec.KeyID || !slices.Equal(HashSecret(secret), rec.SecretHash) {
		t.Fatalf("parsed id %s and hash %x, want %s and %x", keyID, HashSecret(secret), rec.KeyID, rec.SecretHash)
	}
	if strings.Contains(string(rec.SecretHash), string(secret)) {
		t.Fatal("the record holds the secret")
	}
	if rec.ID != id.String() || !slices.Equal(rec.Groups, []string{"a", "b"}) || !rec.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("got record %+v", rec)
	}
	key2, rec2, _ := NewAPIKey(id, nil, now, 0)
	if key2 == key || rec2.KeyID == rec.KeyID || !rec2.ExpiresAt.IsZero() {
		t.Fatalf("second key: got %s expiring %s, want a different key that never expires", rec2.KeyID, rec2.ExpiresAt)
	}
	for _, bad := range []string{"spiffe://postern.local/agent/db1", "spiffe://postern.local/gateway/gw", "spiffe://postern.local"} {
		if _, _, err := NewAPIKey(spiffeid.RequireFromString(bad), nil, now, 0); err == nil {
			t.Errorf("NewAPIKey(%s): got nil error, want one", bad)
		}
	}
}

func TestVerifyAPIKey(t *testing.T) {
	ctx := context.Background()
	d := openStore(t)
	a, err := New(ctx, Config{TrustDomain: testTD, APIKeys: d})
	if err != nil {
		t.Fatal(err)
	}
	valid := createKey(t, d, "spiffe://postern.local/workload/ci", nil)
	keyID, _, _ := ParseAPIKey(valid)
	wrongSecret := func() string {
		other := createKey(t, d, "spiffe://postern.local/workload/other", nil)
		return valid[:len(APIKeyPrefix)+KeyIDLen+1] + other[len(APIKeyPrefix)+KeyIDLen+1:]
	}()
	unknown, _, _ := NewAPIKey(spiffeid.RequireFromString("spiffe://postern.local/workload/ci"), nil, time.Now(), 0)
	expired := createKey(t, d, "spiffe://postern.local/workload/ci", func(k *store.APIKey) {
		k.ExpiresAt = time.Now().Add(-time.Minute)
	})
	revoked := createKey(t, d, "spiffe://postern.local/workload/ci", func(k *store.APIKey) {
		k.RevokedAt = time.Now().Add(-time.Minute)
	})
	otherTD := createKey(t, d, "spiffe://elsewhere.test/workload/ci", nil)
	agent := createKey(t, d, "spiffe://postern.local/workload/ci", func(k *store.APIKey) {
		k.ID = "spiffe://postern.local/agent/db1"
	})

	tests := map[string]struct {
		key  string
		want string // "" means accepted
	}{
		"valid":                     {key: valid},
		"wrong secret":              {key: wrongSecret, want: "wrong secret for API key " + keyID},
		"unknown id":                {key: unknown, want: "unknown API key"},
		"expired":                   {key: expired, want: "expired at"},
		"revoked":                   {key: revoked, want: "was revoked at"},
		"other trust domain":        {key: otherTD, want: "is for trust domain elsewhere.test"},
		"stored for an agent":       {key: agent, want: "not a user or workload"},
		"truncated":                 {key: valid[:len(valid)-1], want: "has 58 characters, want 59"},
		"upper-case id":             {key: "pk_" + strings.ToUpper(valid[3:15]) + valid[15:], want: "not lowercase base32"},
		"no separator":              {key: valid[:15] + "-" + valid[16:], want: `no "_" after its id`},
		"secret not base64url":      {key: valid[:16] + "+" + valid[17:], want: "not base64url"},
		"secret with trailing bits": {key: valid[:len(valid)-1] + flipLowBits(valid[len(valid)-1]), want: "not base64url"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := a.Authenticate(ctx, tc.key)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want an identity", err)
				}
				if got.ID.String() != "spiffe://postern.local/workload/ci" || got.Method != MethodAPIKey ||
					got.KeyID != keyID || got.Issuer != "" || !slices.Equal(got.Groups, []string{"deployers"}) {
					t.Fatalf("got %+v", got)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal containing %q", err, tc.want)
			}
			if secret := tc.key[len(APIKeyPrefix)+KeyIDLen+1:]; strings.Contains(err.Error(), secret) {
				t.Fatalf("got %q, which contains the secret", err)
			}
		})
	}
}

// flipLowBits returns base64url character c with its two lowest bits
// changed: in the last character of 32 bytes those bits are padding, and
// a lenient decoder would accept the result as the same secret.
func flipLowBits(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

// TestRevokeTakesEffect: a key works, is revoked through another handle on
// the same database (as `postern apikey revoke` does), and the very next
// request is refused.
func TestRevokeTakesEffect(t *testing.T) {
	ctx := context.Background()
	d := openStore(t)
	admin, err := sqlite.Open(ctx, d.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	a, err := New(ctx, Config{TrustDomain: testTD, APIKeys: d})
	if err != nil {
		t.Fatal(err)
	}
	key := createKey(t, d, "spiffe://postern.local/user/ann", nil)
	keyID, _, _ := ParseAPIKey(key)
	if _, err := a.Authenticate(ctx, key); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := admin.RevokeAPIKey(ctx, keyID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, key); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after revocation: got %v, want a refusal saying revoked", err)
	}
}

// brokenStore fails every lookup.
type brokenStore struct{}

func (brokenStore) APIKey(context.Context, string) (store.APIKey, error) {
	return store.APIKey{}, errors.New("disk on fire")
}

func TestAPIKeyStoreFailure(t *testing.T) {
	a, err := New(context.Background(), Config{TrustDomain: testTD, APIKeys: brokenStore{}})
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := NewAPIKey(spiffeid.RequireFromString("spiffe://postern.local/user/ann"), nil, time.Now(), 0)
	_, err = a.Authenticate(context.Background(), key)
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("got %v, want a refusal carrying the store's error", err)
	}
}

func TestAPIKeysOff(t *testing.T) {
	a, err := New(context.Background(), Config{TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := NewAPIKey(spiffeid.RequireFromString("spiffe://postern.local/user/ann"), nil, time.Now(), 0)
	if _, err := a.Authenticate(context.Background(), key); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "not accepted") {
		t.Fatalf("got %v, want a refusal saying API keys are not accepted", err)
	}
}

func validKey(t testing.TB) string {
	key, _, err := NewAPIKey(spiffeid.RequireFromString("spiffe://postern.local/workload/ci"), nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestParseAPIKeyTruncated: every proper prefix of a valid key is refused.
func TestParseAPIKeyTruncated(t *testing.T) {
	key := validKey(t)
	for n := range len(key) {
		if _, _, err := ParseAPIKey(key[:n]); err == nil {
			t.Fatalf("prefix of %d characters: got nil error, want one", n)
		}
	}
	if _, _, err := ParseAPIKey(key + "A"); err == nil {
		t.Fatal("key with an extra character: got nil error, want one")
	}
}

func FuzzParseAPIKey(f *testing.F) {
	f.Add(validKey(f))
	f.Add("pk_")
	f.Add("pk_aaaaaaaaaaaa_")
	f.Add("pk_aaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("pk_aaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB")
	f.Add("pk_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		keyID, secret, err := ParseAPIKey(s)
		if err != nil {
			if keyID != "" || secret != nil {
				t.Fatalf("error %v with id %q and a secret", err, keyID)
			}
			return
		}
		if len(s) != APIKeyLen || len(keyID) != KeyIDLen || len(secret) != SecretLen {
			t.Fatalf("accepted %q: id %q, %d-byte secret", s, keyID, len(secret))
		}
		// Parsing is exact: the key is the only spelling of its id and secret.
		if again := APIKeyPrefix + keyID + "_" + secretEncoding.EncodeToString(secret); again != s {
			t.Fatalf("accepted %q, which re-encodes as %q", s, again)
		}
	})
}
