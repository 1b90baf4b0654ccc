package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/gateway/store/sqlite"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/ca"
	"github.com/postern/postern/pki/jointoken"
)

// Files and folders under a gateway's data directory.
const (
	caDir         = "ca"
	bundleFile    = "bundle.pem"
	tokenKeyFile  = "jointoken_key.pem"
	storeFile     = "postern.db"
	recordingsDir = "recordings"
	adminDir      = "admin"
)

// DataDir is an opened gateway data directory: what both the running
// gateway and the admin commands on its host need.
type DataDir struct {
	Path string
	// CA holds the trust roots; Issuer signs SVIDs. With the embedded CA
	// both are the same; an external step-ca would be another pki.Issuer.
	CA       *ca.CA
	Issuer   pki.Issuer
	TokenKey *ecdsa.PrivateKey
	Store    store.Store
}

// OpenDataDir opens dir, creating the CA, join-token key, store, bundle,
// recordings folder and admin identity the first time. A later open reuses
// them; td must match the trust domain the CA was made for.
func OpenDataDir(ctx context.Context, dir string, td spiffeid.TrustDomain) (*DataDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	authority, err := ca.LoadOrCreate(filepath.Join(dir, caDir), td)
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	key, err := jointoken.LoadOrCreateKey(filepath.Join(dir, tokenKeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading join-token key: %w", err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, bundleFile), pki.EncodeCerts(authority.Roots()), 0o644); err != nil {
		return nil, fmt.Errorf("writing bundle: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, recordingsDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating recordings dir: %w", err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, storeFile))
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	d := &DataDir{Path: dir, CA: authority, Issuer: authority, TokenKey: key, Store: st}
	if err := d.ensureAdmin(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return d, nil
}

// OpenExistingDataDir opens a data directory that a gateway has already
// created, reading its trust domain from the CA. Admin commands use it.
func OpenExistingDataDir(ctx context.Context, dir string) (*DataDir, error) {
	td, err := TrustDomainOf(dir)
	if err != nil {
		return nil, err
	}
	return OpenDataDir(ctx, dir, td)
}

// OpenIndex opens the store of a data directory that a gateway has already
// used, for reading only (sqlite.OpenReadOnly): the audit commands' index
// of sessions. It changes nothing in the directory, which may be
// read-only.
func OpenIndex(ctx context.Context, dir string) (*sqlite.DB, error) {
	if _, err := TrustDomainOf(dir); err != nil {
		return nil, err
	}
	return sqlite.OpenReadOnly(ctx, filepath.Join(dir, storeFile))
}

// RecordingsDir is where the gateway of data directory dir writes its
// recordings.
func RecordingsDir(dir string) string { return filepath.Join(dir, recordingsDir) }

// TrustDomainOf reads the trust domain of the CA in a data directory.
func TrustDomainOf(dir string) (spiffeid.TrustDomain, error) {
	data, err := os.ReadFile(filepath.Join(dir, bundleFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return spiffeid.TrustDomain{}, fmt.Errorf("reading data dir %s: no gateway has been started with it (no %s)", dir, bundleFile)
		}
		return spiffeid.TrustDomain{}, fmt.Errorf("reading bundle: %w", err)
	}
	certs, err := pki.ParseCerts(data)
	if err != nil || len(certs) == 0 {
		return spiffeid.TrustDomain{}, fmt.Errorf("reading bundle %s: no certificate", filepath.Join(dir, bundleFile))
	}
	for _, u := range certs[0].URIs {
		if id, err := spiffeid.FromURI(u); err == nil {
			return id.TrustDomain(), nil
		}
	}
	return spiffeid.TrustDomain{}, fmt.Errorf("reading bundle: root has no SPIFFE trust domain URI")
}

// Close closes the store.
func (d *DataDir) Close() error { return d.Store.Close() }

// BundlePath is the file of trust roots that clients pin.
func (d *DataDir) BundlePath() string { return filepath.Join(d.Path, bundleFile) }

// RecordingsPath is where session recordings are written.
func (d *DataDir) RecordingsPath() string { return RecordingsDir(d.Path) }

// MintToken makes a single-use join token for the agent called name.
func (d *DataDir) MintToken(name string, ttl time.Duration) (string, jointoken.Claims, error) {
	if _, err := spiffeid.FromSegments(d.CA.TrustDomain(), "agent", name); err != nil {
		return "", jointoken.Claims{}, fmt.Errorf("checking agent name %q: %w", name, err)
	}
	if ttl <= 0 {
		ttl = jointoken.DefaultTTL
	}
	return jointoken.Mint(d.TokenKey, name, d.CA.TrustDomain().Name(), jointoken.Fingerprint(d.CA.Roots()[0]), ttl)
}

// Issue issues an SVID for r and records its serial in the store. When r
// carries no public key, a new key is made and returned in the SVID.
func (d *DataDir) Issue(ctx context.Context, r pki.IssueRequest) (*x509svid.SVID, error) {
	var key *ecdsa.PrivateKey
	if r.PublicKey == nil {
		k, err := pki.GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("generating key: %w", err)
		}
		key, r.PublicKey = k, k.Public()
	}
	svid, err := d.Issuer.Issue(ctx, r)
	if err != nil {
		return nil, err
	}
	leaf := svid.Certificates[0]
	if err := d.Store.RecordIssued(ctx, store.Issued{
		Serial:   serialHex(leaf.SerialNumber),
		ID:       svid.ID.String(),
		Kind:     pki.Kind(svid.ID),
		NotAfter: leaf.NotAfter,
		IssuedAt: time.Now(),
	}); err != nil {
		return nil, fmt.Errorf("recording issued serial: %w", err)
	}
	if key != nil {
		svid = pki.WithKey(svid, key)
	}
	return svid, nil
}

// ensureAdmin issues the admin identity (spiffe://TD/user/admin in group
// admins) into DATA/admin when it is missing or past half its life.
func (d *DataDir) ensureAdmin(ctx context.Context) error {
	dir := filepath.Join(d.Path, adminDir)
	if svid, _, err := pki.ReadFiles(dir); err == nil {
		leaf := svid.Certificates[0]
		if time.Until(leaf.NotAfter) > leaf.NotAfter.Sub(leaf.NotBefore)/2 {
			return nil
		}
	}
	id, err := spiffeid.FromSegments(d.CA.TrustDomain(), "user", "admin")
	if err != nil {
		return fmt.Errorf("making admin id: %w", err)
	}
	svid, err := d.Issue(ctx, pki.IssueRequest{ID: id, Groups: []string{"admins"}})
	if err != nil {
		return fmt.Errorf("issuing admin identity: %w", err)
	}
	if err := pki.WriteFiles(dir, svid, d.CA.Roots()); err != nil {
		return fmt.Errorf("writing admin identity: %w", err)
	}
	return nil
}

func serialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }

// StatelessResetKey is the QUIC stateless reset key of the gateway: derived
// from the join-token key, so that it stays the same across restarts
// without a file of its own (tunnel.Config.StatelessResetKey).
func (d *DataDir) StatelessResetKey() (*[32]byte, error) {
	secret, err := d.TokenKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("deriving the QUIC stateless reset key: %w", err)
	}
	k, err := hkdf.Key(sha256.New, secret, nil, "postern quic stateless reset", 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the QUIC stateless reset key: %w", err)
	}
	return (*[32]byte)(k), nil
}
