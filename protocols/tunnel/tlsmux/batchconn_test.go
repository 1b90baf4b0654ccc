package tlsmux

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// countingConn counts the writes that reach it.
type countingConn struct {
	net.Conn
	writes int
	data   bytes.Buffer
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.data.Write(p)
}

func TestBatchConn(t *testing.T) {
	tests := map[string]struct {
		batches    [][]string // writes grouped in held batches; a one-element group outside a batch is written through
		held       []bool
		wantWrites int
	}{
		"write through":       {batches: [][]string{{"a"}, {"b"}}, held: []bool{false, false}, wantWrites: 2},
		"one batch":           {batches: [][]string{{"hdr", "body", "tail"}}, held: []bool{true}, wantWrites: 1},
		"batch then through":  {batches: [][]string{{"x", "y"}, {"z"}}, held: []bool{true, false}, wantWrites: 2},
		"empty batch flushes": {batches: [][]string{{}}, held: []bool{true}, wantWrites: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			under := &countingConn{}
			c := NewBatchConn(under)
			var want bytes.Buffer
			for i, group := range tc.batches {
				if tc.held[i] {
					c.Hold()
				}
				for _, w := range group {
					io.WriteString(c, w)
					want.WriteString(w)
				}
				if tc.held[i] {
					if err := c.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if under.writes != tc.wantWrites {
				t.Fatalf("got %d writes, want %d", under.writes, tc.wantWrites)
			}
			if got := under.data.String(); got != want.String() {
				t.Fatalf("got bytes %q, want %q", got, want.String())
			}
		})
	}
}
