package gateway

import (
	"bytes"
	"testing"
)

var classifySeeds = map[string]struct {
	in   []byte
	want firstBytes
}{
	"tls client hello":   {[]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}, firstBytesTLS},
	"ssl request":        {[]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}, firstBytesSSLRequest},
	"gssenc request":     {[]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}, firstBytesGSSENCRequest},
	"plaintext startup":  {[]byte{0, 0, 0, 40, 0, 3, 0, 0}, firstBytesPostgresStartup},
	"http request":       {[]byte("GET / HTTP/1.1\r\n"), firstBytesUnknown},
	"ssh banner":         {[]byte("SSH-2.0-OpenSSH"), firstBytesUnknown},
	"cancel request":     {[]byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e}, firstBytesCancelRequest},
	"short cancel":       {[]byte{0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e}, firstBytesUnknown},
	"absurd startup len": {[]byte{0x7f, 0, 0, 0, 0, 3, 0, 0}, firstBytesUnknown},
	"empty":              {nil, firstBytesShort},
}

func TestClassify(t *testing.T) {
	for name, tc := range classifySeeds {
		t.Run(name, func(t *testing.T) {
			if got := classify(tc.in); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestClassifyTruncated: every strict prefix of a Postgres request is
// "short", never taken for something else; a TLS record is known at once.
func TestClassifyTruncated(t *testing.T) {
	for name, tc := range classifySeeds {
		if tc.want == firstBytesTLS || tc.want == firstBytesShort || tc.want == firstBytesUnknown {
			continue
		}
		for i := range len(tc.in) {
			if got := classify(tc.in[:i]); got != firstBytesShort {
				t.Fatalf("%s: prefix of %d bytes: got %v, want short", name, i, got)
			}
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, tc := range classifySeeds {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := classify(in)
		if len(in) > 0 && in[0] == 0x16 && got != firstBytesTLS {
			t.Fatalf("TLS record %x classified as %v", in, got)
		}
		// Only the first 8 bytes may matter.
		if len(in) > 8 && classify(in[:8]) != got {
			t.Fatalf("classification of %x depends on bytes past the eighth", in)
		}
		if got == firstBytesSSLRequest && !bytes.Equal(in[:4], []byte{0, 0, 0, 8}) {
			t.Fatalf("%x taken for an SSLRequest", in)
		}
	})
}
