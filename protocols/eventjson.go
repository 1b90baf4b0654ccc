package protocols

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// The events recorded on the data path encode themselves: AppendJSON
// appends what encoding/json's Marshal writes for them, byte for byte
// (FuzzAppendJSON holds it to that), without reflection. It reports false,
// having appended nothing, for what Marshal would refuse (a NaN or
// infinite duration), so that the caller can let Marshal say why.

// AppendJSON appends the JSON of e.
func (e *TCPDataEvent) AppendJSON(b []byte) ([]byte, bool) {
	b = append(b, `{"direction":`...)
	b = appendString(b, e.Direction)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	return append(b, '}'), true
}

// AppendJSON appends the JSON of e.
func (e *PostgresQueryEvent) AppendJSON(b []byte) ([]byte, bool) {
	if !finite(e.Duration) {
		return b, false
	}
	b = append(b, `{"sql":`...)
	b = appendString(b, e.SQL)
	if len(e.Params) > 0 {
		b = append(b, `,"params":`...)
		b = appendNullables(b, e.Params)
	}
	b = append(b, `,"protocol":`...)
	b = appendString(b, e.Protocol)
	b = appendOmitEmpty(b, `,"prepared":`, e.Prepared)
	b = append(b, `,"class":`...)
	b = appendString(b, e.Class)
	if len(e.Tags) > 0 {
		b = append(b, `,"tags":`...)
		b = appendStrings(b, e.Tags)
	}
	b = appendVerdict(b, e.Verdict, e.Rule, e.Reason)
	if len(e.Completed) > 0 {
		b = append(b, `,"completed":`...)
		b = appendStrings(b, e.Completed)
	}
	b = append(b, `,"rows":`...)
	b = strconv.AppendInt(b, e.Rows, 10)
	b = appendOmitEmpty(b, `,"code":`, e.Code)
	b = appendOmitEmpty(b, `,"error":`, e.Error)
	b = appendDuration(b, e.Duration)
	if len(e.Columns) > 0 {
		b = append(b, `,"columns":`...)
		b = appendStrings(b, e.Columns)
	}
	if len(e.Result) > 0 {
		b = append(b, `,"result":[`...)
		for i, row := range e.Result {
			if i > 0 {
				b = append(b, ',')
			}
			if row == nil {
				b = append(b, "null"...)
			} else {
				b = appendNullables(b, row)
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), true
}

// AppendJSON appends the JSON of e.
func (e *HTTPRequestEvent) AppendJSON(b []byte) ([]byte, bool) {
	if !finite(e.Duration) {
		return b, false
	}
	b = append(b, `{"method":`...)
	b = appendString(b, e.Method)
	b = append(b, `,"path":`...)
	b = appendString(b, e.Path)
	b = appendOmitEmpty(b, `,"query":`, e.Query)
	b = appendOmitEmpty(b, `,"identity":`, e.Identity)
	b = appendOmitEmpty(b, `,"auth":`, e.Auth)
	b = appendVerdict(b, e.Verdict, e.Rule, e.Reason)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = appendBytes(b, e.BytesIn, e.BytesOut)
	b = appendOmitEmpty(b, `,"upgrade":`, e.Upgrade)
	b = appendOmitEmpty(b, `,"error":`, e.Error)
	return append(appendDuration(b, e.Duration), '}'), true
}

// AppendJSON appends the JSON of e.
func (e *GRPCCallEvent) AppendJSON(b []byte) ([]byte, bool) {
	if !finite(e.Duration) {
		return b, false
	}
	b = append(b, `{"method":`...)
	b = appendString(b, e.Method)
	b = appendOmitEmpty(b, `,"identity":`, e.Identity)
	b = appendOmitEmpty(b, `,"auth":`, e.Auth)
	b = appendVerdict(b, e.Verdict, e.Rule, e.Reason)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = appendOmitEmpty(b, `,"message":`, e.Message)
	b = appendBytes(b, e.BytesIn, e.BytesOut)
	return append(appendDuration(b, e.Duration), '}'), true
}

func appendVerdict(b []byte, verdict, rule, reason string) []byte {
	b = appendString(append(b, `,"verdict":`...), verdict)
	b = appendOmitEmpty(b, `,"rule":`, rule)
	return appendOmitEmpty(b, `,"reason":`, reason)
}

func appendBytes(b []byte, in, out int64) []byte {
	b = strconv.AppendInt(append(b, `,"bytes_in":`...), in, 10)
	return strconv.AppendInt(append(b, `,"bytes_out":`...), out, 10)
}

func appendDuration(b []byte, d float64) []byte {
	return appendFloat(append(b, `,"duration_ms":`...), d)
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func appendOmitEmpty(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func appendNullables(b []byte, ss []*string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		if s == nil {
			b = append(b, "null"...)
		} else {
			b = appendString(b, *s)
		}
	}
	return append(b, ']')
}

// appendFloat writes f as encoding/json writes a float64.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 as e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// plainByte tells the ASCII bytes encoding/json writes as themselves in a
// string: printable, not '"', '\\', '<', '>' or '&'. A table: one load a
// byte instead of six comparisons.
var plainByte = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString writes s as encoding/json writes a string, HTML-escaped:
// quotes, backslashes and control characters escaped, '<', '>' and '&' as
// \u003c and so on, U+2028 and U+2029 as \u2028 and \u2029, and each byte
// of invalid UTF-8 as \ufffd.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plainByte[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
