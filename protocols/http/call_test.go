package http

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/postern/postern/protocols"
)

// allowCall allows the gRPC method /test.Svc/Call.
var allowCall = protocols.AuthorizerFunc(func(_ context.Context, r protocols.Request) protocols.Decision {
	if r.GRPC != nil && r.GRPC.Method == "/test.Svc/Call" {
		return protocols.Decision{Allow: true, Rule: "calls"}
	}
	return protocols.Decision{Rule: "calls", Reason: "only /test.Svc/Call"}
})

// startH2C serves h on a loopback HTTP/2 (h2c) listener and returns a
// transport whose connections go to it, as the gateway's go to an agent.
func startH2C(t *testing.T, h http.Handler) http.RoundTripper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		}}
}

// callGRPC makes the call /test.Svc/Call with body through f's gateway,
// with the header's names and values besides gRPC's own, and returns the
// grpc-status and grpc-message the client got (from the trailers, or the
// headers of a trailers-only answer) and the response's body.
func callGRPC(t *testing.T, f *fixture, body string, header ...string) (status, msg string, data []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{TLSClientConfig: f.roots.Clone(),
		DialTLSContext: func(ctx context.Context, _, _ string, conf *tls.Config) (net.Conn, error) {
			return (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", f.addr)
		}}}
	req, _ := http.NewRequest("POST", "https://api.localhost/test.Svc/Call", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	status = resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status") // trailers-only
	}
	return status, resp.Trailer.Get("Grpc-Message") + resp.Header.Get("Grpc-Message"), data
}

// TestRelayCall: an allowed call reaches the upstream with the gateway's
// headers and comes back whole, trailers included; an answer that breaks
// off, and an upstream that cannot be reached, end the call UNAVAILABLE;
// each is recorded with the status the client saw.
func TestRelayCall(t *testing.T) {
	gotHeader := make(chan http.Header, 1)
	upstream := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader <- r.Header.Clone()
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.Write(body)
		w.(http.Flusher).Flush()
		if string(body) == "break" {
			panic(http.ErrAbortHandler) // resets the stream mid-answer
		}
		w.Header().Set("Grpc-Status", "0")
	}))
	unreachable := &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(context.Context, string, string, *tls.Config) (net.Conn, error) {
			return nil, errors.New("no agent")
		}}
	for name, tc := range map[string]struct {
		transport http.RoundTripper
		body      string
		status    string // grpc-status the client gets
		data      string // body the client gets
		message   string // in grpc-message
	}{
		"whole":       {upstream, "hello", "0", "hello", ""},
		"broken off":  {upstream, "break", "14", "break", "broke off its answer"},
		"unreachable": {unreachable, "hello", "14", "", "did not answer"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Config{Peer: alice, GRPC: true, Authorizer: allowCall, Transport: tc.transport})
			status, msg, data := callGRPC(t, f, tc.body, AssertionHeader, "forged", "X-Forwarded-For", "203.0.113.9")
			if status != tc.status || string(data) != tc.data || !strings.Contains(msg, tc.message) {
				t.Fatalf("got status %q %q, data %q; want %q %q, data %q", status, msg, data, tc.status, tc.message, tc.data)
			}
			if tc.transport == upstream {
				h := <-gotHeader
				if got, want := h.Get(AssertionHeader), "asserted:"+alice.ID.String()+":api"; got != want || len(h[AssertionHeader]) != 1 {
					t.Errorf("upstream assertion: got %q, want only %q", h[AssertionHeader], want)
				}
				if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
					t.Errorf("upstream X-Forwarded-For: got %q, want the client's address only", got)
				}
				if got := h.Get("Te"); got != "trailers" {
					t.Errorf("upstream Te: got %q, want trailers", got)
				}
			}
			for e := range f.events {
				if call, ok := e.Data.(*protocols.GRPCCallEvent); ok {
					if got := call.Status; got != map[string]int{"0": 0, "14": 14}[tc.status] || call.Verdict != protocols.VerdictAllow ||
						call.BytesOut != int64(len(tc.data)) {
						t.Errorf("recorded %+v, want status %s, allowed, %d bytes out", call, tc.status, len(tc.data))
					}
					break
				}
			}
		})
	}
}

