package tunnel

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

func TestReplyRoundTrip(t *testing.T) {
	tests := map[string]struct {
		in, want Reply
	}{
		"ok":                    {in: Reply{OK: true}, want: Reply{OK: true}},
		"ok ignores error text": {in: Reply{OK: true, Error: "x"}, want: Reply{OK: true}},
		"error":                 {in: Reply{Error: "dialing 127.0.0.1:5432: connection refused"}, want: Reply{Error: "dialing 127.0.0.1:5432: connection refused"}},
		"empty error":           {in: Reply{}, want: Reply{}},
		"invalid utf8":          {in: Reply{Error: "bad \xff byte"}, want: Reply{Error: "bad \uFFFD byte"}},
		"long error":            {in: Reply{Error: strings.Repeat("é", MaxReplyError)}, want: Reply{Error: strings.Repeat("é", MaxReplyError/2)}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteReply(&buf, tt.in); err != nil {
				t.Fatalf("WriteReply: %v", err)
			}
			buf.WriteString("data")
			r := iotest.OneByteReader(&buf)
			got, err := ReadReply(r)
			if err != nil {
				t.Fatalf("ReadReply: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if !utf8.ValidString(got.Error) {
				t.Errorf("got invalid UTF-8 error text %q", got.Error)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "data" {
				t.Errorf("got %q after the reply, want %q", rest, "data")
			}
		})
	}
}

func TestReadReplyErrors(t *testing.T) {
	tests := map[string][]byte{
		"empty":          nil,
		"unknown status": {2, 0, 0},
		"ok with text":   {0, 0, 1, 'x'},
		"text too long":  {1, 0xFF, 0xFF},
		"short text":     {1, 0, 5, 'a', 'b'},
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if got, err := ReadReply(bytes.NewReader(in)); err == nil {
				t.Fatalf("got %+v, want an error", got)
			}
		})
	}
}

func TestReadReplyTruncated(t *testing.T) {
	for name, r := range map[string]Reply{"ok": {OK: true}, "error": {Error: "no such service"}} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteReply(&buf, r); err != nil {
				t.Fatalf("WriteReply: %v", err)
			}
			b := buf.Bytes()
			for i := range len(b) {
				if got, err := ReadReply(bytes.NewReader(b[:i])); err == nil {
					t.Fatalf("prefix of %d/%d bytes: got %+v, want an error", i, len(b), got)
				}
			}
		})
	}
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{1, 0, 3, 'b', 'a', 'd'})
	f.Add([]byte{1, 0xFF, 0xFF})
	f.Add([]byte{7})
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ReadReply(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(r.Error) > MaxReplyError*3 || !utf8.ValidString(r.Error) {
			t.Fatalf("got error text %q", r.Error)
		}
		var buf bytes.Buffer
		if err := WriteReply(&buf, r); err != nil {
			t.Fatalf("WriteReply: %v", err)
		}
		r2, err := ReadReply(&buf)
		if err != nil {
			t.Fatalf("reading re-encoded reply: %v", err)
		}
		if r.OK != r2.OK || (!r.OK && len(r.Error) <= MaxReplyError && r.Error != r2.Error) {
			t.Fatalf("got %+v after a round trip, want %+v", r2, r)
		}
	})
}
