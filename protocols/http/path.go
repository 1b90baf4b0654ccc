package http

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrAmbiguousPath is wrapped by every error of CleanPath: the path could
// mean different things to the policy and to the upstream (or to two
// upstreams), so it is refused rather than guessed at. Callers answer 400.
var ErrAmbiguousPath = errors.New("ambiguous request path")

// ErrInvalidGRPCMethod is wrapped by every error of CleanGRPCMethod.
var ErrInvalidGRPCMethod = errors.New("invalid gRPC method")

// CleanPath returns the canonical form of a request path, the form that
// policy matches and that the request is then forwarded with, so that what
// was decided is what the upstream receives.
//
// rawPath is the path as it arrived, still escaped and without the query
// (r.URL.EscapedPath()). The canonical form is built by these rules, in
// which "decoded" means after one round of percent-decoding:
//
//   - The path must start with "/"; an empty path is refused.
//   - A percent-encoded unreserved character (RFC 3986 §2.3: ALPHA, DIGIT,
//     "-", ".", "_", "~") is decoded: "%2e" becomes ".", "%41" becomes "A".
//   - Every other percent-encoding is kept, with uppercase hex digits:
//     "%3a" becomes "%3A". Reserved characters keep their meaning only
//     when raw, so "%3F" stays data and "?" would not.
//   - A raw character that may not appear in a path (space, '"', '<', '>',
//     '[', ']', '^', '`', '{', '|', '}', and every byte from 0x80) is
//     percent-encoded, so "é" raw and "%C3%A9" have one form.
//   - Empty segments are removed: "//" becomes "/". A trailing "/" stays.
//   - Dot segments ("." and "..", also when spelled "%2e" or ".%2E") are
//     removed as in RFC 3986 §5.2.4, after decoding and after empty
//     segments are gone: "/a//../b" is "/b". A ".." that would climb above
//     the root is refused, not dropped.
//
// These are refused, wrapping ErrAmbiguousPath (the reason and the byte
// offset in rawPath follow):
//
//   - an encoded slash ("%2F") or backslash ("%5C"), and a raw backslash:
//     upstreams disagree on whether they separate segments;
//   - a control character (C0, DEL, or a C1 control in UTF-8), raw or
//     encoded, NUL included;
//   - a malformed percent-encoding ("%", "%4", "%zz", "%u002e");
//   - bytes from 0x80 (raw or encoded) that are not valid UTF-8 once
//     decoded, which includes overlong forms such as "%C0%AE";
//   - a double encoding: "%25" followed by two hex digits in the result
//     ("%252e" would become "." to an upstream that decodes twice);
//   - a raw ";": servlet containers read "/admin;x" as "/admin" and
//     "/..;/" as "/../", which a glob cannot see (send "%3B" for a
//     literal semicolon);
//   - a raw "?" or "#", which cannot be part of a path as received.
//
// When rawPath is already canonical, CleanPath returns it without
// allocating. CleanPath is idempotent: CleanPath(clean) returns clean.
func CleanPath(rawPath string) (string, error) {
	if rawPath == "" || rawPath[0] != '/' {
		return "", ambiguous("path does not start with /", 0)
	}
	out := lazybuf{s: rawPath}
	out.append('/')
	var u utf8Run
	n := len(rawPath)
	i := 1
	for {
		for i < n && rawPath[i] == '/' { // empty segments
			i++
		}
		seg, segIn := out.w, i // where the segment starts in the result and in rawPath
		pct := false           // the segment holds "%25"
		for i < n && rawPath[i] != '/' {
			if j := plainRun(rawPath, i); j > i { // the common case, in bulk
				if err := u.end(); err != nil {
					return "", err
				}
				out.appendString(rawPath[i:j])
				i = j
				continue
			}
			c := rawPath[i]
			switch {
			case c == '%':
				if i+2 >= n || !ishex(rawPath[i+1]) || !ishex(rawPath[i+2]) {
					return "", ambiguous("malformed percent-encoding", i)
				}
				v := unhex(rawPath[i+1])<<4 | unhex(rawPath[i+2])
				if err := u.check(v, i); err != nil {
					return "", err
				}
				switch {
				case v < 0x20 || v == 0x7f:
					return "", ambiguous("encoded control character", i)
				case v == '/':
					return "", ambiguous("encoded slash (%2F)", i)
				case v == '\\':
					return "", ambiguous("encoded backslash (%5C)", i)
				case unreserved(v):
					out.append(v)
				case v == '%':
					pct = true
					out.appendEscaped(v)
				default:
					out.appendEscaped(v)
				}
				i += 3
				continue
			case c < 0x20 || c == 0x7f:
				return "", ambiguous("control character", i)
			case c == '\\':
				return "", ambiguous("backslash", i)
			case c == ';':
				return "", ambiguous("path parameter (;)", i)
			case c == '?' || c == '#':
				return "", ambiguous(fmt.Sprintf("%q in the path", c), i)
			}
			if err := u.check(c, i); err != nil {
				return "", err
			}
			if pathChar(c) {
				out.append(c)
			} else {
				out.appendEscaped(c)
			}
			i++
		}
		if err := u.end(); err != nil {
			return "", err
		}
		switch l := out.w - seg; {
		case l == 1 && out.at(seg) == '.':
			out.w = seg
		case l == 2 && out.at(seg) == '.' && out.at(seg+1) == '.':
			if seg == 1 {
				return "", ambiguous("\"..\" above the root", segIn)
			}
			out.w = out.lastSlash(seg-1) + 1
		default:
			if pct && out.doubleEncoded(seg) {
				return "", ambiguous("double percent-encoding (%25)", segIn)
			}
			if i < n {
				out.append('/')
			}
		}
		if i >= n {
			return out.string(), nil
		}
		i++ // the '/'
	}
}

