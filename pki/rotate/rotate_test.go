package rotate

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/ca"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("postern.test")
	agentID = spiffeid.RequireFromString("spiffe://postern.test/agent/db1")
	quiet   = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// failsafe bounds how long a test waits for something that should happen
// almost at once; it is a deadlock guard, not a timing assertion.
const failsafe = 20 * time.Second

// svidValid returns a self-signed SVID for id valid from notBefore to
// notAfter, so tests control where its half-life falls (the CA only issues
// certificates that start now).
func svidValid(t *testing.T, id spiffeid.ID, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id.String())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// caRenewer renews through a real CA, like the gateway does.
func caRenewer(c *ca.CA, id spiffeid.ID) Renewer {
	return func(ctx context.Context, _ crypto.Signer, csrDER []byte) (*x509svid.SVID, error) {
		csr, err := pki.ParseCSR(csrDER)
		if err != nil {
			return nil, err
		}
		return c.Issue(ctx, pki.IssueRequest{ID: id, PublicKey: csr.PublicKey})
	}
}

func newCA(t *testing.T) *ca.CA {
	t.Helper()
	c, err := ca.New(td)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRenewDelay(t *testing.T) {
	base := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		notBefore, notAfter, now time.Time
		want                     time.Duration
	}{
		"fresh 1h":          {base, base.Add(time.Hour), base, 30 * time.Minute},
		"10 minutes in":     {base, base.Add(time.Hour), base.Add(10 * time.Minute), 20 * time.Minute},
		"at half-life":      {base, base.Add(time.Hour), base.Add(30 * time.Minute), 0},
		"past half-life":    {base, base.Add(time.Hour), base.Add(45 * time.Minute), 0},
		"expired":           {base, base.Add(time.Hour), base.Add(2 * time.Hour), 0},
		"backdated 8h":      {base.Add(-time.Minute), base.Add(8 * time.Hour), base, 4*time.Hour - 30*time.Second},
		"one minute":        {base, base.Add(time.Minute), base, 30 * time.Second},
		"not yet valid":     {base.Add(time.Hour), base.Add(3 * time.Hour), base, 2 * time.Hour},
		"lifetime inverted": {base, base.Add(-time.Hour), base, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			leaf := &x509.Certificate{NotBefore: tt.notBefore, NotAfter: tt.notAfter}
			if got := renewDelay(leaf, tt.now); got != tt.want {
				t.Errorf("renewDelay: got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	base := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		lifetime, minRetry, want time.Duration
	}{
		"1h caps at 30s":     {time.Hour, time.Second, 30 * time.Second},
		"1m caps at 6s":      {time.Minute, time.Second, 6 * time.Second},
		"tiny, minRetry":     {time.Second, time.Second, time.Second},
		"8h caps at 30s":     {8 * time.Hour, time.Second, 30 * time.Second},
		"minRetry above cap": {time.Minute, time.Minute, time.Minute},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			leaf := &x509.Certificate{NotBefore: base, NotAfter: base.Add(tt.lifetime)}
			if got := retryCap(leaf, tt.minRetry); got != tt.want {
				t.Errorf("retryCap: got %s, want %s", got, tt.want)
			}
		})
	}
	d := time.Second
	var got []time.Duration
	for range 7 {
		got = append(got, d)
		d = nextBackoff(d, 30*time.Second)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff sequence: got %v, want %v seconds", got, want)
		}
	}
}

func TestRunRotatesAtHalfLife(t *testing.T) {
	c := newCA(t)
	now := time.Now()
	old := svidValid(t, agentID, now.Add(-50*time.Minute), now.Add(10*time.Minute)) // half-life passed
	rotated := make(chan *x509svid.SVID, 4)
	s := New(old, caRenewer(c, agentID), Options{
		Logger:   quiet,
		OnRotate: func(svid *x509svid.SVID) { rotated <- svid },
	})
	updated := s.Updated()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var got *x509svid.SVID
	select {
	case got = <-rotated:
	case <-time.After(failsafe):
		t.Fatal("no rotation happened")
	}
	select {
	case <-updated:
	default:
		t.Error("Updated channel was not closed by the swap")
	}
	cur, err := s.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if cur != got {
		t.Error("GetX509SVID: got a different SVID than OnRotate saw")
	}
	if cur.ID != agentID {
		t.Errorf("ID: got %s, want %s", cur.ID, agentID)
	}
	if cur.PrivateKey.(*ecdsa.PrivateKey).Equal(old.PrivateKey) {
		t.Error("the renewed SVID reuses the old key")
	}
	if pub := cur.Certificates[0].PublicKey.(*ecdsa.PublicKey); !pub.Equal(cur.PrivateKey.Public()) {
		t.Error("the renewed leaf does not hold the renewed key")
	}
	if _, _, err := x509svid.Verify(cur.Certificates, c.Bundle()); err != nil {
		t.Errorf("the renewed SVID does not verify against the CA: %v", err)
	}
	if _, err := pki.TLSCertificate(cur); err != nil {
		t.Errorf("the renewed SVID is not usable for TLS: %v", err)
	}

	// The new certificate's half-life is 30 minutes away: Run waits, then
	// stops cleanly when its context ends.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: got %v, want nil", err)
		}
	case <-time.After(failsafe):
		t.Fatal("Run did not return after cancel")
	}
	if n := len(rotated); n != 0 {
		t.Errorf("got %d extra rotations, want none before the new half-life", n)
	}
}

