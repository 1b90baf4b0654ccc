package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Key files, in the gateway's data directory.
const (
	KeyFile       = "audit_key.pem"     // the private audit key, 0600
	PublicKeyFile = "audit_key.pub.pem" // its public half, for auditors
)

// SealType is the type of the last record of a sealed recording.
const SealType = "recording.seal"

// sealDomain starts every signed seal message, so that an audit key's
// signature cannot be taken for anything else.
const sealDomain = "postern-audit-seal/2"

// SealData is the data of a recording.seal record.
type SealData struct {
	Key string `json:"key"` // KeyID of the public key that verifies Sig
	Sig string `json:"sig"` // hex Ed25519 signature of the seal message
}

// Key signs seals. It is the gateway's audit key.
type Key struct {
	priv ed25519.PrivateKey
	id   string
}

// ID returns the key's id: the first 16 hex digits of the SHA-256 of its
// public key in PKIX form.
func (k *Key) ID() string { return k.id }

// Public returns the key's public half.
func (k *Key) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// NewKey makes a fresh audit key, for tests and first starts.
func NewKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating audit key: %w", err)
	}
	return keyOf(priv)
}

func keyOf(priv ed25519.PrivateKey) (*Key, error) {
	id, err := KeyID(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv, id: id}, nil
}

// KeyID returns the id of a public audit key.
func KeyID(pub ed25519.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding audit public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8]), nil
}

// sealMessage is what a seal signs: the session, the seal's position and
// the hash of the record before it, which commits to every record.
func sealMessage(session string, seq int64, prev, keyID string) []byte {
	b := make([]byte, 0, len(sealDomain)+len(session)+len(prev)+len(keyID)+24)
	b = append(b, sealDomain...)
	b = append(b, '\n')
	b = append(b, session...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '\n')
	b = append(b, prev...)
	b = append(b, '\n')
	return append(b, keyID...)
}

// seal returns the data of the seal record at seq after prev.
func (k *Key) seal(session string, seq int64, prev string) json.RawMessage {
	sig := ed25519.Sign(k.priv, sealMessage(session, seq, prev, k.id))
	data, _ := json.Marshal(SealData{Key: k.id, Sig: hex.EncodeToString(sig)}) // cannot fail
	return data
}

// Keys are the public audit keys a verifier trusts, by KeyID.
type Keys map[string]ed25519.PublicKey

// Add trusts pub.
func (ks Keys) Add(pub ed25519.PublicKey) error {
	id, err := KeyID(pub)
	if err != nil {
		return err
	}
	ks[id] = pub
	return nil
}

// verifySeal checks the seal record at seq after prev.
func (ks Keys) verifySeal(session string, seq int64, prev string, data []byte) error {
	var d SealData
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("seal is malformed: %v", err)
	}
	pub, ok := ks[d.Key]
	if !ok {
		return fmt.Errorf("sealed with audit key %q, which is not trusted", d.Key)
	}
	sig, err := hex.DecodeString(d.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("seal signature is malformed")
	}
	if !ed25519.Verify(pub, sealMessage(session, seq, prev, d.Key), sig) {
		return errors.New("seal signature does not verify: the records were changed or re-hashed after sealing")
	}
	return nil
}

// LoadOrCreateKey loads the audit key at dir/KeyFile, creating it (0600)
// and its public half dir/PublicKeyFile (0644) on first use. A key file that
// others may read is refused.
func LoadOrCreateKey(dir string) (*Key, error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("loading audit key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("loading audit key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("loading audit key %s: mode %04o lets others read it, want 0600", path, perm)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("loading audit key %s: no PRIVATE KEY PEM block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("loading audit key %s: %w", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("loading audit key %s: not an Ed25519 key", path)
	}
	k, err := keyOf(priv)
	if err != nil {
		return nil, err
	}
	// The public half is for auditors; put it back if it went missing.
	if _, err := os.Stat(filepath.Join(dir, PublicKeyFile)); errors.Is(err, fs.ErrNotExist) {
		if err := writePublic(dir, k.Public()); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func createKey(dir string) (*Key, error) {
	k, err := NewKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("encoding audit key: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, KeyFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating audit key: %w", err)
	}
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("creating audit key: %w", err)
	}
	if err := writePublic(dir, k.Public()); err != nil {
		return nil, err
	}
	return k, nil
}

func writePublic(dir string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("encoding audit public key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, PublicKeyFile), data, 0o644); err != nil {
		return fmt.Errorf("writing audit public key: %w", err)
	}
	return nil
}

// LoadKeys reads the public audit keys in the PEM file at path (one or
// more PUBLIC KEY blocks: an auditor may trust old keys next to the
// current one).
func LoadKeys(path string) (Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading audit public key: %w", err)
	}
	ks := Keys{}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("loading audit public key %s: %w", path, err)
		}
		pub, ok := parsed.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("loading audit public key %s: not an Ed25519 key", path)
		}
		if err := ks.Add(pub); err != nil {
			return nil, err
		}
	}
	if len(ks) == 0 {
		return nil, fmt.Errorf("loading audit public key %s: no PUBLIC KEY PEM block", path)
	}
	return ks, nil
}
