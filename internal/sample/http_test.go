package sample

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// startHTTP serves the sample HTTP service on a loopback port until the
// test ends, and returns its base URL and a client for it.
func startHTTP(t *testing.T) (string, *http.Client) {
	t.Helper()
	base, _, stop := startHTTPStoppable(t)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return base, &http.Client{Transport: tr}
}

// startHTTPStoppable is startHTTP whose stop the test calls itself; stop
// returns what ServeHTTP returned.
func startHTTPStoppable(t *testing.T) (base string, ln net.Listener, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, ln) }()
	var stopped bool
	var stopErr error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() { stop() })
	return "http://" + ln.Addr().String(), ln, stop
}

func getEcho(t *testing.T, resp *http.Response) Echo {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type: got %q, want application/json", ct)
	}
	var e Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("decoding echo: %v", err)
	}
	return e
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestEcho(t *testing.T) {
	base, client := startHTTP(t)
	tests := map[string]struct {
		method, target, body  string
		header                http.Header
		wantPath, wantRawPath string
		wantQuery             string
	}{
		"get root":      {method: "GET", target: "/", wantPath: "/", wantRawPath: "/"},
		"any path":      {method: "GET", target: "/a/b/c", wantPath: "/a/b/c", wantRawPath: "/a/b/c"},
		"query":         {method: "GET", target: "/q?x=1&y=two&x=3", wantPath: "/q", wantRawPath: "/q", wantQuery: "x=1&y=two&x=3"},
		"escaped slash": {method: "GET", target: "/a%2Fb", wantPath: "/a/b", wantRawPath: "/a%2Fb"},
		"dot segments":  {method: "GET", target: "/a/../b//c", wantPath: "/a/../b//c", wantRawPath: "/a/../b//c"},
		"post body":     {method: "POST", target: "/submit", body: "hello, upstream", wantPath: "/submit", wantRawPath: "/submit"},
		"put":           {method: "PUT", target: "/thing", body: "x", wantPath: "/thing", wantRawPath: "/thing"},
		"delete":        {method: "DELETE", target: "/thing/1", wantPath: "/thing/1", wantRawPath: "/thing/1"},
		"custom method": {method: "PURGE", target: "/cache", wantPath: "/cache", wantRawPath: "/cache"},
		"assertion header": {
			method: "GET", target: "/whoami", wantPath: "/whoami", wantRawPath: "/whoami",
			header: http.Header{"Postern-Jwt-Assertion": {"eyJ.a.b"}, "X-Many": {"1", "2"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, base+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
			e := getEcho(t, resp)
			if e.Method != tc.method {
				t.Errorf("method: got %q, want %q", e.Method, tc.method)
			}
			if e.Path != tc.wantPath {
				t.Errorf("path: got %q, want %q", e.Path, tc.wantPath)
			}
			if e.RawPath != tc.wantRawPath {
				t.Errorf("raw_path: got %q, want %q", e.RawPath, tc.wantRawPath)
			}
			if e.Query != tc.wantQuery {
				t.Errorf("query: got %q, want %q", e.Query, tc.wantQuery)
			}
			if e.Proto != "HTTP/1.1" {
				t.Errorf("proto: got %q, want HTTP/1.1", e.Proto)
			}
			if want := strings.TrimPrefix(base, "http://"); e.Host != want {
				t.Errorf("host: got %q, want %q", e.Host, want)
			}
			if e.BodyBytes != int64(len(tc.body)) {
				t.Errorf("body_bytes: got %d, want %d", e.BodyBytes, len(tc.body))
			}
			if want := sha([]byte(tc.body)); e.BodySHA256 != want {
				t.Errorf("body_sha256: got %s, want %s", e.BodySHA256, want)
			}
			if host, _, _ := net.SplitHostPort(e.Remote); host != "127.0.0.1" {
				t.Errorf("remote: got %q, want 127.0.0.1:port", e.Remote)
			}
			for k, want := range tc.header {
				if got := e.Headers[k]; strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("header %s: got %q, want %q", k, got, want)
				}
			}
			if got := e.Headers["User-Agent"]; len(got) != 1 {
				t.Errorf("headers: got User-Agent %q, want the client's", got)
			}
		})
	}
}

func TestEchoHTTP2Cleartext(t *testing.T) {
	base, _ := startHTTP(t)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(base+"/h2", "text/plain", strings.NewReader("over h2c"))
	if err != nil {
		t.Fatal(err)
	}
	e := getEcho(t, resp)
	if e.Proto != "HTTP/2.0" {
		t.Errorf("proto: got %q, want HTTP/2.0", e.Proto)
	}
	if e.Path != "/h2" || e.RawPath != "/h2" {
		t.Errorf("path, raw_path: got %q, %q, want /h2, /h2", e.Path, e.RawPath)
	}
	if e.BodyBytes != 8 {
		t.Errorf("body_bytes: got %d, want 8", e.BodyBytes)
	}
}

