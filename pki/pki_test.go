package pki_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/ca"
)

var td = spiffeid.RequireTrustDomainFromString("postern.test")

func TestKindAndDefaultTTL(t *testing.T) {
	tests := map[string]struct {
		id       string
		wantKind string
		wantTTL  time.Duration
	}{
		"agent":         {"spiffe://postern.test/agent/db1", "agent", time.Hour},
		"user":          {"spiffe://postern.test/user/alice", "user", 8 * time.Hour},
		"workload":      {"spiffe://postern.test/workload/batch", "workload", time.Hour},
		"gateway":       {"spiffe://postern.test/gateway/gw", "gateway", time.Hour},
		"nested name":   {"spiffe://postern.test/user/team/alice", "user", 8 * time.Hour},
		"unknown kind":  {"spiffe://postern.test/robot/r2", "", time.Hour},
		"kind only":     {"spiffe://postern.test/agent", "", time.Hour},
		"trust domain":  {"spiffe://postern.test", "", time.Hour},
		"prefix of one": {"spiffe://postern.test/agents/db1", "", time.Hour},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			id := spiffeid.RequireFromString(tt.id)
			if got := pki.Kind(id); got != tt.wantKind {
				t.Errorf("Kind(%s): got %q, want %q", id, got, tt.wantKind)
			}
			if got := pki.DefaultTTL(id); got != tt.wantTTL {
				t.Errorf("DefaultTTL(%s): got %s, want %s", id, got, tt.wantTTL)
			}
		})
	}
}

func TestCSRRoundTrip(t *testing.T) {
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if key.Curve != elliptic.P256() {
		t.Fatalf("got curve %s, want P-256", key.Curve.Params().Name)
	}
	der, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		t.Errorf("got public key %v, want the CSR's key", csr.PublicKey)
	}
}

func TestParseCSRRejects(t *testing.T) {
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	badSig := slices.Clone(good)
	badSig[len(badSig)-1] ^= 0x01 // last byte belongs to the signature
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384CSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"bad signature": badSig,
		"P-384 key":     p384CSR,
		"RSA key":       rsaCSR,
		"empty":         nil,
		"garbage":       []byte("not a CSR"),
		"trailing data": append(slices.Clone(good), 0),
	}
	for name, der := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := pki.ParseCSR(der); err == nil {
				t.Errorf("ParseCSR: got nil error, want an error")
			}
		})
	}
}

func TestParseCSRTruncated(t *testing.T) {
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range der {
		if _, err := pki.ParseCSR(der[:i]); err == nil {
			t.Fatalf("ParseCSR of the first %d of %d bytes: got nil error", i, len(der))
		}
	}
}

func FuzzParseCSR(f *testing.F) {
	key, err := pki.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	der, err := pki.NewCSR(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := pki.ParseCSR(data)
		if err == nil {
			if err := pki.CheckPublicKey(csr.PublicKey); err != nil {
				t.Errorf("ParseCSR accepted a CSR whose key fails CheckPublicKey: %v", err)
			}
		}
	})
}

// issue returns an SVID with its key from a fresh in-memory CA.
func issue(t testing.TB, id string, groups ...string) (*ca.CA, *x509svid.SVID) {
	t.Helper()
	c, err := ca.New(td)
	if err != nil {
		t.Fatal(err)
	}
	return c, issueFrom(t, c, id, groups...)
}

