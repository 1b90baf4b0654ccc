package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
)

var td = spiffeid.RequireTrustDomainFromString("postern.test")

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestLoadOrCreateReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	first, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{
		"":                  0o700,
		RootKeyFile:         0o600,
		IntermediateKeyFile: 0o600,
		RootFile:            0o644,
		IntermediateFile:    0o644,
	}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %q: got %o, want %o", name, got, want)
		}
	}

	second, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Roots()[0].Equal(first.Roots()[0]) {
		t.Error("second load: got a new root, want the first one")
	}
	if !second.Intermediate().Equal(first.Intermediate()) {
		t.Error("second load: got a new intermediate, want the first one")
	}

	// A leaf from the reloaded CA verifies against the first CA's bundle.
	svid, err := second.Issue(context.Background(), pki.IssueRequest{
		ID:        spiffeid.RequireFromString("spiffe://postern.test/agent/a"),
		PublicKey: newKey(t).Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, first.Bundle()); err != nil {
		t.Errorf("verifying a reloaded CA's leaf with the original bundle: %v", err)
	}
}

func TestLoadOrCreateRefusesOtherTrustDomain(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, td); err != nil {
		t.Fatal(err)
	}
	other := spiffeid.RequireTrustDomainFromString("other.test")
	if _, err := LoadOrCreate(dir, other); err == nil {
		t.Error("LoadOrCreate with another trust domain: got nil error, want a refusal")
	}
}

func TestLoadOrCreateRefusesMismatchedKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, td); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, RootKeyFile), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, td); err == nil {
		t.Error("LoadOrCreate with a root key that does not match: got nil error")
	}
}

func TestLoadOrCreateRenewsIntermediate(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return time.Now().Add(340 * 24 * time.Hour) }
	second, err := loadOrCreate(dir, td, later)
	if err != nil {
		t.Fatal(err)
	}
	if second.Intermediate().Equal(first.Intermediate()) {
		t.Fatal("loading with < 30 days of intermediate left: got the old intermediate, want a new one")
	}
	if !second.Roots()[0].Equal(first.Roots()[0]) {
		t.Error("renewing the intermediate changed the root")
	}
	third, err := loadOrCreate(dir, td, later)
	if err != nil {
		t.Fatal(err)
	}
	if !third.Intermediate().Equal(second.Intermediate()) {
		t.Error("the renewed intermediate was not persisted")
	}
	svid, err := second.Issue(context.Background(), pki.IssueRequest{
		ID:        spiffeid.RequireFromString("spiffe://postern.test/agent/a"),
		PublicKey: newKey(t).Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, first.Bundle(), x509svid.WithTime(later())); err != nil {
		t.Errorf("verifying a leaf signed by the renewed intermediate: %v", err)
	}
}

func TestNeedsRenewal(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	root := &x509.Certificate{NotAfter: now.Add(3650 * day)}
	tests := map[string]struct {
		interNotAfter time.Time
		root          *x509.Certificate
		want          bool
	}{
		"fresh":                     {now.Add(300 * day), root, false},
		"31 days left":              {now.Add(31 * day), root, false},
		"29 days left":              {now.Add(29 * day), root, true},
		"expired":                   {now.Add(-time.Second), root, true},
		"capped by root, not yet":   {now.Add(10 * day), &x509.Certificate{NotAfter: now.Add(10 * day)}, false},
		"capped by root, expired":   {now, &x509.Certificate{NotAfter: now}, true},
		"root outlives it slightly": {now.Add(10 * day), &x509.Certificate{NotAfter: now.Add(11 * day)}, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			inter := &x509.Certificate{NotAfter: tt.interNotAfter}
			if got := needsRenewal(inter, tt.root, now); got != tt.want {
				t.Errorf("needsRenewal: got %t, want %t", got, tt.want)
			}
		})
	}
}

