package bearer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"golang.org/x/time/rate"
)

// Backoff between attempts to load an issuer's keys.
const (
	retryMin = time.Second
	retryMax = time.Minute
)

// keySet loads an issuer's JWKS in the background, so that a gateway starts
// while its identity provider is down, and holds it once loaded. Until then
// tokens are refused with the reason of the last failure.
type keySet struct {
	issuer  string
	jwksURL string // "" means: discover it
	opts    Options

	ready chan struct{} // closed once kf is set
	done  chan struct{} // closed when load returns

	kf atomic.Pointer[keyfunc.Keyfunc] // set once loaded; read per request

	mu      sync.Mutex
	stop    func() // ends keyfunc's refresh goroutine; also ends with ctx
	lastErr error
}

func newKeySet(issuer, jwksURL string, opts Options) *keySet {
	return &keySet{
		issuer:  issuer,
		jwksURL: jwksURL,
		opts:    opts,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		lastErr: errors.New("not fetched yet"),
	}
}

// get returns the loaded keys, or why there are none.
func (k *keySet) get() (keyfunc.Keyfunc, error) {
	if kf := k.kf.Load(); kf != nil {
		return *kf, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if kf := k.kf.Load(); kf != nil { // loaded while we waited for the lock
		return *kf, nil
	}
	return nil, k.lastErr
}

// close ends the background refresh of loaded keys.
func (k *keySet) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stop != nil {
		k.stop()
	}
}

// wait blocks until the keys are loaded, ctx is done or loading stopped.
func (k *keySet) wait(ctx context.Context) error {
	select {
	case <-k.ready:
		return nil
	case <-ctx.Done():
		_, err := k.get()
		return fmt.Errorf("waiting for the keys of %s: %w (last attempt: %v)", k.issuer, ctx.Err(), err)
	case <-k.done:
		select {
		case <-k.ready:
			return nil
		default:
		}
		_, err := k.get()
		return fmt.Errorf("keys of %s were never loaded: %w", k.issuer, err)
	}
}

// load tries until the keys are fetched once or ctx is done. From then on
// keyfunc refreshes them every RefreshInterval and, at most once per
// UnknownKIDInterval, when a token names a kid the set does not have.
func (k *keySet) load(ctx context.Context) {
	defer close(k.done)
	delay := retryMin
	for {
		kf, stop, err := k.fetch(ctx)
		if err == nil {
			k.mu.Lock()
			k.kf.Store(&kf)
			k.lastErr, k.stop = nil, stop
			k.mu.Unlock()
			close(k.ready)
			return
		}
		k.mu.Lock()
		k.lastErr = err
		k.mu.Unlock()
		k.opts.Logger.WarnContext(ctx, "loading OIDC issuer keys", "issuer", k.issuer, "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, retryMax)
	}
}

// fetch makes one attempt: discovery if needed, then the JWKS. stop ends
// keyfunc's refresh goroutine.
func (k *keySet) fetch(ctx context.Context) (kf keyfunc.Keyfunc, stop func(), err error) {
	jwksURL := k.jwksURL
	if jwksURL == "" {
		if jwksURL, err = discover(ctx, k.opts.HTTPClient, k.issuer); err != nil {
			return nil, nil, err
		}
	}
	kctx, cancel := context.WithCancel(ctx)
	noErrorFirst := false
	kf, err = keyfunc.NewDefaultOverrideCtx(kctx, []string{jwksURL}, keyfunc.Override{
		Client:                    k.opts.HTTPClient,
		HTTPTimeout:               timeoutOf(k.opts.HTTPClient),
		NoErrorReturnFirstHTTPReq: &noErrorFirst,
		RefreshInterval:           k.opts.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(k.opts.UnknownKIDInterval), 1),
		// A token with an unknown kid waits for the rate limiter only if
		// its turn is this close, and the refetch must fit in it too.
		RateLimitWaitMax: timeoutOf(k.opts.HTTPClient),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				k.opts.Logger.WarnContext(ctx, "refreshing OIDC issuer keys", "issuer", k.issuer, "jwks_url", u, "error", oneLine(err))
			}
		},
	})
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("fetching JWKS %s: %s", jwksURL, oneLine(err))
	}
	return kf, cancel, nil
}

func timeoutOf(c *http.Client) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultHTTPTimeout
}

// discover reads jwks_uri from the issuer's OpenID configuration, which
// must name the same issuer (OpenID Connect Discovery 1.0, §4.3).
func discover(ctx context.Context, c *http.Client, issuer string) (string, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	ctx, cancel := context.WithTimeout(ctx, timeoutOf(c))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("discovering %s: %w", u, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("discovering %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovering %s: status %s", u, resp.Status)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return "", fmt.Errorf("discovering %s: %w", u, err)
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("discovering %s: the document is for issuer %s, want %q", u, quote(doc.Issuer), issuer)
	}
	if err := checkURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovering %s: jwks_uri %s: %w", u, quote(doc.JWKSURI), err)
	}
	return doc.JWKSURI, nil
}

// limitTransport caps response bodies at maxResponseBytes.
type limitTransport struct{ next http.RoundTripper }

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxResponseBytes}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.left == 0 {
		// At the limit: fine if the body ends here.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, errTooLarge
		} else {
			return 0, err
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

var errTooLarge = fmt.Errorf("response larger than %d bytes", maxResponseBytes)
