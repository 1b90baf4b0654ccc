package tunnel_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/postern/postern/protocols/tunnel"
)

// BenchmarkStreamOpen measures what a client connection costs the tunnel:
// open a stream, write a header, read the reply, close.
func BenchmarkStreamOpen(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			client, server := pair(b, tr, nil)
			serve(b, server, acceptData)
			h := tunnel.Header{Kind: tunnel.KindData, Service: "db", Session: "s-1", Identity: "spiffe://postern.local/user/alice", Source: "127.0.0.1:40000"}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := openOne(ctx, client, h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStreamOpenParallel is BenchmarkStreamOpen with many streams at
// once.
func BenchmarkStreamOpenParallel(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			client, server := pair(b, tr, nil)
			serve(b, server, acceptData)
			h := tunnel.Header{Kind: tunnel.KindData, Service: "db"}
			ctx := context.Background()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := openOne(ctx, client, h); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func openOne(ctx context.Context, s tunnel.Session, h tunnel.Header) error {
	st, err := s.OpenStream(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := tunnel.WriteHeader(st, h); err != nil {
		return err
	}
	r, err := tunnel.ReadReply(st)
	if err != nil {
		return err
	}
	if !r.OK {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// acceptData is the agent's side of a data stream, minus the service.
func acceptData(st net.Conn) {
	if _, err := tunnel.ReadHeader(st); err != nil {
		return
	}
	if err := tunnel.WriteReply(st, tunnel.Reply{OK: true}); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, st)
}

// BenchmarkBulkCopy measures one stream's throughput with 1 MiB writes.
func BenchmarkBulkCopy(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			client, server := pair(b, tr, nil)
			serve(b, server, func(st net.Conn) {
				n, _ := io.CopyBuffer(onlyWriter{io.Discard}, onlyReader{st}, make([]byte, 256<<10))
				_, _ = st.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
			})
			st, err := client.OpenStream(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			var sent int64
			for b.Loop() {
				n, err := st.Write(buf)
				sent += int64(n)
				if err != nil {
					b.Fatal(err)
				}
			}
			// Count the time until the last byte has arrived.
			if err := st.(tunnel.CloseWriter).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			var got [8]byte
			if _, err := io.ReadFull(st, got[:]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if n := int64(binary.BigEndian.Uint64(got[:])); n != sent {
				b.Fatalf("server got %d bytes, want %d", n, sent)
			}
		})
	}
}

// BenchmarkRoundTrip measures what one small message there and back costs
// on an open stream — a query and its answer: 64 bytes written, echoed,
// read. tcp is the same over a plain loopback TCP connection, the yardstick.
func BenchmarkRoundTrip(b *testing.B) {
	echo := func(c net.Conn) { _, _ = io.CopyBuffer(onlyWriter{c}, onlyReader{c}, make([]byte, 32<<10)) }
	roundTrips := func(b *testing.B, c net.Conn) {
		msg, got := make([]byte, 64), make([]byte, 64)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("tcp", func(b *testing.B) {
		c, s := loopbackPair(b)
		go echo(s)
		roundTrips(b, c)
	})
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			client, server := pair(b, tr, nil)
			serve(b, server, echo)
			st, err := client.OpenStream(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			roundTrips(b, st)
		})
	}
}
