package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/postern/postern/connect"
)

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "connect SERVICE --listen 127.0.0.1:PORT [--gateway ADDR] [--identity DIR] [--public-name NAME]"
	fs := newFlags("connect", usage, stderr)
	listen := fs.String("listen", "", "local address to listen on (plaintext), e.g. 127.0.0.1:15432")
	gw := fs.String("gateway", "127.0.0.1:8443", "gateway address")
	identity := fs.String("identity", envOr("POSTERN_IDENTITY", "./postern-identity"), "directory with svid.pem, svid_key.pem, svid_bundle.pem (env POSTERN_IDENTITY)")
	publicName := fs.String("public-name", "localhost", "the gateway's public name; the service is reached as SERVICE.NAME")
	var logs logFlags
	logs.register(fs)
	// The service may come before or after the flags.
	var service string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		service, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if service == "" && fs.NArg() == 1 {
		service = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usagef("connect takes one service, got %q", fs.Args())
	}
	if service == "" || *listen == "" {
		return usagef("usage: postern %s", usage)
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf("listening", err)
	}
	p := &connect.Proxy{Service: service, Gateway: *gw, PublicName: *publicName, IdentityDir: *identity, Logger: logger}
	if err := p.Check(); err != nil {
		ln.Close()
		return errorf("loading identity", err)
	}
	fmt.Fprintf(stderr, "postern: forwarding %s to service %s through %s\n", ln.Addr(), service, *gw)
	return p.Serve(ctx, ln)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
