package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File names of an SVID directory (the spiffe-helper convention).
const (
	SVIDFile   = "svid.pem"        // leaf then intermediates
	KeyFile    = "svid_key.pem"    // PKCS#8 private key, mode 0600
	BundleFile = "svid_bundle.pem" // trust roots
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// WriteFiles writes svid (which must have a private key) and the trust roots
// to dir in the spiffe-helper layout. It creates dir with mode 0700 if needed
// and replaces each file atomically; the key file gets mode 0600.
func WriteFiles(dir string, svid *x509svid.SVID, roots []*x509.Certificate) error {
	if svid == nil || len(svid.Certificates) == 0 {
		return errors.New("writing SVID files: SVID has no certificates")
	}
	if svid.PrivateKey == nil {
		return errors.New("writing SVID files: SVID has no private key")
	}
	if len(roots) == 0 {
		return errors.New("writing SVID files: no trust roots")
	}
	keyPEM, err := EncodeKey(svid.PrivateKey)
	if err != nil {
		return fmt.Errorf("writing SVID files: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing SVID files: %w", err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{KeyFile, keyPEM, 0o600},
		{SVIDFile, EncodeCerts(svid.Certificates), 0o644},
		{BundleFile, EncodeCerts(roots), 0o644},
	}
	for _, f := range files {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("writing SVID files: %w", err)
		}
	}
	return nil
}

// ReadFiles reads the SVID and trust roots that WriteFiles wrote to dir. The
// SVID is checked the way go-spiffe checks one (one SPIFFE ID URI SAN, key
// matches the leaf), not verified against the roots. When a file is absent
// the error wraps os.ErrNotExist.
func ReadFiles(dir string) (*x509svid.SVID, []*x509.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, SVIDFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading SVID files: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading SVID files: %w", err)
	}
	bundlePEM, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading SVID files: %w", err)
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", SVIDFile, err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", KeyFile, err)
	}
	roots, err := ParseCerts(bundlePEM)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", BundleFile, err)
	}
	var chain []byte
	for _, c := range certs {
		chain = append(chain, c.Raw...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("reading SVID files: %w", err)
	}
	svid, err := x509svid.ParseRaw(chain, keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("reading SVID files: %w", err)
	}
	return svid, roots, nil
}

// EncodeCerts returns certs as concatenated PEM CERTIFICATE blocks.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw}) // writing to a bytes.Buffer cannot fail
	}
	return buf.Bytes()
}

// ParseCerts parses one or more PEM CERTIFICATE blocks. Blocks of another type,
// trailing data that is not whitespace, and input without any certificate are
// errors.
func ParseCerts(pemData []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("parsing certificates: unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificates: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parsing certificates: trailing data after the last PEM block")
	}
	if len(certs) == 0 {
		return nil, errors.New("parsing certificates: no PEM CERTIFICATE block")
	}
	return certs, nil
}

// EncodeKey returns key as a PKCS#8 PEM "PRIVATE KEY" block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseKey parses exactly one PKCS#8 PEM "PRIVATE KEY" block holding an
// ECDSA P-256 key.
func ParseKey(pemData []byte) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("parsing private key: no PEM block")
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("parsing private key: got PEM block %q, want %q", block.Type, pemPrivateKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parsing private key: trailing data after the PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parsing private key: got %T, want ECDSA P-256", k)
	}
	if err := CheckPublicKey(&key.PublicKey); err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	return key, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory that is synced and then renamed over path, so readers see either
// the old or the new content. The file gets mode perm.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable; best effort
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
