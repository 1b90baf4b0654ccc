package sample

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Echo is the JSON body the HTTP service answers with: the request as it
// reached the upstream.
type Echo struct {
	Method string `json:"method"`
	// Path is the decoded path (r.URL.Path).
	Path string `json:"path"`
	// RawPath is the path of the request target as sent, before decoding.
	RawPath string `json:"raw_path"`
	// Query is the raw query string, without the "?".
	Query string `json:"query"`
	Proto string `json:"proto"`
	Host  string `json:"host"`
	// Headers are the request headers as net/http holds them (canonical
	// names; Host is in Host, not here).
	Headers map[string][]string `json:"headers"`
	// ContentLength is the request's Content-Length, -1 when unknown
	// (chunked).
	ContentLength int64 `json:"content_length"`
	// BodyBytes and BodySHA256 describe the request body, which is read as
	// a stream and never held whole.
	BodyBytes  int64  `json:"body_bytes"`
	BodySHA256 string `json:"body_sha256"`
	// Remote is the peer address the upstream saw.
	Remote string `json:"remote"`
}

// Limits on the query parameters, so a typo cannot ask for a terabyte.
const (
	maxStreamChunks    = 1 << 20
	maxStreamChunkSize = 1 << 20
	maxSlow            = 10 * time.Minute
	maxBigHeaderKB     = 16 << 10
	maxWSMessage       = 64 << 20
)

// HTTPHandler returns the HTTP echo service. Paths are matched exactly as
// they arrive (no cleaning, no redirects), so the Echo shows the path the
// proxy forwarded.
func HTTPHandler() http.Handler {
	return http.HandlerFunc(serveSample)
}

func serveSample(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/stream":
		serveStream(w, r)
	case p == "/upload":
		writeEcho(w, r, http.StatusOK)
	case p == "/ws":
		serveWebSocket(w, r)
	case p == "/slow":
		serveSlow(w, r)
	case p == "/headers/big":
		serveBigHeader(w, r)
	case strings.HasPrefix(p, "/status/"):
		serveStatus(w, r, strings.TrimPrefix(p, "/status/"))
	default:
		writeEcho(w, r, http.StatusOK)
	}
}

// NewEcho reads r's body to the end and describes r.
func NewEcho(r *http.Request) (Echo, error) {
	h := sha256.New()
	var n int64
	var err error
	if r.Body != nil {
		n, err = io.Copy(h, r.Body)
	}
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	if rawPath == "" {
		rawPath = r.URL.EscapedPath()
	}
	e := Echo{
		Method:        r.Method,
		Path:          r.URL.Path,
		RawPath:       rawPath,
		Query:         r.URL.RawQuery,
		Proto:         r.Proto,
		Host:          r.Host,
		Headers:       r.Header.Clone(),
		ContentLength: r.ContentLength,
		BodyBytes:     n,
		BodySHA256:    hex.EncodeToString(h.Sum(nil)),
		Remote:        r.RemoteAddr,
	}
	if e.Headers == nil {
		e.Headers = map[string][]string{}
	}
	if err != nil {
		return e, fmt.Errorf("reading request body: %w", err)
	}
	return e, nil
}

func writeEcho(w http.ResponseWriter, r *http.Request, code int) {
	e, err := NewEcho(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if code == http.StatusNoContent || code == http.StatusNotModified {
		return
	}
	w.Write(append(b, '\n'))
}

func serveStatus(w http.ResponseWriter, r *http.Request, s string) {
	code, err := strconv.Atoi(s)
	if err != nil || code < 200 || code > 599 {
		http.Error(w, fmt.Sprintf("status %q: want a code from 200 to 599", s), http.StatusBadRequest)
		return
	}
	writeEcho(w, r, code)
}

func serveStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err1 := intParam(q.Get("n"), 10, maxStreamChunks)
	size, err2 := intParam(q.Get("size"), 1024, maxStreamChunkSize)
	ms, err3 := intParam(q.Get("ms"), 0, int(maxSlow/time.Millisecond))
	if err := errors.Join(err1, err2, err3); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	io.Copy(io.Discard, r.Body)

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	chunk := make([]byte, size)
	for i := range n {
		if i > 0 && ms > 0 && !sleep(r.Context(), time.Duration(ms)*time.Millisecond) {
			return
		}
		// Chunk i is filled with 'a'+i%26, so a reader can tell the order.
		for j := range chunk {
			chunk[j] = byte('a' + i%26)
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func serveSlow(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r.URL.Query().Get("ms"), 1000, int(maxSlow/time.Millisecond))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !sleep(r.Context(), time.Duration(ms)*time.Millisecond) {
		http.Error(w, "canceled", http.StatusServiceUnavailable)
		return
	}
	writeEcho(w, r, http.StatusOK)
}

func serveBigHeader(w http.ResponseWriter, r *http.Request) {
	kb, err := intParam(r.URL.Query().Get("kb"), 64, maxBigHeaderKB)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Big", strings.Repeat("a", kb<<10))
	writeEcho(w, r, http.StatusOK)
}

// serveWebSocket echoes each message back with its type until the client
// closes or the request's context ends.
func serveWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{"echo"},
		// Clients come through a proxy under another name; there is no
		// browser session here to protect from cross-origin use.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has answered the client.
	}
	defer c.CloseNow()
	c.SetReadLimit(maxWSMessage)
	ctx := r.Context()
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			return // the client closed, or ctx ended and closed the conn
		}
		wr, err := c.Writer(ctx, typ)
		if err != nil {
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			return
		}
		if err := wr.Close(); err != nil {
			return
		}
	}
}

// intParam parses a non-negative decimal query parameter; empty means def.
func intParam(s string, def, limit int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > limit {
		return 0, fmt.Errorf("parameter %q: want an integer from 0 to %d", s, limit)
	}
	return n, nil
}

// sleep waits d, or until ctx ends; it reports whether it waited all of d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ServeHTTP serves HTTPHandler on ln, over HTTP/1.1 and cleartext HTTP/2
// (prior knowledge), until ctx ends. Ending ctx cancels the requests in
// flight (slow responses, streams and WebSockets end at once); ServeHTTP
// returns when they have all returned, with nil, or with the error that
// stopped the server earlier.
func ServeHTTP(ctx context.Context, ln net.Listener) error {
	var inflight sync.WaitGroup
	h := HTTPHandler()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		Protocols:         &protocols,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		cancel()
		err = <-errc
	}
	inflight.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving http: %w", err)
}
