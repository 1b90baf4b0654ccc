package assertion

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/postern/postern/pki"
)

// JWKSPath is where the gateway serves Signer.Handler.
const JWKSPath = "/.well-known/postern/jwks.json"

// KeyFile is the suggested name of the signing key in a data directory.
const KeyFile = "assertion_key.pem"

const (
	// Lifetime is exp − iat of every token.
	Lifetime = 5 * time.Minute
	// ReuseFor is how long after iat a cached token is handed out again.
	ReuseFor = time.Minute
	// RetainPrevious is how long the JWKS keeps a key after Rotate.
	RetainPrevious = 10 * time.Minute
	// MaxCached bounds the number of cached tokens.
	MaxCached = 4096
)

const alg = "ES256"

// Claims are what a Signer asserts about one caller of one service.
type Claims struct {
	Subject  string   // the caller's SPIFFE ID
	Audience string   // the service name
	Groups   []string // the caller's groups
}

// wireClaims is the JWT payload.
type wireClaims struct {
	jwt.RegisteredClaims
	Groups []string `json:"groups"`
}

// Signer signs assertions and publishes the keys that check them. Make one
// with LoadOrCreate; it is safe for concurrent use.
type Signer struct {
	// Issuer is the iss claim of every token: the gateway's SPIFFE ID,
	// spiffe://TD/gateway/NAME. Set it before the first Assert and leave
	// it; Assert fails while it is empty.
	Issuer string

	mu    sync.Mutex // serializes Rotate
	keys  atomic.Pointer[keyring]
	cache cache
	now   func() time.Time // the clock of JWKS and Rotate
}

// signingKey is a private key with its JWK.
type signingKey struct {
	priv *ecdsa.PrivateKey
	kid  string
	jwk  jwkset.JWKMarshal // public parts only
}

// keyring is the current key and the previous ones still published.
type keyring struct {
	cur  *signingKey
	prev []retiredKey
}

type retiredKey struct {
	key   *signingKey
	until time.Time
}

// LoadOrCreate returns a Signer with the ECDSA P-256 key kept at path
// (PKCS#8 PEM), creating it with mode 0600 (and its directory with 0700)
// when absent. A key file that group or others may read is refused.
func LoadOrCreate(path string) (*Signer, error) {
	priv, err := loadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	return newSigner(priv, time.Now)
}

func newSigner(priv *ecdsa.PrivateKey, now func() time.Time) (*Signer, error) {
	k, err := newSigningKey(priv)
	if err != nil {
		return nil, err
	}
	s := &Signer{now: now}
	s.keys.Store(&keyring{cur: k})
	return s, nil
}

func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("loading assertion key: %w", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("loading assertion key %s: mode %04o lets others read it, want 0600", path, perm)
		}
		key, err := pki.ParseKey(data)
		if err != nil {
			return nil, fmt.Errorf("loading assertion key %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loading assertion key: %w", err)
	}
	key, err := writeNewKey(path)
	if err != nil {
		return nil, fmt.Errorf("creating assertion key: %w", err)
	}
	return key, nil
}

