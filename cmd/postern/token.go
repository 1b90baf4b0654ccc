package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/pki/jointoken"
)

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stderr, "Usage: postern token create --name NAME [--ttl 15m] [--data-dir DIR]")
			return errHelp
		}
		return usagef("usage: postern token create --name NAME [--ttl 15m] [--data-dir DIR]")
	}
	fs := newFlags("token create", "token create --name NAME [--ttl 15m] [--data-dir DIR]", stderr)
	name := fs.String("name", "", "agent name the token is bound to")
	ttl := fs.Duration("ttl", jointoken.DefaultTTL, "how long the token can be used")
	dataDir := fs.String("data-dir", "./postern-data", "the gateway's data directory")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *name == "" {
		return usagef("--name is required")
	}
	if *ttl <= 0 {
		return usagef("--ttl must be positive")
	}
	d, err := gateway.OpenExistingDataDir(ctx, *dataDir)
	if err != nil {
		return errorf("opening data dir", err)
	}
	defer d.Close()
	tok, claims, err := d.MintToken(*name, *ttl)
	if err != nil {
		return errorf("creating token", err)
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "join token %s for agent %q, valid until %s (single use)\n", claims.ID, *name, claims.ExpiresAt.Format(time.RFC3339))
	return nil
}
