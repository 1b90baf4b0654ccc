package http

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocols"
)

// AssertionHeader is the header that tells the upstream who is calling
// (SPEC §8).
const AssertionHeader = "Postern-Jwt-Assertion"

// handler decides and forwards the requests of one connection.
type handler struct {
	cfg          Config
	proxy        *httputil.ReverseProxy
	afterRequest func() // set by serveHTTP1

	requests, denied  atomic.Int64
	bytesIn, bytesOut atomic.Int64
}

func (h *handler) result() Result {
	return Result{Requests: h.requests.Load(), Denied: h.denied.Load(),
		BytesIn: h.bytesIn.Load(), BytesOut: h.bytesOut.Load()}
}

// call is one request as it goes through the handler.
type call struct {
	start  time.Time
	caller Caller
	path   string // cleaned: what policy matched and the upstream sees
	raw    string // its escaped form
	err    error  // the upstream error, if any
	// deadline is when a gRPC call's grpc-timeout runs out (zero: none).
	deadline time.Time
}

// expired reports whether the call had a deadline and it has passed.
func (c *call) expired() bool {
	return !c.deadline.IsZero() && !time.Now().Before(c.deadline)
}

type callKey struct{}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if h.afterRequest != nil {
			h.afterRequest()
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.cfg.Logger.Error("request handler panicked", "session", h.cfg.Session, "panic", v)
			h.refuse(w, r, &call{start: time.Now()}, http.StatusInternalServerError, 13, "internal", "Postern could not handle the request")
		}
	}()
	h.requests.Add(1)
	c := &call{start: time.Now()}

	caller, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("Www-Authenticate", `Bearer realm="postern"`)
		h.refuse(w, r, c, http.StatusUnauthorized, 16, "authentication", err.Error())
		return
	}
	c.caller = caller

	if h.cfg.GRPC {
		h.serveCall(w, r, c)
		return
	}
	if r.Method == http.MethodConnect {
		h.refuse(w, r, c, http.StatusMethodNotAllowed, 0, "", "Postern does not forward CONNECT")
		return
	}
	clean, err := CleanPath(r.URL.EscapedPath())
	if err != nil {
		h.refuse(w, r, c, http.StatusBadRequest, 0, "", err.Error())
		return
	}
	c.raw = clean
	if c.path, err = url.PathUnescape(clean); err != nil {
		h.refuse(w, r, c, http.StatusBadRequest, 0, "", "unescaping path: "+err.Error())
		return
	}
	d := h.cfg.Authorizer.Authorize(r.Context(), protocols.Request{Identity: caller.ID, Groups: caller.Groups,
		Service: h.cfg.Service, Protocol: protocols.HTTP,
		HTTP: &protocols.HTTPRequest{Method: r.Method, Path: c.path}})
	if !d.Allow {
		status := http.StatusForbidden
		if d.RateLimited {
			status = http.StatusTooManyRequests
			w.Header().Set("Retry-After", "1")
		}
		h.refuse(w, r, c, status, 0, d.Rule, d.Reason)
		return
	}
	h.forward(w, r, c, d)
}

// serveCall decides and forwards one gRPC call.
func (h *handler) serveCall(w http.ResponseWriter, r *http.Request, c *call) {
	if r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h.refuse(w, r, c, http.StatusUnsupportedMediaType, 0, "", "this service speaks gRPC: send application/grpc over HTTP/2")
		return
	}
	target := r.RequestURI // :path as sent, before any decoding
	if target == "" {
		target = r.URL.Path
	}
	method, err := CleanGRPCMethod(target)
	if err != nil {
		h.refuse(w, r, c, 0, 12, "", err.Error())
		return
	}
	c.path, c.raw = method, method
	d := h.cfg.Authorizer.Authorize(r.Context(), protocols.Request{Identity: c.caller.ID, Groups: c.caller.Groups,
		Service: h.cfg.Service, Protocol: protocols.GRPC, GRPC: &protocols.GRPCRequest{Method: method}})
	if !d.Allow {
		code := 7 // PERMISSION_DENIED
		if d.RateLimited {
			code = 8 // RESOURCE_EXHAUSTED
		}
		h.refuse(w, r, c, 0, code, d.Rule, d.Reason)
		return
	}
	h.forward(w, r, c, d)
}

