package http

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// validPaths seed the fuzzer and the truncation test: every prefix of each
// must clean or be refused, never panic.
var validPaths = []string{
	"/",
	"/v1/orders/123/items",
	"/v1/orders/%2e%2e/admin",
	"//a//b/./c/../d/",
	"/caf%c3%a9/%F0%9F%98%80/x",
	"/a%3ab%3F/100%25/x:y@z!$&'()*+,=",
	"/%41%62%63/~user/a-b_c",
	"/a b/[x]",
	"/a/b/c/d/../../../..",
}

var validMethods = []string{
	"/orders.v1.Orders/Get",
	"/grpc.health.v1.Health/Check",
	"/Svc/M",
}

// checkClean fails t unless clean has every property of CleanPath's
// results.
func checkClean(t *testing.T, clean string) {
	t.Helper()
	if !strings.HasPrefix(clean, "/") {
		t.Errorf("%q does not start with /", clean)
	}
	if strings.Contains(clean, "//") {
		t.Errorf("%q holds an empty segment", clean)
	}
	for _, seg := range strings.Split(clean[min(1, len(clean)):], "/") {
		if seg == "." || seg == ".." {
			t.Errorf("%q holds a dot segment", clean)
		}
	}
	for i := 0; i < len(clean); i++ {
		c := clean[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\\;?#\"<>[]^`{|}", c) >= 0 {
			t.Errorf("%q holds %q at byte %d", clean, c, i)
		}
		if c == '%' {
			if i+2 >= len(clean) || !isUpperHex(clean[i+1]) || !isUpperHex(clean[i+2]) {
				t.Errorf("%q holds a percent-encoding that is not %%XX uppercase at byte %d", clean, i)
			} else if v := unhex(clean[i+1])<<4 | unhex(clean[i+2]); unreserved(v) || v < 0x20 || v == 0x7f || v == '/' || v == '\\' {
				t.Errorf("%q encodes %q at byte %d", clean, v, i)
			}
		}
	}
	again, err := CleanPath(clean)
	if err != nil || again != clean {
		t.Errorf("CleanPath(%q): got %q, %v, want it unchanged (idempotent)", clean, again, err)
	}
	decoded, err := url.PathUnescape(clean)
	if err != nil {
		t.Fatalf("url.PathUnescape(%q): %v", clean, err)
	}
	if !utf8.ValidString(decoded) {
		t.Errorf("%q decodes to invalid UTF-8", clean)
	}
	if got := path.Clean(decoded); got != decoded && got+"/" != decoded {
		t.Errorf("path.Clean(%q): got %q, want it unchanged but for a trailing slash", decoded, got)
	}
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func FuzzCleanPath(f *testing.F) {
	for _, s := range validPaths {
		f.Add(s)
	}
	for _, s := range []string{
		"", "*", "/..", "/a%2fb", "/a%5cb", "/a\\b", "/a;b", "/a%00", "/%c0%ae",
		"/%252e", "/a%25%34%31", "/a%C3", "/a%", "/a\xff", "/a%C2%85", "/%2E%2E/x",
		"/a/.%2e/..%2F", "/a?b", "/é/ü",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		clean, err := CleanPath(in)
		if err != nil {
			if !errors.Is(err, ErrAmbiguousPath) {
				t.Errorf("CleanPath(%q): got error %v, want one wrapping ErrAmbiguousPath", in, err)
			}
			if clean != "" {
				t.Errorf("CleanPath(%q): got %q with an error, want \"\"", in, clean)
			}
			return
		}
		checkClean(t, clean)
	})
}

// checkMethod fails t unless got is in, and in is /Service/Method of
// [A-Za-z0-9_.] with no dot segment.
func checkMethod(t *testing.T, in, got string) {
	t.Helper()
	if got != in {
		t.Errorf("CleanGRPCMethod(%q): got %q, want it unchanged", in, got)
	}
	parts := strings.Split(got, "/")
	if len(parts) != 3 || parts[0] != "" || parts[1] == "" || parts[2] == "" {
		t.Errorf("CleanGRPCMethod(%q) accepted a path that is not /Service/Method", in)
	}
	for _, p := range parts[1:] {
		if p == "." || p == ".." {
			t.Errorf("CleanGRPCMethod(%q) accepted a dot segment", in)
		}
	}
	for i := 1; i < len(got); i++ {
		if c := got[i]; !(c == '/' || c == '.' || c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			t.Errorf("CleanGRPCMethod(%q) accepted %q", in, c)
		}
	}
}

func FuzzCleanGRPCMethod(f *testing.F) {
	for _, s := range validMethods {
		f.Add(s)
	}
	for _, s := range []string{"", "/", "//", "/a/b/c", "/../x", "/a./b", "/a/%41", "/a/b\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := CleanGRPCMethod(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidGRPCMethod) {
				t.Errorf("CleanGRPCMethod(%q): got error %v, want one wrapping ErrInvalidGRPCMethod", in, err)
			}
			return
		}
		checkMethod(t, in, got)
	})
}