// writeNewKey generates a key and writes it to path, replacing any file
// there atomically.
func writeNewKey(path string) (*ecdsa.PrivateKey, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(path, keyPEM, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

func newSigningKey(priv *ecdsa.PrivateKey) (*signingKey, error) {
	if err := pki.CheckPublicKey(&priv.PublicKey); err != nil {
		return nil, fmt.Errorf("loading assertion key: %w", err)
	}
	j, err := jwkset.NewJWKFromKey(&priv.PublicKey, jwkset.JWKOptions{})
	if err != nil {
		return nil, fmt.Errorf("encoding assertion key as JWK: %w", err)
	}
	m := j.Marshal()
	kid := thumbprint(m)
	j, err = jwkset.NewJWKFromKey(&priv.PublicKey, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256, KID: kid, USE: jwkset.UseSig},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding assertion key as JWK: %w", err)
	}
	return &signingKey{priv: priv, kid: kid, jwk: j.Marshal()}, nil
}

// thumbprint returns the RFC 7638 thumbprint of an EC public JWK: the
// base64url SHA-256 of its required members, in lexicographic order and
// without whitespace.
func thumbprint(m jwkset.JWKMarshal) string {
	canon := `{"crv":"` + string(m.CRV) + `","kty":"` + string(m.KTY) + `","x":"` + m.X + `","y":"` + m.Y + `"}`
	sum := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// KeyID returns the kid of the current signing key.
func (s *Signer) KeyID() string { return s.keys.Load().cur.kid }

// Assert returns a signed token for c, issued at now. It hands out the
// token it signed for the same subject, audience and groups (in the same
// order) while that one is less than ReuseFor old; a token it returns
// always has more than Lifetime − ReuseFor left.
func (s *Signer) Assert(now time.Time, c Claims) (string, error) {
	if s.Issuer == "" {
		return "", errors.New("asserting identity: the signer has no Issuer")
	}
	if c.Subject == "" {
		return "", errors.New("asserting identity: no subject")
	}
	if c.Audience == "" {
		return "", errors.New("asserting identity: no audience")
	}
	k := s.keys.Load().cur
	var buf [256]byte
	ck := appendCacheKey(buf[:0], c)
	if tok, ok := s.cache.get(ck, k, now); ok {
		return tok, nil
	}
	tok, iat, err := s.sign(k, now, c)
	if err != nil {
		return "", fmt.Errorf("asserting identity: %w", err)
	}
	s.cache.put(ck, entry{token: tok, iat: iat, key: k}, now)
	return tok, nil
}

func (s *Signer) sign(k *signingKey, now time.Time, c Claims) (string, time.Time, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", time.Time{}, err
	}
	iat := now.Truncate(time.Second) // JWT times have second precision
	groups := c.Groups
	if groups == nil {
		groups = []string{}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.Issuer,
			Subject:   c.Subject,
			Audience:  jwt.ClaimStrings{c.Audience},
			IssuedAt:  jwt.NewNumericDate(iat),
			ExpiresAt: jwt.NewNumericDate(iat.Add(Lifetime)),
			ID:        hex.EncodeToString(id[:]),
		},
		Groups: groups,
	})
	t.Header["kid"] = k.kid
	tok, err := t.SignedString(k.priv)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, iat, nil
}

// Rotate replaces the key at path with a new one and signs with it from
// now on. The JWKS keeps the previous public key for RetainPrevious, so
// tokens signed before still verify until they expire. New tokens name the
// new key at once, so an upstream that caches the JWKS must fetch it again
// when a token names a kid it does not know (keyfunc does). Rotate writes
// the file first: when that fails, nothing changes.
func (s *Signer) Rotate(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	priv, err := writeNewKey(path)
	if err != nil {
		return fmt.Errorf("rotating assertion key: %w", err)
	}
	k, err := newSigningKey(priv)
	if err != nil {
		return fmt.Errorf("rotating assertion key: %w", err)
	}
	now := s.now()
	old := s.keys.Load()
	next := &keyring{cur: k, prev: []retiredKey{{key: old.cur, until: now.Add(RetainPrevious)}}}
	for _, r := range old.prev {
		if now.Before(r.until) {
			next.prev = append(next.prev, r)
		}
	}
	s.keys.Store(next)
	s.cache.clear() // entries name their key, so this only frees memory
	return nil
}

// JWKS returns the public keys as a JSON Web Key Set: the current key
// first, then the previous ones that Rotate still retains.
func (s *Signer) JWKS() []byte {
	ring := s.keys.Load()
	now := s.now()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{ring.cur.jwk}}
	for _, r := range ring.prev {
		if now.Before(r.until) {
			set.Keys = append(set.Keys, r.key.jwk)
		}
	}
	b, err := json.Marshal(set)
	if err != nil { // strings only: cannot happen
		panic(fmt.Sprintf("encoding JWKS: %v", err))
	}
	return b
}

// Handler serves JWKS to GET and HEAD, as application/jwk-set+json that
// clients may cache for five minutes. Mount it at JWKSPath.
func (s *Signer) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body := s.JWKS()
		h := w.Header()
		h.Set("Content-Type", "application/jwk-set+json")
		h.Set("Cache-Control", "max-age=300")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}
