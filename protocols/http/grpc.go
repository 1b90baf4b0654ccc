package http

import (
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// gRPC statuses have names in messages and docs; the handler uses their
// numbers (google.golang.org/grpc/codes): 4 DEADLINE_EXCEEDED, 7 PERMISSION_DENIED, 8
// RESOURCE_EXHAUSTED, 12 UNIMPLEMENTED, 13 INTERNAL, 14 UNAVAILABLE, 16
// UNAUTHENTICATED.

// writeGRPCStatus answers a call trailers-only: status 200, the gRPC status
// in the headers and no body.
func writeGRPCStatus(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", encodeGRPCMessage(msg))
	w.WriteHeader(http.StatusOK)
}

// encodeGRPCMessage percent-encodes a status message as the gRPC HTTP/2
// protocol asks: bytes outside printable ASCII, and '%'.
func encodeGRPCMessage(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '%' {
			return escapeGRPC(s)
		}
	}
	return s
}

func escapeGRPC(s string) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// grpcStatus reads the status of a forwarded call from what the proxy
// wrote: the Grpc-Status trailer (or header, for trailers-only answers).
// Without one, the HTTP status maps as the gRPC spec says for proxies.
func grpcStatus(h http.Header, httpStatus int) (int, string) {
	for _, k := range []string{"Grpc-Status", http.TrailerPrefix + "Grpc-Status"} {
		if v := h.Get(k); v != "" {
			code, err := strconv.Atoi(v)
			if err != nil {
				return 13, "malformed grpc-status " + strconv.Quote(v)
			}
			msg := h.Get("Grpc-Message")
			if msg == "" {
				msg = h.Get(http.TrailerPrefix + "Grpc-Message")
			}
			if m, err := url.PathUnescape(msg); err == nil {
				msg = m
			}
			return code, msg
		}
	}
	switch httpStatus {
	case http.StatusBadRequest:
		return 13, "HTTP 400"
	case http.StatusUnauthorized:
		return 16, "HTTP 401"
	case http.StatusForbidden:
		return 7, "HTTP 403"
	case http.StatusNotFound:
		return 12, "HTTP 404"
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14, "HTTP " + strconv.Itoa(httpStatus)
	}
	return 2, "no grpc-status from the upstream (HTTP " + strconv.Itoa(httpStatus) + ")"
}

// parseGRPCTimeout reads a grpc-timeout header value: one to eight ASCII
// digits and a unit, H M S m u or n (the gRPC HTTP/2 protocol). ok is false
// for a malformed value and for one too long for a time.Duration (over 292
// years): the call then has no deadline at the gateway, and the upstream,
// which gets the header as sent, answers it as it does.
func parseGRPCTimeout(v string) (d time.Duration, ok bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	for _, u := range grpcTimeoutUnits {
		if u.name == v[len(v)-1] {
			unit = u.unit
		}
	}
	if unit == 0 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(v[:len(v)-1]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > math.MaxInt64/int64(unit) {
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// grpcTimeoutUnits are the units of grpc-timeout, finest first.
var grpcTimeoutUnits = [...]struct {
	unit time.Duration
	name byte
}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'},
	{time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}}

// formatGRPCTimeout writes d as a grpc-timeout value: in the finest unit
// that takes at most eight digits, rounded up, as gRPC's own clients do;
// "0n" for a deadline already passed.
func formatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	for _, u := range grpcTimeoutUnits {
		n := d / u.unit
		if d%u.unit != 0 && n < math.MaxInt64/u.unit {
			n++ // unless it would no longer be a Duration
		}
		if n <= 99999999 {
			return strconv.FormatInt(int64(n), 10) + string(u.name)
		}
	}
	return "99999999H" // not reached: a Duration is under 2,562,048 hours
}