// CleanGRPCMethod checks a gRPC :path and returns it unchanged. It must be
// exactly "/package.Service/Method": one leading slash, a service name of
// one or more dot-separated parts and a method name, each part non-empty
// and of [A-Za-z0-9_] only. Percent-encodings, dot segments, empty parts,
// extra slashes and any other character are refused with an error wrapping
// ErrInvalidGRPCMethod.
func CleanGRPCMethod(path string) (string, error) {
	if len(path) == 0 || path[0] != '/' {
		return "", invalidMethod(path, "does not start with /")
	}
	slash := strings.IndexByte(path[1:], '/') + 1
	if slash <= 0 {
		return "", invalidMethod(path, "no /Method after the service")
	}
	service, method := path[1:slash], path[slash+1:]
	if !identifiers(service, true) {
		return "", invalidMethod(path, "service is not a dotted name of [A-Za-z0-9_]")
	}
	if !identifiers(method, false) {
		return "", invalidMethod(path, "method is not a name of [A-Za-z0-9_]")
	}
	return path, nil
}

// identifiers reports whether s is one or more non-empty parts of
// [A-Za-z0-9_], separated by single dots when dots is set.
func identifiers(s string, dots bool) bool {
	part := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
			part++
		case c == '.' && dots && part > 0:
			part = 0
		default:
			return false
		}
	}
	return part > 0
}

func invalidMethod(path, reason string) error {
	if len(path) > 64 {
		path = path[:64] + "..."
	}
	return fmt.Errorf("checking gRPC method %q: %w: %s", path, ErrInvalidGRPCMethod, reason)
}

func ambiguous(reason string, at int) error {
	return fmt.Errorf("cleaning path: %w: %s at byte %d", ErrAmbiguousPath, reason, at)
}

