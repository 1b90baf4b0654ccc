package rotate

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
)

// ErrExpired is wrapped by Run's error when the SVID expired before a renewal
// succeeded.
var ErrExpired = errors.New("SVID expired before it could be renewed")

// Renewer obtains a new SVID for the holder's identity: it sends csr (made
// with key) to an issuer and returns the certificates, leaf then
// intermediates. The returned PrivateKey may be nil; Source uses key.
type Renewer func(ctx context.Context, key crypto.Signer, csr []byte) (*x509svid.SVID, error)

// Options tune a Source. The zero value is usable.
type Options struct {
	OnRotate func(svid *x509svid.SVID) // called after each swap (persist files, log)
	Logger   *slog.Logger              // default slog.Default()
	MinRetry time.Duration             // first retry delay after a failure; default 1s
}

const (
	defaultMinRetry = time.Second
	maxRetry        = 30 * time.Second
)

// Source is an x509svid.Source whose SVID renews itself. It is safe for
// concurrent use.
type Source struct {
	renew    Renewer
	onRotate func(*x509svid.SVID)
	log      *slog.Logger
	minRetry time.Duration

	renewMu sync.Mutex // serializes renewals and OnRotate calls

	mu      sync.RWMutex
	svid    *x509svid.SVID
	updated chan struct{}
}

var _ x509svid.Source = (*Source)(nil)

// New returns a Source that starts with svid, which must have certificates
// and a private key (New panics otherwise: that is a programming error).
func New(svid *x509svid.SVID, renew Renewer, opts Options) *Source {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		panic("rotate.New: SVID without certificates or private key")
	}
	if renew == nil {
		panic("rotate.New: nil Renewer")
	}
	s := &Source{
		renew:    renew,
		onRotate: opts.OnRotate,
		log:      opts.Logger,
		minRetry: opts.MinRetry,
		svid:     svid,
		updated:  make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.minRetry <= 0 {
		s.minRetry = defaultMinRetry
	}
	return s
}

// GetX509SVID returns the current SVID. It implements x509svid.Source. The
// returned SVID must not be modified.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// Updated returns a channel that is closed at the next swap. Call it again
// after it fires to wait for the one after.
func (s *Source) Updated() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updated
}

// Run renews the SVID at half its lifetime, again and again, until ctx is
// done (then it returns nil) or the SVID expires while renewals fail (then it
// returns an error wrapping ErrExpired).
func (s *Source) Run(ctx context.Context) error {
	var floor time.Duration // after a renewal, never renew again at once
	for {
		if !sleep(ctx, max(renewDelay(s.leaf(), time.Now()), floor)) {
			return nil
		}
		floor = s.minRetry
		if err := s.renewWithRetry(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// RenewNow renews the SVID once: new key, CSR, Renewer, checks, swap,
// OnRotate. On error the current SVID stays in place.
func (s *Source) RenewNow(ctx context.Context) error {
	s.renewMu.Lock()
	defer s.renewMu.Unlock()

	cur, _ := s.GetX509SVID()
	key, err := pki.GenerateKey()
	if err != nil {
		return fmt.Errorf("renewing SVID %s: %w", cur.ID, err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return fmt.Errorf("renewing SVID %s: %w", cur.ID, err)
	}
	got, err := s.renew(ctx, key, csr)
	if err != nil {
		return fmt.Errorf("renewing SVID %s: %w", cur.ID, err)
	}
	next, err := check(cur, got, key, time.Now())
	if err != nil {
		return fmt.Errorf("renewing SVID %s: %w", cur.ID, err)
	}

	s.mu.Lock()
	s.svid = next
	close(s.updated)
	s.updated = make(chan struct{})
	s.mu.Unlock()

	leaf := next.Certificates[0]
	s.log.Info("SVID renewed", "id", next.ID.String(), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter, "renew_at", renewAt(leaf))
	if s.onRotate != nil {
		s.onRotate(next)
	}
	return nil
}

// check validates a renewal result against the current SVID and the key it
// was requested for, and returns the SVID to swap in.
func check(cur, got *x509svid.SVID, key *ecdsa.PrivateKey, now time.Time) (*x509svid.SVID, error) {
	if got == nil || len(got.Certificates) == 0 {
		return nil, errors.New("renewer returned no certificates")
	}
	leaf := got.Certificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("checking renewed SVID: %w", err)
	}
	if id != cur.ID {
		return nil, fmt.Errorf("checking renewed SVID: got ID %s, want %s", id, cur.ID)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("checking renewed SVID: leaf does not hold the new key")
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("checking renewed SVID: expired at %s", leaf.NotAfter.Format(time.RFC3339))
	}
	return &x509svid.SVID{
		ID:           id,
		Certificates: slices.Clone(got.Certificates),
		PrivateKey:   key,
		Hint:         cur.Hint,
	}, nil
}

// renewWithRetry renews until it succeeds, ctx is done (nil) or the current
// SVID expires (ErrExpired).
func (s *Source) renewWithRetry(ctx context.Context) error {
	backoff := s.minRetry
	for {
		err := s.RenewNow(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		cur, _ := s.GetX509SVID()
		leaf := cur.Certificates[0]
		now := time.Now()
		if !now.Before(leaf.NotAfter) {
			return fmt.Errorf("renewing SVID %s: %w (last error: %v)", cur.ID, ErrExpired, err)
		}
		wait := min(backoff, leaf.NotAfter.Sub(now))
		s.log.Warn("SVID renewal failed; keeping the current SVID", "id", cur.ID.String(),
			"err", err, "retry_in", wait, "not_after", leaf.NotAfter)
		if !sleep(ctx, wait) {
			return nil
		}
		backoff = nextBackoff(backoff, retryCap(leaf, s.minRetry))
	}
}

func (s *Source) leaf() *x509.Certificate {
	cur, _ := s.GetX509SVID()
	return cur.Certificates[0]
}

// renewAt is the moment half of leaf's lifetime has passed.
func renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// renewDelay is how long to wait at now before renewing leaf (never negative).
func renewDelay(leaf *x509.Certificate, now time.Time) time.Duration {
	return max(renewAt(leaf).Sub(now), 0)
}

// retryCap is the longest wait between retries: a tenth of leaf's lifetime or
// 30s, whichever is less, and never below minRetry.
func retryCap(leaf *x509.Certificate, minRetry time.Duration) time.Duration {
	return max(min(leaf.NotAfter.Sub(leaf.NotBefore)/10, maxRetry), minRetry)
}

// nextBackoff doubles d up to limit.
func nextBackoff(d, limit time.Duration) time.Duration {
	return min(2*d, limit)
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