func TestStatus(t *testing.T) {
	base, client := startHTTP(t)
	tests := map[string]struct {
		path     string
		want     int
		wantEcho bool
	}{
		"200":          {"/status/200", 200, true},
		"201":          {"/status/201", 201, true},
		"204 no body":  {"/status/204", 204, false},
		"302":          {"/status/302", 302, true},
		"404":          {"/status/404", 404, true},
		"418":          {"/status/418", 418, true},
		"503":          {"/status/503", 503, true},
		"599":          {"/status/599", 599, true},
		"not a number": {"/status/abc", 400, false},
		"1xx":          {"/status/101", 400, false},
		"too big":      {"/status/600", 400, false},
		"empty":        {"/status/", 400, false},
	}
	client = &http.Client{
		Transport:     client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, err := client.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tc.want)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			var e Echo
			gotEcho := json.Unmarshal(body, &e) == nil && e.Path == tc.path
			if gotEcho != tc.wantEcho {
				t.Errorf("echo body: got %v (%q), want %v", gotEcho, body, tc.wantEcho)
			}
		})
	}
}

func TestStream(t *testing.T) {
	base, client := startHTTP(t)
	tests := map[string]struct {
		query      string
		wantStatus int
		wantN      int
		wantSize   int
	}{
		"five of 1000": {"?n=5&size=1000", 200, 5, 1000},
		"defaults":     {"", 200, 10, 1024},
		"many small":   {"?n=300&size=1", 200, 300, 1},
		"one big":      {"?n=1&size=1048576", 200, 1, 1 << 20},
		"none":         {"?n=0", 200, 0, 1024},
		"negative n":   {"?n=-1", 400, 0, 0},
		"bad size":     {"?size=abc", 400, 0, 0},
		"size too big": {"?size=1048577", 400, 0, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, err := client.Get(base + "/stream" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus != 200 {
				return
			}
			if resp.ContentLength != -1 {
				t.Errorf("Content-Length: got %d, want none (-1)", resp.ContentLength)
			}
			if te := resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
				t.Errorf("Transfer-Encoding: got %q, want [chunked]", te)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if len(body) != tc.wantN*tc.wantSize {
				t.Fatalf("body: got %d bytes, want %d", len(body), tc.wantN*tc.wantSize)
			}
			for i := range tc.wantN {
				chunk := body[i*tc.wantSize : (i+1)*tc.wantSize]
				if want := bytes.Repeat([]byte{byte('a' + i%26)}, tc.wantSize); !bytes.Equal(chunk, want) {
					t.Fatalf("chunk %d: got %q..., want all %q", i, chunk[:1], want[:1])
				}
			}
		})
	}
}

// TestStreamFlushes: with a pause between chunks, the first chunk reaches
// the client before the second is written.
func TestStreamFlushes(t *testing.T) {
	base, client := startHTTP(t)
	const pause = time.Second
	resp, err := client.Get(base + "/stream?n=2&size=10&ms=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	first := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got >= pause {
		t.Errorf("first chunk: got it after %v, want it before the %v pause", got, pause)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got < pause-50*time.Millisecond {
		t.Errorf("second chunk: got it after %v, want it after the %v pause", got, pause)
	}
	if string(first) != "aaaaaaaaaa" || string(rest) != "bbbbbbbbbb" {
		t.Errorf("chunks: got %q, %q, want aaaaaaaaaa, bbbbbbbbbb", first, rest)
	}
}

// patternReader yields n bytes of a fixed pattern, so a large body needs
// no memory of its own size.
type patternReader struct{ n, off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		p[i] = byte((r.off + int64(i)) % 251)
	}
	r.off += int64(len(p))
	return len(p), nil
}

func TestUpload(t *testing.T) {
	base, client := startHTTP(t)
	tests := map[string]struct {
		size    int64
		chunked bool
	}{
		"empty":              {0, false},
		"small":              {1000, false},
		"16 MiB with length": {16 << 20, false},
		"16 MiB chunked":     {16 << 20, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := sha256.New()
			if _, err := io.Copy(h, &patternReader{n: tc.size}); err != nil {
				t.Fatal(err)
			}
			wantSHA := hex.EncodeToString(h.Sum(nil))

			// io.MultiReader hides the length, so the body goes chunked.
			var body io.Reader = io.MultiReader(&patternReader{n: tc.size})
			req, err := http.NewRequest("POST", base+"/upload", body)
			if err != nil {
				t.Fatal(err)
			}
			wantLength := int64(-1)
			if !tc.chunked {
				req.ContentLength = tc.size
				wantLength = tc.size
				if tc.size == 0 {
					req.Body = http.NoBody
				}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
			e := getEcho(t, resp)
			if e.BodyBytes != tc.size {
				t.Errorf("body_bytes: got %d, want %d", e.BodyBytes, tc.size)
			}
			if e.BodySHA256 != wantSHA {
				t.Errorf("body_sha256: got %s, want %s", e.BodySHA256, wantSHA)
			}
			if e.ContentLength != wantLength {
				t.Errorf("content_length: got %d, want %d", e.ContentLength, wantLength)
			}
		})
	}
}