// utf8Run checks that the bytes from 0x80 of a path, raw or decoded, form
// valid UTF-8 without C1 controls. ASCII cannot continue a multi-byte
// sequence, so a run must be complete when an ASCII byte or the end of a
// segment comes.
type utf8Run struct {
	buf   [utf8.UTFMax]byte
	n     int
	start int // offset in rawPath of the run's first byte
}

// check feeds one decoded byte found at offset at.
func (u *utf8Run) check(b byte, at int) error {
	if b < utf8.RuneSelf {
		return u.end()
	}
	if u.n == 0 {
		u.start = at
	}
	u.buf[u.n] = b
	u.n++
	if !utf8.FullRune(u.buf[:u.n]) {
		return nil
	}
	r, size := utf8.DecodeRune(u.buf[:u.n])
	if (r == utf8.RuneError && size <= 1) || size != u.n {
		return ambiguous("invalid UTF-8", u.start)
	}
	if 0x80 <= r && r <= 0x9f {
		return ambiguous("encoded control character", u.start)
	}
	u.n = 0
	return nil
}

// end reports an error when a multi-byte sequence was left incomplete.
func (u *utf8Run) end() error {
	if u.n != 0 {
		return ambiguous("invalid UTF-8", u.start)
	}
	return nil
}

// lazybuf builds the cleaned path, allocating only once it departs from s
// (as path.Clean does). Until then the result is s[:w].
type lazybuf struct {
	s   string
	buf []byte
	w   int
}

func (b *lazybuf) append(c byte) {
	if b.buf == nil {
		if b.w < len(b.s) && b.s[b.w] == c {
			b.w++
			return
		}
		b.buf = make([]byte, b.w, len(b.s)+8)
		copy(b.buf, b.s[:b.w])
	}
	b.buf = append(b.buf[:b.w], c)
	b.w++
}

func (b *lazybuf) appendString(s string) {
	if b.buf == nil {
		if b.w+len(s) <= len(b.s) && b.s[b.w:b.w+len(s)] == s {
			b.w += len(s)
			return
		}
		b.buf = make([]byte, b.w, len(b.s)+8)
		copy(b.buf, b.s[:b.w])
	}
	b.buf = append(b.buf[:b.w], s...)
	b.w += len(s)
}

func (b *lazybuf) appendEscaped(c byte) {
	const hex = "0123456789ABCDEF"
	b.append('%')
	b.append(hex[c>>4])
	b.append(hex[c&0xf])
}

// at returns the byte of the result at offset i.
func (b *lazybuf) at(i int) byte {
	if b.buf == nil {
		return b.s[i]
	}
	return b.buf[i]
}

// lastSlash returns the offset of the last "/" of the result before end.
func (b *lazybuf) lastSlash(end int) int {
	for i := end - 1; i >= 0; i-- {
		if b.at(i) == '/' {
			return i
		}
	}
	return -1
}

// doubleEncoded reports whether the result from offset i on holds "%25"
// followed by two hex digits.
func (b *lazybuf) doubleEncoded(i int) bool {
	for ; i+4 < b.w; i++ {
		if b.at(i) == '%' && b.at(i+1) == '2' && b.at(i+2) == '5' && ishex(b.at(i+3)) && ishex(b.at(i+4)) {
			return true
		}
	}
	return false
}

func (b *lazybuf) string() string {
	if b.buf == nil {
		return b.s[:b.w]
	}
	return string(b.buf[:b.w])
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// unreserved reports whether c is an RFC 3986 unreserved character.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// plainRun returns the end of the run of pathChar bytes at s[i:].
func plainRun(s string, i int) int {
	for i < len(s) && plain[s[i]] {
		i++
	}
	return i
}

// plain is pathChar as a table.
var plain = func() (t [256]bool) {
	for c := range 256 {
		t[c] = pathChar(byte(c))
	}
	return t
}()

// pathChar reports whether c may appear raw in a canonical path segment:
// unreserved, the sub-delims but ";", ":" and "@".
func pathChar(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', ':', '@':
		return true
	}
	return false
}