// issueFrom returns an SVID with its key from c.
func issueFrom(t testing.TB, c *ca.CA, id string, groups ...string) *x509svid.SVID {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	svid, err := c.Issue(context.Background(), pki.IssueRequest{
		ID:        spiffeid.RequireFromString(id),
		Groups:    groups,
		PublicKey: key.Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return pki.WithKey(svid, key)
}

func TestGroups(t *testing.T) {
	_, svid := issue(t, "spiffe://postern.test/user/alice", "analysts", "on-call", "Ops Team")
	got := pki.Groups(svid.Certificates[0])
	slices.Sort(got) // DER orders the OU values of the RDN set
	want := []string{"Ops Team", "analysts", "on-call"}
	if !slices.Equal(got, want) {
		t.Errorf("Groups: got %q, want %q", got, want)
	}
	if got := pki.Groups(nil); got != nil {
		t.Errorf("Groups(nil): got %q, want nil", got)
	}
}

func TestWithKey(t *testing.T) {
	c, err := ca.New(td)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	svid, err := c.Issue(context.Background(), pki.IssueRequest{
		ID:        spiffeid.RequireFromString("spiffe://postern.test/agent/a"),
		PublicKey: key.Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	withKey := pki.WithKey(svid, key)
	if svid.PrivateKey != nil {
		t.Errorf("WithKey changed its input: PrivateKey is %T", svid.PrivateKey)
	}
	if withKey.PrivateKey != key || withKey.ID != svid.ID || len(withKey.Certificates) != len(svid.Certificates) {
		t.Errorf("WithKey: got %+v, want a copy of %+v with the key", withKey, svid)
	}
	withKey.Certificates[0] = nil
	if svid.Certificates[0] == nil {
		t.Error("WithKey shares the certificate slice with its input")
	}
}

func TestTLSCertificate(t *testing.T) {
	_, svid := issue(t, "spiffe://postern.test/agent/a")
	tc, err := pki.TLSCertificate(svid)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Certificate) != 2 || !bytes.Equal(tc.Certificate[0], svid.Certificates[0].Raw) {
		t.Errorf("got %d certificates, want leaf then intermediate", len(tc.Certificate))
	}
	if tc.Leaf != svid.Certificates[0] || tc.PrivateKey != svid.PrivateKey {
		t.Error("got a different leaf or key than the SVID's")
	}
	noKey := *svid
	noKey.PrivateKey = nil
	if _, err := pki.TLSCertificate(&noKey); err == nil {
		t.Error("TLSCertificate without key: got nil error")
	}
	if _, err := pki.TLSCertificate(&x509svid.SVID{PrivateKey: svid.PrivateKey}); err == nil {
		t.Error("TLSCertificate without certificates: got nil error")
	}
}

func TestFilesRoundTrip(t *testing.T) {
	c, svid := issue(t, "spiffe://postern.test/agent/db1", "dbs")
	dir := filepath.Join(t.TempDir(), "identity")
	if err := pki.WriteFiles(dir, svid, c.Roots()); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{"": 0o700, pki.KeyFile: 0o600}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %q: got %o, want %o", name, got, want)
		}
	}
	for _, name := range []string{pki.SVIDFile, pki.BundleFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("stat %s: %v", name, err)
		}
	}

	got, roots, err := pki.ReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != svid.ID {
		t.Errorf("ID: got %s, want %s", got.ID, svid.ID)
	}
	if len(got.Certificates) != 2 || !got.Certificates[0].Equal(svid.Certificates[0]) || !got.Certificates[1].Equal(svid.Certificates[1]) {
		t.Error("certificates: got a different chain, want leaf then intermediate as written")
	}
	if !got.PrivateKey.Public().(*ecdsa.PublicKey).Equal(svid.PrivateKey.Public()) {
		t.Error("private key: got a different key than written")
	}
	if len(roots) != 1 || !roots[0].Equal(c.Roots()[0]) {
		t.Error("roots: got different roots than written")
	}
	if _, _, err := x509svid.Verify(got.Certificates, c.Bundle()); err != nil {
		t.Errorf("verifying the SVID read back: %v", err)
	}

	// A second write (a rotation) replaces the files and leaves no temporaries.
	svid2 := issueFrom(t, c, "spiffe://postern.test/agent/db1")
	if err := pki.WriteFiles(dir, svid2, c.Roots()); err != nil {
		t.Fatal(err)
	}
	got2, _, err := pki.ReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got2.Certificates[0].Equal(svid2.Certificates[0]) {
		t.Error("after rewrite: got the old leaf, want the new one")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("got %d files in the SVID directory, want 3", len(entries))
	}
}

func TestReadFilesMissing(t *testing.T) {
	_, _, err := pki.ReadFiles(t.TempDir())
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFiles of an empty dir: got %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestReadFilesMismatchedKey(t *testing.T) {
	c, svid := issue(t, "spiffe://postern.test/agent/db1")
	dir := t.TempDir()
	if err := pki.WriteFiles(dir, svid, c.Roots()); err != nil {
		t.Fatal(err)
	}
	other, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.KeyFile), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.ReadFiles(dir); err == nil {
		t.Error("ReadFiles with a key that does not match the leaf: got nil error")
	}
}

func TestWriteFilesRejects(t *testing.T) {
	c, svid := issue(t, "spiffe://postern.test/agent/db1")
	noKey := *svid
	noKey.PrivateKey = nil
	tests := map[string]struct {
		svid  *x509svid.SVID
		roots []*x509.Certificate
	}{
		"no key":   {&noKey, c.Roots()},
		"no roots": {svid, nil},
		"no svid":  {nil, c.Roots()},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if err := pki.WriteFiles(t.TempDir(), tt.svid, tt.roots); err == nil {
				t.Error("WriteFiles: got nil error, want an error")
			}
		})
	}
}