func TestWebSocket(t *testing.T) {
	base, _ := startHTTP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", &websocket.DialOptions{
		Subprotocols: []string{"echo"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status: got %d, want 101", resp.StatusCode)
	}
	if got := c.Subprotocol(); got != "echo" {
		t.Errorf("subprotocol: got %q, want echo", got)
	}
	c.SetReadLimit(-1)

	tests := map[string]struct {
		typ  websocket.MessageType
		data []byte
	}{
		"text":         {websocket.MessageText, []byte("hello, upstream")},
		"binary":       {websocket.MessageBinary, []byte{0, 1, 2, 255}},
		"empty":        {websocket.MessageText, nil},
		"1 MiB binary": {websocket.MessageBinary, bytes.Repeat([]byte("0123456789abcdef"), 1<<16)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := c.Write(ctx, tc.typ, tc.data); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if typ != tc.typ {
				t.Errorf("type: got %v, want %v", typ, tc.typ)
			}
			if !bytes.Equal(got, tc.data) {
				t.Errorf("data: got %d bytes (%q...), want %d bytes", len(got), got[:min(len(got), 16)], len(tc.data))
			}
		})
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestWebSocketNeedsUpgrade(t *testing.T) {
	base, client := startHTTP(t)
	resp, err := client.Get(base + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("status: got %d, want %d", resp.StatusCode, http.StatusUpgradeRequired)
	}
}

func TestSlow(t *testing.T) {
	base, client := startHTTP(t)
	tests := map[string]struct {
		query      string
		timeout    time.Duration
		wantStatus int // 0: the client gives up first
		wantMin    time.Duration
	}{
		"200ms":               {"?ms=200", 10 * time.Second, 200, 200 * time.Millisecond},
		"zero":                {"?ms=0", 10 * time.Second, 200, 0},
		"client gives up":     {"?ms=60000", 200 * time.Millisecond, 0, 200 * time.Millisecond},
		"bad ms":              {"?ms=soon", 10 * time.Second, 400, 0},
		"more than the limit": {"?ms=600001", 10 * time.Second, 400, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", base+"/slow"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, err := client.Do(req)
			elapsed := time.Since(start)
			if tc.wantStatus == 0 {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("error: got %v, want the client's deadline", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.wantStatus {
					t.Fatalf("status: got %d, want %d", resp.StatusCode, tc.wantStatus)
				}
			}
			if elapsed < tc.wantMin {
				t.Errorf("elapsed: got %v, want at least %v", elapsed, tc.wantMin)
			}
		})
	}
}

func TestBigHeader(t *testing.T) {
	base, client := startHTTP(t)
	tests := map[string]struct {
		query      string
		wantStatus int
		wantLen    int
	}{
		"default 64 KiB": {"", 200, 64 << 10},
		"1 KiB":          {"?kb=1", 200, 1 << 10},
		"1 MiB":          {"?kb=1024", 200, 1 << 20},
		"zero":           {"?kb=0", 200, 0},
		"bad":            {"?kb=x", 400, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, err := client.Get(base + "/headers/big" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus != 200 {
				return
			}
			if got := len(resp.Header.Get("X-Big")); got != tc.wantLen {
				t.Errorf("X-Big: got %d bytes, want %d", got, tc.wantLen)
			}
		})
	}
}

// TestBigHeaderOverClientLimit: a client with a smaller header limit
// refuses the response, which is what header limit tests rely on.
func TestBigHeaderOverClientLimit(t *testing.T) {
	base, _ := startHTTP(t)
	tr := &http.Transport{MaxResponseHeaderBytes: 16 << 10}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(base + "/headers/big?kb=64")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error for headers over 16 KiB", resp.StatusCode)
	}
}

// TestServeHTTPStops: ending ctx ends requests in flight (a slow response,
// a WebSocket) and ServeHTTP returns nil promptly.
func TestServeHTTPStops(t *testing.T) {
	base, _, stop := startHTTPStoppable(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()

	slowErr := make(chan error, 1)
	go func() {
		resp, err := client.Get(base + "/slow?ms=60000")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				err = errors.New(resp.Status)
			}
		}
		slowErr <- err
	}()
	// Let the slow request reach the handler.
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	if err := stop(); err != nil {
		t.Errorf("ServeHTTP: got %v, want nil", err)
	}
	if got := time.Since(start); got > 3*time.Second {
		t.Errorf("ServeHTTP took %v to return, want it prompt", got)
	}
	select {
	case err := <-slowErr:
		t.Logf("slow request ended with %v", err)
	case <-time.After(5 * time.Second):
		t.Error("slow request still running after the server stopped")
	}
	if _, _, err := ws.Read(ctx); err == nil {
		t.Error("websocket read after stop: got a message, want an error")
	}
}