func TestCAHierarchy(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	root, inter := c.Roots()[0], c.Intermediate()
	for name, cert := range map[string]*x509.Certificate{"root": root, "intermediate": inter} {
		if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://postern.test" {
			t.Errorf("%s URI SANs: got %v, want [spiffe://postern.test]", name, cert.URIs)
		}
		if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s: got IsCA %t, key usage %b; want a CA with certSign", name, cert.IsCA, cert.KeyUsage)
		}
		if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s: got key %T, want ECDSA P-256", name, cert.PublicKey)
		}
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate is not signed by the root: %v", err)
	}
	if !inter.MaxPathLenZero {
		t.Error("intermediate: got no MaxPathLen 0, want it")
	}
	if got := root.NotAfter.Sub(root.NotBefore); got < 9*365*24*time.Hour {
		t.Errorf("root validity: got %s, want about 10 years", got)
	}
	if c.TrustDomain() != td {
		t.Errorf("TrustDomain: got %s, want %s", c.TrustDomain(), td)
	}
	if b := c.Bundle(); b.TrustDomain() != td || !b.HasX509Authority(root) {
		t.Error("Bundle: want the root for the trust domain")
	}
}

func TestIssueLeaf(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	id := spiffeid.RequireFromString("spiffe://postern.test/user/alice")
	svid, err := c.Issue(context.Background(), pki.IssueRequest{
		ID:        id,
		Groups:    []string{"analysts", "dba", `q"uo}}te`},
		PublicKey: key.Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != id || svid.PrivateKey != nil || len(svid.Certificates) != 2 {
		t.Fatalf("got SVID %s with %d certificates and key %T; want %s, leaf+intermediate, no key", svid.ID, len(svid.Certificates), svid.PrivateKey, id)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URI SANs: got %v, want exactly [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Errorf("other SANs: got %v %v %v, want none", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	groups := pki.Groups(leaf)
	slices.Sort(groups)
	if want := []string{"analysts", "dba", `q"uo}}te`}; !slices.Equal(groups, want) {
		t.Errorf("groups: got %q, want %q", groups, want)
	}
	if leaf.Subject.CommonName != "alice" {
		t.Errorf("CN: got %q, want alice", leaf.Subject.CommonName)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("got IsCA %t, key usage %b; want a leaf with digitalSignature only", leaf.IsCA, leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usage: got %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		t.Error("leaf does not hold the requested public key")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial: got %s, want a positive number of at most 128 bits", leaf.SerialNumber)
	}
	gotID, _, err := x509svid.Verify(svid.Certificates, c.Bundle())
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if gotID != id {
		t.Errorf("verified ID: got %s, want %s", gotID, id)
	}
	other, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, other.Bundle()); err == nil {
		t.Error("verifying with another CA's bundle: got nil error")
	}
	withKey := pki.WithKey(svid, key)
	certDER := slices.Concat(leaf.Raw, svid.Certificates[1].Raw)
	keyDER, err := x509.MarshalPKCS8PrivateKey(withKey.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.ParseRaw(certDER, keyDER); err != nil {
		t.Errorf("go-spiffe refuses the SVID: %v", err)
	}
}

func TestIssueGatewayDNSNames(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := c.Issue(context.Background(), pki.IssueRequest{
		ID:        spiffeid.RequireFromString("spiffe://postern.test/gateway/gw1"),
		PublicKey: newKey(t).Public(),
		DNSNames:  []string{"gw.example.test", "*.gw.example.test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if !slices.Equal(leaf.DNSNames, []string{"gw.example.test", "*.gw.example.test"}) {
		t.Errorf("DNS names: got %v, want gw.example.test, *.gw.example.test", leaf.DNSNames)
	}
	if len(leaf.URIs) != 1 {
		t.Errorf("URI SANs: got %v, want exactly one", leaf.URIs)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, c.Bundle()); err != nil {
		t.Errorf("x509svid.Verify: %v", err)
	}
}

func TestIssueTTL(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	interNotAfter := c.Intermediate().NotAfter
	tests := map[string]struct {
		id   string
		ttl  time.Duration
		want time.Duration // expected NotAfter-NotBefore minus the backdate; 0 = capped at the intermediate
	}{
		"agent default":    {"spiffe://postern.test/agent/a", 0, time.Hour},
		"user default":     {"spiffe://postern.test/user/u", 0, 8 * time.Hour},
		"workload default": {"spiffe://postern.test/workload/w", 0, time.Hour},
		"gateway default":  {"spiffe://postern.test/gateway/g", 0, time.Hour},
		"one minute":       {"spiffe://postern.test/agent/a", time.Minute, time.Minute},
		"a day":            {"spiffe://postern.test/user/u", 24 * time.Hour, 24 * time.Hour},
		"capped":           {"spiffe://postern.test/user/u", 5 * 365 * 24 * time.Hour, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			svid, err := c.Issue(context.Background(), pki.IssueRequest{
				ID:        spiffeid.RequireFromString(tt.id),
				TTL:       tt.ttl,
				PublicKey: newKey(t).Public(),
			})
			if err != nil {
				t.Fatal(err)
			}
			leaf := svid.Certificates[0]
			if tt.want == 0 {
				if !leaf.NotAfter.Equal(interNotAfter.Truncate(time.Second)) {
					t.Errorf("NotAfter: got %s, want the intermediate's %s", leaf.NotAfter, interNotAfter)
				}
				return
			}
			// Both bounds come from one clock reading, each truncated to
			// the second when encoded.
			got := leaf.NotAfter.Sub(leaf.NotBefore) - Backdate
			if got < tt.want-time.Second || got > tt.want+time.Second {
				t.Errorf("lifetime: got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestIssueRejects(t *testing.T) {
	c, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	good := newKey(t).Public()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	agent := spiffeid.RequireFromString("spiffe://postern.test/agent/a")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := map[string]struct {
		ctx context.Context
		r   pki.IssueRequest
	}{
		"other trust domain": {nil, pki.IssueRequest{ID: spiffeid.RequireFromString("spiffe://other.test/agent/a"), PublicKey: good}},
		"empty ID":           {nil, pki.IssueRequest{PublicKey: good}},
		"unknown kind":       {nil, pki.IssueRequest{ID: spiffeid.RequireFromString("spiffe://postern.test/robot/a"), PublicKey: good}},
		"kind without name":  {nil, pki.IssueRequest{ID: spiffeid.RequireFromString("spiffe://postern.test/agent"), PublicKey: good}},
		"trust domain ID":    {nil, pki.IssueRequest{ID: td.ID(), PublicKey: good}},
		"TTL 59s":            {nil, pki.IssueRequest{ID: agent, TTL: 59 * time.Second, PublicKey: good}},
		"negative TTL":       {nil, pki.IssueRequest{ID: agent, TTL: -time.Hour, PublicKey: good}},
		"no key":             {nil, pki.IssueRequest{ID: agent}},
		"P-384 key":          {nil, pki.IssueRequest{ID: agent, PublicKey: p384.Public()}},
		"private key":        {nil, pki.IssueRequest{ID: agent, PublicKey: p384}},
		"empty group":        {nil, pki.IssueRequest{ID: agent, PublicKey: good, Groups: []string{"a", ""}}},
		"DNS for an agent":   {nil, pki.IssueRequest{ID: agent, PublicKey: good, DNSNames: []string{"a.test"}}},
		"empty DNS name": {nil, pki.IssueRequest{
			ID: spiffeid.RequireFromString("spiffe://postern.test/gateway/g"), PublicKey: good, DNSNames: []string{""},
		}},
		"cancelled": {cancelled, pki.IssueRequest{ID: agent, PublicKey: good}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			if svid, err := c.Issue(ctx, tt.r); err == nil {
				t.Errorf("Issue: got %s and nil error, want a refusal", svid.ID)
			}
		})
	}
}

func TestNewRejectsEmptyTrustDomain(t *testing.T) {
	if _, err := New(spiffeid.TrustDomain{}); err == nil {
		t.Error("New with an empty trust domain: got nil error")
	}
	if _, err := LoadOrCreate(t.TempDir(), spiffeid.TrustDomain{}); err == nil {
		t.Error("LoadOrCreate with an empty trust domain: got nil error")
	}
}
