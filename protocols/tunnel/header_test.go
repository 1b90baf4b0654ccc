package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func sampleHeaders() map[string]Header {
	return map[string]Header{
		"control":      {Kind: KindControl},
		"data minimal": {Kind: KindData, Service: "db"},
		"data full": {
			Kind:     KindData,
			Service:  "orders-db",
			Session:  "01J9Z6R1S7",
			Identity: "spiffe://postern.local/user/alice",
			Groups:   []string{"dba", "oncall"},
			Source:   "127.0.0.1:51234",
			Params:   map[string]string{"user": "app", "database": "orders"},
		},
		"unicode": {Kind: KindData, Service: "sérvice-✓", Identity: "spiffe://postern.local/user/zoë"},
	}
}

func encodeHeader(t testing.TB, h Header) []byte {
	t.Helper()
	b, err := AppendHeader(nil, h)
	if err != nil {
		t.Fatalf("encoding header: %v", err)
	}
	return b
}

func TestHeaderRoundTrip(t *testing.T) {
	for name, want := range sampleHeaders() {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteHeader(&buf, want); err != nil {
				t.Fatalf("WriteHeader: %v", err)
			}
			buf.WriteString("payload")
			// One byte at a time shows that ReadHeader never reads ahead.
			r := iotest.OneByteReader(&buf)
			got, err := ReadHeader(r)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "payload" {
				t.Errorf("got %q after the header, want %q", rest, "payload")
			}
		})
	}
}

func TestHeaderWireFormat(t *testing.T) {
	b := encodeHeader(t, Header{Kind: KindData, Service: "db"})
	body := `{"service":"db"}`
	want := append([]byte{'P', 'T', 1, 2, 0, 0, 0, byte(len(body))}, body...)
	if !bytes.Equal(b, want) {
		t.Errorf("got %q, want %q", b, want)
	}
}

// rawHeader builds a header by hand, valid or not.
func rawHeader(magic string, version, kind byte, length uint32, body string) []byte {
	b := append([]byte(magic), version, kind)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, body...)
}

func TestReadHeaderErrors(t *testing.T) {
	body := `{"service":"db"}`
	n := uint32(len(body))
	tests := map[string]struct {
		in          []byte
		unsupported bool
	}{
		"empty":                {in: nil},
		"bad magic":            {in: rawHeader("XX", 1, 2, n, body)},
		"version 2":            {in: rawHeader("PT", 2, 2, n, body), unsupported: true},
		"version 0":            {in: rawHeader("PT", 0, 2, n, body), unsupported: true},
		"version 255":          {in: rawHeader("PT", 255, 2, n, body), unsupported: true},
		"kind 0":               {in: rawHeader("PT", 1, 0, n, body)},
		"kind 3":               {in: rawHeader("PT", 1, 3, n, body)},
		"too long":             {in: rawHeader("PT", 1, 2, MaxHeaderBody+1, body)},
		"huge length":          {in: rawHeader("PT", 1, 2, 0xFFFFFFFF, body)},
		"zero length":          {in: rawHeader("PT", 1, 2, 0, "")},
		"not JSON":             {in: rawHeader("PT", 1, 2, 5, "hello")},
		"JSON array":           {in: rawHeader("PT", 1, 2, 2, "[]")},
		"trailing garbage":     {in: rawHeader("PT", 1, 2, n+1, body+"x")},
		"data without service": {in: rawHeader("PT", 1, 2, 2, "{}")},
		"wrong field type":     {in: rawHeader("PT", 1, 2, 16, `{"service":true}`)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h, err := ReadHeader(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatalf("got header %+v, want an error", h)
			}
			if got := errors.Is(err, ErrUnsupportedVersion); got != tt.unsupported {
				t.Errorf("got errors.Is(err, ErrUnsupportedVersion) = %v, want %v (err: %v)", got, tt.unsupported, err)
			}
		})
	}
}

func TestReadHeaderUnsupportedVersionReadsPrefixOnly(t *testing.T) {
	in := rawHeader("PT", 2, 2, 3, "abc")
	r := bytes.NewReader(in)
	if _, err := ReadHeader(r); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("got %v, want ErrUnsupportedVersion", err)
	}
	if r.Len() != 3 {
		t.Errorf("got %d bytes left, want 3: a header of an unknown version is not consumed past its prefix", r.Len())
	}
}

func TestReadHeaderTruncated(t *testing.T) {
	for name, h := range sampleHeaders() {
		t.Run(name, func(t *testing.T) {
			b := encodeHeader(t, h)
			for i := range len(b) {
				if got, err := ReadHeader(bytes.NewReader(b[:i])); err == nil {
					t.Fatalf("prefix of %d/%d bytes: got %+v, want an error", i, len(b), got)
				}
			}
		})
	}
}

func TestWriteHeaderErrors(t *testing.T) {
	tests := map[string]Header{
		"kind 0":               {},
		"unknown kind":         {Kind: 9, Service: "db"},
		"data without service": {Kind: KindData},
		"too large":            {Kind: KindData, Service: "db", Params: map[string]string{"x": strings.Repeat("a", MaxHeaderBody)}},
	}
	for name, h := range tests {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteHeader(&buf, h); err == nil {
				t.Fatalf("got no error, want one")
			}
			if buf.Len() != 0 {
				t.Errorf("got %d bytes written, want 0", buf.Len())
			}
		})
	}
}

func TestKindString(t *testing.T) {
	tests := map[Kind]string{KindControl: "control", KindData: "data", 7: "kind(7)"}
	for k, want := range tests {
		if got := k.String(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func FuzzReadHeader(f *testing.F) {
	for _, h := range sampleHeaders() {
		f.Add(encodeHeader(f, h))
	}
	f.Add(rawHeader("PT", 2, 2, 2, "{}"))
	f.Add(rawHeader("PT", 1, 1, 4, "null"))
	f.Add(rawHeader("PT", 1, 2, 0xFFFFFFFF, ""))
	f.Add([]byte("PT"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ReadHeader(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		if consumed > len(in) || consumed < headerPrefixLen {
			t.Fatalf("consumed %d of %d bytes", consumed, len(in))
		}
		again, err := AppendHeader(nil, h)
		if err != nil {
			if consumed-headerPrefixLen > MaxHeaderBody/6 {
				return // JSON escaping can grow a body up to sixfold
			}
			t.Fatalf("re-encoding %+v: %v", h, err)
		}
		h2, err := ReadHeader(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("reading re-encoded header: %v", err)
		}
		if !reflect.DeepEqual(normalize(h), normalize(h2)) {
			t.Fatalf("got %+v after a round trip, want %+v", h2, h)
		}
	})
}

// normalize maps empty slices and maps to nil: the wire does not tell them
// apart.
func normalize(h Header) Header {
	if len(h.Groups) == 0 {
		h.Groups = nil
	}
	if len(h.Params) == 0 {
		h.Params = nil
	}
	return h
}