// TestRelayCallCancelled: a call the client cancels midway is recorded as
// CANCELLED.
func TestRelayCallCancelled(t *testing.T) {
	upstream := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	f := newFixture(t, Config{Peer: alice, GRPC: true, Authorizer: allowCall, Transport: upstream})
	c := &http.Client{Transport: &http2.Transport{TLSClientConfig: f.roots.Clone(),
		DialTLSContext: func(ctx context.Context, _, _ string, conf *tls.Config) (net.Conn, error) {
			return (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", f.addr)
		}}}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "https://api.localhost/test.Svc/Call", strings.NewReader("hello"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-f.events:
			if call, ok := e.Data.(*protocols.GRPCCallEvent); ok {
				if call.Status != 1 || call.BytesOut != 5 {
					t.Fatalf("recorded %+v, want status 1 (CANCELLED) after 5 bytes", call)
				}
				return
			}
		case <-timeout:
			t.Fatal("the cancelled call was not recorded")
		}
	}
}

// TestRelayCallDeadline: the gateway keeps a call's grpc-timeout itself. An
// upstream that lets it pass, before answering or midway, is cut off and
// the client gets DEADLINE_EXCEEDED (in the headers or the trailers), as
// the record says; a call without grpc-timeout waits for its upstream.
func TestRelayCallDeadline(t *testing.T) {
	upstream := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		body, _ := io.ReadAll(r.Body)
		if string(body) == "midway" {
			w.WriteHeader(200)
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
			w.Header().Set("Grpc-Status", "0")
		}
	}))
	for name, tc := range map[string]struct {
		body, timeout string
		status        string
		data          string
	}{
		"before the answer": {"waits", "100m", "4", ""},
		"midway":            {"midway", "100000u", "4", "first"},
		"no deadline":       {"waits", "", "0", ""},
		"malformed":         {"waits", "1x", "0", ""},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Config{Peer: alice, GRPC: true, Authorizer: allowCall, Transport: upstream})
			var header []string
			if tc.timeout != "" {
				header = []string{"Grpc-Timeout", tc.timeout}
			}
			status, msg, data := callGRPC(t, f, tc.body, header...)
			if status != tc.status || string(data) != tc.data {
				t.Fatalf("got status %q %q, data %q; want %q, data %q", status, msg, data, tc.status, tc.data)
			}
			if status == "4" && !strings.Contains(msg, "deadline passed") {
				t.Errorf("got message %q, want one naming the deadline", msg)
			}
			for e := range f.events {
				if call, ok := e.Data.(*protocols.GRPCCallEvent); ok {
					if want, _ := strconv.Atoi(tc.status); call.Status != want || call.BytesOut != int64(len(tc.data)) {
						t.Errorf("recorded %+v, want status %s, %d bytes out", call, tc.status, len(tc.data))
					}
					break
				}
			}
		})
	}
}

// TestRelayCallForwardsRemainingTimeout: the upstream gets what is left of
// the call's deadline, not the client's value again; a malformed value it
// gets as sent.
func TestRelayCallForwardsRemainingTimeout(t *testing.T) {
	got := make(chan string, 1)
	upstream := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Grpc-Timeout")
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "0")
	}))
	f := newFixture(t, Config{Peer: alice, GRPC: true, Authorizer: allowCall, Transport: upstream})
	const sent = 99 * time.Millisecond // in nanoseconds: eight digits
	if status, msg, _ := callGRPC(t, f, "x", "Grpc-Timeout", "99000000n"); status != "0" {
		t.Fatalf("got status %q %q", status, msg)
	}
	if d, ok := parseGRPCTimeout(<-got); !ok || d <= 0 || d >= sent {
		t.Fatalf("upstream got a timeout of %v (%v), want less than the %v sent and more than none", d, ok, sent)
	}
	callGRPC(t, f, "x", "Grpc-Timeout", "1x")
	if v := <-got; v != "1x" {
		t.Fatalf("upstream got %q for a malformed timeout, want it as sent", v)
	}
}