func TestParseCerts(t *testing.T) {
	c, svid := issue(t, "spiffe://postern.test/agent/db1")
	chain := pki.EncodeCerts(svid.Certificates)
	got, err := pki.ParseCerts(chain)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(svid.Certificates[0]) || !got[1].Equal(c.Intermediate()) {
		t.Errorf("got %d certificates, want leaf and intermediate in order", len(got))
	}
	keyPEM, err := pki.EncodeKey(svid.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"empty":         nil,
		"whitespace":    []byte("\n\n"),
		"key block":     keyPEM,
		"cert then key": append(slices.Clone(chain), keyPEM...),
		"trailing data": append(slices.Clone(chain), "junk"...),
		"bad DER":       []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	}
	for name, data := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := pki.ParseCerts(data); err == nil {
				t.Error("ParseCerts: got nil error, want an error")
			}
		})
	}
}

func TestParseCertsTruncated(t *testing.T) {
	_, svid := issue(t, "spiffe://postern.test/agent/db1")
	// One certificate: every strict prefix is an error.
	one := bytes.TrimSpace(pki.EncodeCerts(svid.Certificates[:1]))
	for i := range one {
		if _, err := pki.ParseCerts(one[:i]); err == nil {
			t.Fatalf("ParseCerts of the first %d of %d bytes: got nil error", i, len(one))
		}
	}
	// A chain: a prefix either fails or holds only whole certificates.
	chain := bytes.TrimSpace(pki.EncodeCerts(svid.Certificates))
	for i := range chain {
		certs, err := pki.ParseCerts(chain[:i])
		if err != nil {
			continue
		}
		if len(certs) != 1 || !certs[0].Equal(svid.Certificates[0]) {
			t.Fatalf("ParseCerts of the first %d of %d bytes: got %d certificates and no error", i, len(chain), len(certs))
		}
	}
}

func FuzzParseCerts(f *testing.F) {
	_, svid := issue(f, "spiffe://postern.test/agent/db1")
	f.Add(pki.EncodeCerts(svid.Certificates))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := pki.ParseCerts(data)
		if err == nil && len(certs) == 0 {
			t.Error("ParseCerts: got no certificates and no error")
		}
	})
}

func TestParseKey(t *testing.T) {
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pki.ParseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) {
		t.Error("ParseKey: got a different key than encoded")
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, err := pki.EncodeKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	trimmed := bytes.TrimSpace(keyPEM)
	for i := range trimmed {
		if _, err := pki.ParseKey(trimmed[:i]); err == nil {
			t.Fatalf("ParseKey of the first %d of %d bytes: got nil error", i, len(trimmed))
		}
	}
	bad := map[string][]byte{
		"RSA key":   rsaPEM,
		"two keys":  append(slices.Clone(keyPEM), keyPEM...),
		"cert type": bytes.ReplaceAll(keyPEM, []byte("PRIVATE KEY"), []byte("CERTIFICATE")),
	}
	for name, data := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := pki.ParseKey(data); err == nil {
				t.Error("ParseKey: got nil error, want an error")
			}
		})
	}
}

func FuzzParseKey(f *testing.F) {
	key, err := pki.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyPEM)
	f.Fuzz(func(t *testing.T, data []byte) {
		if k, err := pki.ParseKey(data); err == nil && k == nil {
			t.Error("ParseKey: got nil key and no error")
		}
	})
}

func TestCheckPublicKey(t *testing.T) {
	p256, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		pub     any
		wantErr bool
	}{
		"P-256":        {p256.Public(), false},
		"P-384":        {p384.Public(), true},
		"nil":          {nil, true},
		"nil pointer":  {(*ecdsa.PublicKey)(nil), true},
		"empty key":    {&ecdsa.PublicKey{}, true},
		"no point":     {&ecdsa.PublicKey{Curve: elliptic.P256()}, true},
		"off curve":    {&ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}, true},
		"not a key":    {"key", true},
		"value, not *": {p256.PublicKey, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := pki.CheckPublicKey(tt.pub)
			if got := err != nil; got != tt.wantErr {
				t.Errorf("CheckPublicKey: got error %v, want error %t", err, tt.wantErr)
			}
		})
	}
}
