package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/postern/postern/connect"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols"
)

// TestWebSocketUpgrade: an Upgrade is decided like any request, then
// relayed both ways.
func TestWebSocketUpgrade(t *testing.T) {
	env := startHTTP(t, "tls")
	g := env.g
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, serviceURL(g, "api", "/ws"), &websocket.DialOptions{HTTPClient: httpClient(g, env.writer, false)})
	if err != nil {
		t.Fatalf("writer dialing /ws: %v", err)
	}
	ws.SetReadLimit(2 << 20)
	for _, msg := range []string{"hello", strings.Repeat("x", 1<<20)} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil || string(b) != msg {
			t.Fatalf("got %d bytes, %v, want the %d bytes back", len(b), err, len(msg))
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")

	_, resp, err := websocket.Dial(ctx, serviceURL(g, "api", "/ws"), &websocket.DialOptions{HTTPClient: httpClient(g, env.reader, false)})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("reader dialing /ws: got %v (%v), want 403", err, resp)
	}
	callSessions(t, g, "api", func(hs []protocols.HTTPRequestEvent, _ []protocols.GRPCCallEvent) bool {
		var up, refused bool
		for _, e := range hs {
			up = up || e.Status == 101 && e.Upgrade == "websocket" && e.Identity == writerUser
			refused = refused || e.Status == 403 && e.Path == "/ws" && e.Identity == readerUser
		}
		return up && refused
	})
}

// TestHTTPWithCurl: curl, over HTTP/1.1 and HTTP/2, with the SVID files a
// user gets from postern identity issue.
func TestHTTPWithCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is needed: %v", err)
	}
	env := startHTTP(t, "quic")
	g := env.g
	dir := t.TempDir()
	if err := pki.WriteFiles(dir, env.reader, g.srv.Data().CA.Roots()); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(g.addr())
	curl := func(args ...string) (string, error) {
		base := []string{"-sS", "--max-time", "20", "--resolve", "api.localhost:" + port + ":127.0.0.1",
			"--cert", filepath.Join(dir, pki.SVIDFile), "--key", filepath.Join(dir, pki.KeyFile),
			"--cacert", filepath.Join(dir, pki.BundleFile), "-w", "\n%{http_code} %{http_version}"}
		out, err := exec.Command("curl", append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, v := range []string{"--http1.1", "--http2"} {
		out, err := curl(v, "https://api.localhost:"+port+"/v1/orders")
		want := map[string]string{"--http1.1": "200 1.1", "--http2": "200 2"}[v]
		if err != nil || !strings.HasSuffix(out, want) || !strings.Contains(out, `"Postern-Jwt-Assertion"`) {
			t.Errorf("curl %s: got %q, %v; want %q and the assertion at the upstream", v, out, err, want)
		}
		// --path-as-is sends the dot segments unchanged.
		out, err = curl(v, "--path-as-is", "https://api.localhost:"+port+"/v1/x/../admin/keys")
		if err != nil || !strings.HasSuffix(out, "403 "+strings.TrimPrefix(want, "200 ")) || !strings.Contains(out, `"rule":"no-admin"`) {
			t.Errorf("curl %s --path-as-is: got %q, %v; want 403 by no-admin", v, out, err)
		}
	}
}

// TestHTTPOversizedHeaders: a request whose headers pass the limit is
// refused (431) and the connection's neighbours are unaffected.
func TestHTTPOversizedHeaders(t *testing.T) {
	env := startHTTP(t, "tls")
	g := env.g
	c := httpClient(g, env.writer, false)
	r := do(t, c, "GET", serviceURL(g, "api", "/v1/x"), nil, "X-Big", strings.Repeat("a", 100<<10))
	if r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("got %d, want 431", r.status)
	}
	if r := do(t, httpClient(g, env.writer, true), "GET", serviceURL(g, "api", "/v1/x"), nil); r.status != 200 {
		t.Fatalf("after: got %d, want 200", r.status)
	}
}

// TestHTTP2RapidReset: a client that opens and at once cancels thousands of
// streams (CVE-2023-44487) does not starve other clients, and leaves no work
// behind: the gateway's goroutines come back to what they were. (Whether the
// flooding connection is also cut off with GOAWAY depends on how fast the
// handlers end, so it is logged, not asserted.)
func TestHTTP2RapidReset(t *testing.T) {
	env := startHTTP(t, "tls")
	g := env.g
	if r := do(t, httpClient(g, env.reader, true), "GET", serviceURL(g, "api", "/v1/x"), nil); r.status != 200 {
		t.Fatalf("before: got %d, want 200", r.status)
	}
	baseline := runtime.NumGoroutine()
	conf := &tls.Config{RootCAs: g.roots(), ServerName: "api.localhost", NextProtos: []string{"h2"},
		Certificates: []tls.Certificate{pkitest.TLSCertificate(env.writer)}}
	conn, err := tls.Dial("tcp", g.addr(), conf)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "api.localhost"}, {":path", "/slow?ms=10000"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	done := make(chan error, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				done <- err
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				done <- fmt.Errorf("GOAWAY %v", ga.ErrCode)
				return
			}
		}
	}()
	const streams = 20000
	sent := 0
	for id := uint32(1); sent < streams; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
		if sent == streams/2 { // in the middle of the flood, another client is served
			if r := do(t, httpClient(g, env.reader, true), "GET", serviceURL(g, "api", "/v1/x"), nil); r.status != 200 {
				t.Fatalf("during the flood: got %d, want 200", r.status)
			}
		}
	}
	select {
	case err := <-done:
		t.Logf("the flooding connection ended after %d streams: %v", sent, err)
	case <-time.After(time.Second):
		t.Logf("the flooding connection is still open after %d streams", sent)
	}
	conn.Close()
	if r := do(t, httpClient(g, env.reader, true), "GET", serviceURL(g, "api", "/v1/x"), nil); r.status != 200 {
		t.Fatalf("after the flood: got %d, want 200", r.status)
	}
	waitFor(t, time.Minute, "the flood's goroutines gone", func() bool {
		return runtime.NumGoroutine() <= baseline+20
	})
}

// TestHTTPThroughConnect: a plaintext HTTP client behind postern connect is
// served like a TLS client with the connect user's SVID.
func TestHTTPThroughConnect(t *testing.T) {
	env := startHTTP(t, "tls")
	g := env.g
	dir := t.TempDir()
	if err := pki.WriteFiles(dir, env.reader, g.srv.Data().CA.Roots()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go (&connect.Proxy{Service: "api", Gateway: g.addr(), IdentityDir: dir}).Serve(ctx, ln)
	c := &http.Client{Timeout: 10 * time.Second}
	r := do(t, c, "GET", "http://"+ln.Addr().String()+"/v1/orders/7", nil)
	if e := r.echo(t); r.status != 200 || len(e.Headers["Postern-Jwt-Assertion"]) != 1 {
		t.Fatalf("GET: got %d with assertion %q, want 200 and one", r.status, e.Headers["Postern-Jwt-Assertion"])
	}
	if r := do(t, c, "POST", "http://"+ln.Addr().String()+"/v1/orders", nil); r.status != 403 {
		t.Fatalf("POST: got %d, want 403 (the reader's rights)", r.status)
	}
}
