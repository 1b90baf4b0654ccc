package bearer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/pki"
)

// API key format: APIKeyPrefix, a key id of KeyIDLen lowercase base32
// characters, "_", and a secret of SecretLen random bytes in unpadded
// base64url. For example pk_7dq3m2kd5xna_3q2-…(43 characters).
const (
	APIKeyPrefix = "pk_"
	KeyIDLen     = 12
	SecretLen    = 32
)

// APIKeyLen is the length of every API key string: the prefix, the id,
// "_" and 43 characters of secret.
const APIKeyLen = len(APIKeyPrefix) + KeyIDLen + 1 + (SecretLen*8+5)/6

var (
	keyIDEncoding  = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	secretEncoding = base64.RawURLEncoding.Strict()
)

// KeyStore looks API keys up. store.Store is one.
type KeyStore interface {
	// APIKey returns the key with the given id, or an error wrapping
	// store.ErrNotFound.
	APIKey(ctx context.Context, keyID string) (store.APIKey, error)
}

// NewAPIKey makes a new API key for id with groups, created now and
// expiring after ttl (0: never). It returns the key to hand to the client
// once and the record to store, which holds only the secret's hash.
func NewAPIKey(id spiffeid.ID, groups []string, now time.Time, ttl time.Duration) (string, store.APIKey, error) {
	if k := pki.Kind(id); k != pki.KindUser && k != pki.KindWorkload {
		return "", store.APIKey{}, fmt.Errorf("making API key: %s is not a user or workload identity", id)
	}
	if ttl < 0 {
		return "", store.APIKey{}, fmt.Errorf("making API key: negative ttl %s", ttl)
	}
	idBytes := make([]byte, 8) // 64 bits, of which the id keeps 60
	secret := make([]byte, SecretLen)
	if _, err := rand.Read(idBytes); err != nil {
		return "", store.APIKey{}, fmt.Errorf("making API key: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return "", store.APIKey{}, fmt.Errorf("making API key: %w", err)
	}
	keyID := keyIDEncoding.EncodeToString(idBytes)[:KeyIDLen]
	rec := store.APIKey{
		KeyID:      keyID,
		ID:         id.String(),
		Groups:     append([]string(nil), groups...),
		SecretHash: HashSecret(secret),
		CreatedAt:  now,
	}
	if ttl > 0 {
		rec.ExpiresAt = now.Add(ttl)
	}
	return APIKeyPrefix + keyID + "_" + secretEncoding.EncodeToString(secret), rec, nil
}

// HashSecret is what the store keeps of an API key's secret: its SHA-256.
// A fast hash is right here because the secret is 256 random bits, not a
// password: there is nothing to guess.
func HashSecret(secret []byte) []byte {
	sum := sha256.Sum256(secret)
	return sum[:]
}

// ParseAPIKey splits an API key into its id and its secret. The error says
// what is malformed and never repeats the key.
func ParseAPIKey(key string) (keyID string, secret []byte, err error) {
	rest, ok := strings.CutPrefix(key, APIKeyPrefix)
	if !ok {
		return "", nil, fmt.Errorf("API key does not start with %q", APIKeyPrefix)
	}
	if len(key) != APIKeyLen {
		return "", nil, fmt.Errorf("API key has %d characters, want %d", len(key), APIKeyLen)
	}
	keyID, enc := rest[:KeyIDLen], rest[KeyIDLen:]
	for i := 0; i < len(keyID); i++ {
		if c := keyID[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return "", nil, errors.New("API key id is not lowercase base32")
		}
	}
	enc, ok = strings.CutPrefix(enc, "_")
	if !ok {
		return "", nil, errors.New(`API key has no "_" after its id`)
	}
	secret, err = secretEncoding.DecodeString(enc)
	if err != nil || len(secret) != SecretLen {
		return "", nil, errors.New("API key secret is not base64url of 32 bytes")
	}
	return keyID, secret, nil
}

// apiKeys verifies API keys against a KeyStore, one lookup per request, so
// that a revocation takes effect on the next request.
type apiKeys struct {
	store KeyStore
	td    spiffeid.TrustDomain
	now   func() time.Time
}

func (a apiKeys) verify(ctx context.Context, key string) (Identity, error) {
	if a.store == nil {
		return Identity{}, refusef("API keys are not accepted here")
	}
	keyID, secret, err := ParseAPIKey(key)
	if err != nil {
		return Identity{}, refusef("%s", err)
	}
	rec, err := a.store.APIKey(ctx, keyID)
	if errors.Is(err, store.ErrNotFound) {
		return Identity{}, refusef("unknown API key %s", keyID)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("%w: looking up API key %s: %w", ErrUnauthenticated, keyID, err)
	}
	if subtle.ConstantTimeCompare(HashSecret(secret), rec.SecretHash) != 1 {
		return Identity{}, refusef("wrong secret for API key %s", keyID)
	}
	now := a.now()
	if !rec.RevokedAt.IsZero() {
		return Identity{}, refusef("API key %s was revoked at %s", keyID, rec.RevokedAt.UTC().Format(time.RFC3339))
	}
	if !rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt) {
		return Identity{}, refusef("API key %s expired at %s", keyID, rec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	id, err := spiffeid.FromString(rec.ID)
	if err != nil {
		return Identity{}, refusef("API key %s has a bad SPIFFE ID: %s", keyID, oneLine(err))
	}
	if id.TrustDomain() != a.td {
		return Identity{}, refusef("API key %s is for trust domain %s, not %s", keyID, id.TrustDomain(), a.td)
	}
	if k := pki.Kind(id); k != pki.KindUser && k != pki.KindWorkload {
		return Identity{}, refusef("API key %s is for %s, not a user or workload", keyID, id)
	}
	return Identity{ID: id, Groups: rec.Groups, Method: MethodAPIKey, KeyID: keyID}, nil
}
