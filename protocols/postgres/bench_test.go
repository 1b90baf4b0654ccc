package postgres

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
)

// BenchmarkQuery measures one round trip of a simple-protocol query with a
// new constant each time (as pgbench -S sends them): directly to the
// server; through two plain TCP relays (the shape of the handler's test
// setup: a relay in its place, then the stand-in agent's relay); and
// through the handler and the stand-in agent. No TLS, no tunnel: handler
// minus relay is what reading, deciding and recording each query cost.
func BenchmarkQuery(b *testing.B) {
	for _, path := range []string{"direct", "relay", "handler"} {
		b.Run(path, func(b *testing.B) {
			ctx := context.Background()
			var c *pgx.Conn
			switch path {
			case "direct", "relay":
				addr := pgAddr
				if path == "relay" {
					addr = relayTwice(b)
				}
				host, port, _ := net.SplitHostPort(addr)
				var err error
				if c, err = pgx.Connect(ctx, "host="+host+" port="+port+" user=postgres dbname=postgres sslmode=disable"); err != nil {
					b.Fatal(err)
				}
				defer c.Close(ctx)
			default:
				c = serve(b, readers{}, 0).connect(b, "")
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Exec(ctx, fmt.Sprintf("SELECT %d", i), pgx.QueryExecModeSimpleProtocol); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// relayTwice listens on loopback and relays each connection to the server
// through two plain TCP relays, and returns its address.
func relayTwice(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	splice := func(x, y net.Conn) {
		go func() { io.Copy(x, y); x.Close() }()
		go func() { io.Copy(y, x); y.Close() }()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a, m := tcpPair(b)
			pg, err := net.Dial("tcp", pgAddr)
			if err != nil {
				c.Close()
				continue
			}
			splice(c, a)
			splice(m, pg)
		}
	}()
	return ln.Addr().String()
}