// authenticate returns the caller: the connection's SVID when there is one,
// else the request's bearer token.
func (h *handler) authenticate(r *http.Request) (Caller, error) {
	if !h.cfg.Peer.ID.IsZero() {
		return h.cfg.Peer, nil
	}
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return Caller{}, errors.New("authentication required: present your SVID, or an Authorization: Bearer token")
	}
	if h.cfg.Authenticate == nil {
		return Caller{}, errors.New("bearer tokens are not accepted here: present your SVID")
	}
	c, err := h.cfg.Authenticate(r.Context(), token)
	if err != nil {
		return Caller{}, err
	}
	return c, nil
}

// bearer returns the token of an "Authorization: Bearer TOKEN" value.
func bearer(v string) (string, bool) {
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	t := strings.TrimSpace(v[len(prefix):])
	return t, t != ""
}

// forward proxies an allowed request — a gRPC call through relayCall, an
// HTTP request through the ReverseProxy — and records it.
func (h *handler) forward(w http.ResponseWriter, r *http.Request, c *call, d protocols.Decision) {
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{ReadCloser: r.Body}
		r.Body = body
	}
	var out int64
	var status int
	if h.cfg.GRPC {
		out, status = h.relayCall(w, r, c)
	} else {
		rw := &responseRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), callKey{}, c))
		h.proxy.ServeHTTP(rw, r)
		out, status = rw.n, rw.status
	}
	var in int64
	if body != nil {
		in = body.n.Load()
	}
	h.bytesIn.Add(in)
	h.bytesOut.Add(out)
	if status == 0 && r.Header.Get("Upgrade") != "" && c.err == nil {
		status = http.StatusSwitchingProtocols
	}
	errText := ""
	if c.err != nil {
		errText = c.err.Error()
	}
	if log := h.cfg.Logger; log.Enabled(r.Context(), slog.LevelDebug) {
		log.Debug("request allowed", "session", h.cfg.Session, "identity", c.caller.ID.String(), "service", h.cfg.Service,
			"method", r.Method, "path", c.path, "verdict", protocols.VerdictAllow, "rule", d.Rule, "status", status)
	}
	if h.cfg.GRPC {
		code, msg := grpcStatus(w.Header(), status)
		h.observe(protocols.VerdictAllow, code)
		h.cfg.Recorder.Record(protocols.Event{Session: h.cfg.Session, Time: c.start, Type: protocols.GRPCCalled,
			Data: &protocols.GRPCCallEvent{Method: c.path, Identity: c.caller.ID.String(), Auth: c.caller.Auth,
				Verdict: protocols.VerdictAllow, Rule: d.Rule, Status: code, Message: msg,
				BytesIn: in, BytesOut: out, Duration: ms(time.Since(c.start))}})
		return
	}
	h.observe(protocols.VerdictAllow, status)
	upgrade := ""
	if status == http.StatusSwitchingProtocols {
		upgrade = strings.ToLower(r.Header.Get("Upgrade"))
	}
	h.cfg.Recorder.Record(protocols.Event{Session: h.cfg.Session, Time: c.start, Type: protocols.HTTPRequested,
		Data: &protocols.HTTPRequestEvent{Method: r.Method, Path: c.path, Query: r.URL.RawQuery,
			Identity: c.caller.ID.String(), Auth: c.caller.Auth, Verdict: protocols.VerdictAllow, Rule: d.Rule,
			Status: status, BytesIn: in, BytesOut: out, Upgrade: upgrade, Error: errText,
			Duration: ms(time.Since(c.start))}})
}

// rewrite turns the client's request into the upstream's: the cleaned
// path, no copy of the assertion header from the client, the caller's
// assertion, no bearer token that was Postern's, X-Forwarded-*.
func (h *handler) rewrite(pr *httputil.ProxyRequest) {
	c := pr.In.Context().Value(callKey{}).(*call) // forward always sets it
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = h.cfg.Service
	out.Host = pr.In.Host
	out.URL.Path, out.URL.RawPath = c.path, c.raw
	if c.path == c.raw {
		out.URL.RawPath = ""
	}
	pr.SetXForwarded()
	out.Header.Del(AssertionHeader)
	if c.caller.Auth != protocols.AuthSVID {
		out.Header.Del("Authorization")
	}
	if a := h.assertion(c); a != "" {
		out.Header.Set(AssertionHeader, a)
	}
}

// assertion returns the Postern-Jwt-Assertion of c, or "" when there is no
// signer or it failed (logged): the request then goes without one.
func (h *handler) assertion(c *call) string {
	if h.cfg.Assert == nil {
		return ""
	}
	a, err := h.cfg.Assert(c.start, c.caller, h.cfg.Service)
	if err != nil {
		h.cfg.Logger.Error("signing the identity assertion", "session", h.cfg.Session, "err", err)
		return ""
	}
	return a
}