func TestRunWaitsForHalfLife(t *testing.T) {
	now := time.Now()
	fresh := svidValid(t, agentID, now.Add(-time.Minute), now.Add(time.Hour))
	var calls atomic.Int32
	s := New(fresh, func(context.Context, crypto.Signer, []byte) (*x509svid.SVID, error) {
		calls.Add(1)
		return nil, errors.New("must not be called")
	}, Options{Logger: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("renewer called %d times before half-life, want 0", n)
	}
}

func TestRunRetriesAndKeepsOldSVID(t *testing.T) {
	c := newCA(t)
	now := time.Now()
	old := svidValid(t, agentID, now.Add(-50*time.Minute), now.Add(10*time.Minute))
	issue := caRenewer(c, agentID)
	var (
		s        *Source
		mu       sync.Mutex
		failures int
		problems []string
	)
	renew := func(ctx context.Context, key crypto.Signer, csr []byte) (*x509svid.SVID, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur, _ := s.GetX509SVID(); cur != old {
			problems = append(problems, "the SVID changed while renewals were failing")
		}
		if failures < 3 {
			failures++
			return nil, errors.New("gateway unreachable")
		}
		return issue(ctx, key, csr)
	}
	rotated := make(chan *x509svid.SVID, 4)
	s = New(old, renew, Options{
		Logger:   quiet,
		MinRetry: time.Millisecond,
		OnRotate: func(svid *x509svid.SVID) { rotated <- svid },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	select {
	case <-rotated:
	case <-time.After(failsafe):
		t.Fatal("no rotation after the failures")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if failures != 3 {
		t.Errorf("got %d failed attempts, want 3", failures)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if cur, _ := s.GetX509SVID(); cur == old {
		t.Error("GetX509SVID: still the old SVID after a successful retry")
	}
}

func TestRunReturnsErrExpired(t *testing.T) {
	now := time.Now()
	expired := svidValid(t, agentID, now.Add(-2*time.Hour), now.Add(-time.Hour))
	s := New(expired, func(context.Context, crypto.Signer, []byte) (*x509svid.SVID, error) {
		return nil, errors.New("certificate expired")
	}, Options{Logger: quiet, MinRetry: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, ErrExpired) {
		t.Errorf("Run: got %v, want ErrExpired", err)
	}
	if cur, _ := s.GetX509SVID(); cur != expired {
		t.Error("GetX509SVID: the SVID changed although no renewal succeeded")
	}
}

func TestRenewNowRejectsBadResults(t *testing.T) {
	c := newCA(t)
	now := time.Now()
	other := spiffeid.RequireFromString("spiffe://postern.test/agent/other")
	strangerKey, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]Renewer{
		"other ID": caRenewer(c, other),
		"other key": func(ctx context.Context, _ crypto.Signer, _ []byte) (*x509svid.SVID, error) {
			return c.Issue(ctx, pki.IssueRequest{ID: agentID, PublicKey: strangerKey.Public()})
		},
		"no certificates": func(context.Context, crypto.Signer, []byte) (*x509svid.SVID, error) {
			return &x509svid.SVID{ID: agentID}, nil
		},
		"nil SVID": func(context.Context, crypto.Signer, []byte) (*x509svid.SVID, error) {
			return nil, nil
		},
		"error": func(context.Context, crypto.Signer, []byte) (*x509svid.SVID, error) {
			return nil, errors.New("refused")
		},
	}
	for name, renew := range tests {
		t.Run(name, func(t *testing.T) {
			old := svidValid(t, agentID, now.Add(-time.Minute), now.Add(time.Hour))
			called := false
			s := New(old, renew, Options{Logger: quiet, OnRotate: func(*x509svid.SVID) { called = true }})
			if err := s.RenewNow(context.Background()); err == nil {
				t.Error("RenewNow: got nil error, want a refusal")
			}
			if cur, _ := s.GetX509SVID(); cur != old {
				t.Error("GetX509SVID: got a new SVID after a refused renewal, want the old one")
			}
			if called {
				t.Error("OnRotate called for a refused renewal")
			}
		})
	}
}

func TestRenewNowConcurrentReaders(t *testing.T) {
	c := newCA(t)
	now := time.Now()
	s := New(svidValid(t, agentID, now.Add(-time.Minute), now.Add(time.Hour)), caRenewer(c, agentID), Options{Logger: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				svid, err := s.GetX509SVID()
				if err != nil || svid == nil || svid.PrivateKey == nil {
					t.Errorf("GetX509SVID: got %v, %v", svid, err)
					return
				}
			}
		})
	}
	for range 3 {
		if err := s.RenewNow(context.Background()); err != nil {
			t.Error(err)
		}
	}
	cancel()
	wg.Wait()
}

func TestNewPanicsWithoutKey(t *testing.T) {
	now := time.Now()
	svid := svidValid(t, agentID, now, now.Add(time.Hour))
	svid.PrivateKey = nil
	defer func() {
		if recover() == nil {
			t.Error("New with an SVID without key: got no panic")
		}
	}()
	New(svid, func(context.Context, crypto.Signer, []byte) (*x509svid.SVID, error) { return nil, nil }, Options{})
}
