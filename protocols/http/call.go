package http

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocols"
)

// relayCall sends an allowed gRPC call to the upstream and streams its
// answer back: the response headers, each chunk of the body as it arrives
// (flushed: a streaming call's messages must not wait for the next), and
// the trailers that carry the call's status. It is what
// httputil.ReverseProxy does for a gRPC call, without what a call cannot
// carry (HTTP/1 hop-by-hop headers, upgrades, 1xx answers) and without
// copying the request to rewrite it: one call costs the gateway one
// header map and one request. It returns the bytes of the response body
// and the HTTP status written (0 when the upstream did not answer).
func (h *handler) relayCall(w http.ResponseWriter, r *http.Request, c *call) (n int64, status int) {
	out := &http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: "http", Host: h.cfg.Service, Path: c.path},
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h.callHeader(r, c),
		Body:          r.Body,
		ContentLength: r.ContentLength,
		Trailer:       r.Trailer,
		Host:          r.Host,
	}
	if r.Body == nil || r.Body == http.NoBody {
		out.Body = nil
	}
	ctx := r.Context()
	if d, ok := parseGRPCTimeout(r.Header.Get("Grpc-Timeout")); ok {
		// The gateway keeps the call's deadline itself: an upstream that
		// ignores it is cut off, and one that honours it (resetting the
		// stream) is answered DEADLINE_EXCEEDED, not UNAVAILABLE. The
		// upstream gets what is left of it.
		c.deadline = c.start.Add(d)
		out.Header.Set("Grpc-Timeout", formatGRPCTimeout(time.Until(c.deadline)))
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.deadline)
		defer cancel()
	}
	res, err := h.cfg.Transport.RoundTrip(out.WithContext(ctx))
	if err != nil {
		h.callError(w, r, c, err)
		return 0, 0
	}
	defer res.Body.Close()
	dst := w.Header()
	for k, vv := range res.Header {
		dst[k] = vv
	}
	w.WriteHeader(res.StatusCode)
	n, err = copyFlushing(w, res.Body)
	switch {
	case errors.Is(err, errWritingClient), err != nil && r.Context().Err() != nil:
		// The client went away or cancelled the call: nobody to tell, but
		// the record says so (the status it would have got).
		c.err = err
		dst[http.TrailerPrefix+"Grpc-Status"] = []string{"1"}
		dst[http.TrailerPrefix+"Grpc-Message"] = []string{"Postern: the client cancelled the call"}
	case err != nil && c.expired():
		c.err = err
		dst[http.TrailerPrefix+"Grpc-Status"] = []string{"4"}
		dst[http.TrailerPrefix+"Grpc-Message"] = []string{encodeGRPCMessage(h.deadlineMessage())}
	case err != nil:
		// The upstream's stream broke off mid-answer (its agent left): the
		// client is told UNAVAILABLE in the trailers, whatever the headers
		// said.
		c.err = err
		h.cfg.Logger.Warn("upstream answer broke off", "session", h.cfg.Session, "service", h.cfg.Service, "err", err)
		dst[http.TrailerPrefix+"Grpc-Status"] = []string{"14"}
		dst[http.TrailerPrefix+"Grpc-Message"] = []string{encodeGRPCMessage("Postern: the upstream of service " + strconv.Quote(h.cfg.Service) + " broke off its answer")}
	default:
		for k, vv := range res.Trailer {
			dst[http.TrailerPrefix+k] = vv
		}
	}
	return n, res.StatusCode
}

// callHeader is the header of the upstream's request of a call: the
// client's metadata, without its copy of the assertion header, the bearer
// token that was Postern's, and Forwarded/X-Forwarded-* of its own;
// with X-Forwarded-* and the caller's assertion.
func (h *handler) callHeader(r *http.Request, c *call) http.Header {
	hdr := make(http.Header, len(r.Header)+4)
	for k, vv := range r.Header {
		switch k {
		case AssertionHeader, "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
			continue
		case "Authorization":
			if c.caller.Auth != protocols.AuthSVID {
				continue
			}
		case "Te": // the one connection header HTTP/2 keeps, for gRPC's "trailers"
			if len(vv) != 1 || !strings.EqualFold(vv[0], "trailers") {
				continue
			}
		}
		hdr[k] = vv
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		hdr["X-Forwarded-For"] = []string{ip}
	}
	hdr["X-Forwarded-Host"] = []string{r.Host}
	hdr["X-Forwarded-Proto"] = []string{"https"}
	if a := h.assertion(c); a != "" {
		hdr[AssertionHeader] = []string{a}
	}
	return hdr
}

// errWritingClient marks a copy that stopped because the client could not
// be written to.
var errWritingClient = errors.New("writing to the client")

// copyFlushing copies src to w, flushing after each read.
func copyFlushing(w http.ResponseWriter, src io.Reader) (int64, error) {
	f, _ := w.(http.Flusher)
	buf := copyBuffers.Get()
	defer copyBuffers.Put(buf)
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, errors.Join(errWritingClient, err)
			}
			n += int64(m)
			if f != nil {
				f.Flush()
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