// upstreamError is the ReverseProxy's ErrorHandler: callError with the
// call forward put in the request's context.
func (h *handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	c, _ := r.Context().Value(callKey{}).(*call)
	h.callError(w, r, c, err)
}

// callError answers a request the upstream did not: 502 for HTTP,
// UNAVAILABLE for gRPC (DEADLINE_EXCEEDED once the call's deadline has
// passed); nothing when the client went away.
func (h *handler) callError(w http.ResponseWriter, r *http.Request, c *call, err error) {
	if c != nil {
		c.err = err
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return
	}
	if c != nil && c.expired() { // only gRPC calls have deadlines
		writeGRPCStatus(w, 4, h.deadlineMessage())
		return
	}
	h.cfg.Logger.Warn("upstream request failed", "session", h.cfg.Session, "service", h.cfg.Service, "err", err)
	if h.cfg.GRPC {
		writeGRPCStatus(w, 14, "Postern: the upstream of service "+strconv.Quote(h.cfg.Service)+" did not answer")
		return
	}
	writeJSON(w, http.StatusBadGateway, errorBody{Error: "the upstream of service " + strconv.Quote(h.cfg.Service) + " did not answer"})
}

// deadlineMessage is the status message of a call whose deadline passed
// before the upstream answered.
func (h *handler) deadlineMessage() string {
	return "Postern: the call's deadline passed before the upstream of service " + strconv.Quote(h.cfg.Service) + " answered"
}

// refuse answers a request that is not forwarded and records it. For gRPC
// services code is the gRPC status (and status is ignored unless code is
// 0); for HTTP, status.
func (h *handler) refuse(w http.ResponseWriter, r *http.Request, c *call, status, code int, rule, reason string) {
	h.denied.Add(1)
	path := c.path
	if path == "" {
		path = r.URL.EscapedPath()
	}
	id := ""
	if !c.caller.ID.IsZero() {
		id = c.caller.ID.String()
	}
	grpc := h.cfg.GRPC && (code != 0 || status == 0)
	if grpc {
		msg := "Postern: " + reason
		if rule != "" && rule != "authentication" {
			msg = "Postern: rule " + strconv.Quote(rule) + " refuses this call: " + reason
		}
		writeGRPCStatus(w, code, msg)
	} else {
		writeJSON(w, status, errorBody{Error: reason, Rule: rule})
	}
	if rule != "" {
		h.cfg.Recorder.Record(protocols.Event{Session: h.cfg.Session, Time: time.Now(), Type: protocols.AuthzDenied,
			Data: &protocols.AuthzDeny{Rule: rule, Reason: reason}})
	}
	h.cfg.Logger.Info("request refused", "session", h.cfg.Session, "identity", id, "service", h.cfg.Service,
		"method", r.Method, "path", path, "verdict", protocols.VerdictDeny, "rule", rule, "reason", reason)
	if grpc {
		h.observe(protocols.VerdictDeny, code)
		h.cfg.Recorder.Record(protocols.Event{Session: h.cfg.Session, Time: c.start, Type: protocols.GRPCCalled,
			Data: &protocols.GRPCCallEvent{Method: path, Identity: id, Auth: c.caller.Auth, Verdict: protocols.VerdictDeny,
				Rule: rule, Reason: reason, Status: code, Message: reason, Duration: ms(time.Since(c.start))}})
		return
	}
	h.observe(protocols.VerdictDeny, status)
	h.cfg.Recorder.Record(protocols.Event{Session: h.cfg.Session, Time: c.start, Type: protocols.HTTPRequested,
		Data: &protocols.HTTPRequestEvent{Method: r.Method, Path: path, Query: r.URL.RawQuery, Identity: id,
			Auth: c.caller.Auth, Verdict: protocols.VerdictDeny, Rule: rule, Reason: reason, Status: status,
			Duration: ms(time.Since(c.start))}})
}

func (h *handler) observe(verdict string, status int) {
	if h.cfg.Observe != nil {
		h.cfg.Observe(verdict, status)
	}
}

// errorBody is the JSON body of a refusal (SPEC §7).
type errorBody struct {
	Error string `json:"error"`
	Rule  string `json:"rule,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// countingBody counts the bytes of a request body as the proxy reads them.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// responseRecorder notes the status and counts the body of a response. The
// ReverseProxy reaches Flush and Hijack through Unwrap.
type responseRecorder struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *responseRecorder) WriteHeader(code int) {
	if code >= 200 && w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
