package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/bearer"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/pki"
)

const (
	apikeyCreateUsage = "apikey create --id SPIFFE_ID [--group G]... [--ttl D] [--data-dir DIR]"
	apikeyRevokeUsage = "apikey revoke KEY_ID [--data-dir DIR]"
	apikeyListUsage   = "apikey list [--data-dir DIR] [--format text|json]"
)

func runAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const short = "usage: postern apikey create|revoke|list [flags] (see postern apikey --help)"
	if len(args) == 0 {
		return usagef("%s", short)
	}
	switch args[0] {
	case "create":
		return runAPIKeyCreate(ctx, args[1:], stdout, stderr)
	case "revoke":
		return runAPIKeyRevoke(ctx, args[1:], stdout, stderr)
	case "list":
		return runAPIKeyList(ctx, args[1:], stdout, stderr)
	case "-h", "--help":
		fmt.Fprintf(stderr, "Usage: postern %s\n       postern %s\n       postern %s\n",
			apikeyCreateUsage, apikeyRevokeUsage, apikeyListUsage)
		return errHelp
	}
	return usagef("unknown apikey command %q; %s", args[0], short)
}

// runAPIKeyCreate prints a new key on stdout, the only time it is shown,
// and on stderr what it is for.
func runAPIKeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("apikey create", apikeyCreateUsage, stderr)
	idFlag := fs.String("id", "", "SPIFFE ID the key authenticates as, spiffe://TD/user/NAME or spiffe://TD/workload/NAME")
	var groups listFlag
	fs.Var(&groups, "group", "group the identity belongs to (repeatable)")
	ttl := fs.Duration("ttl", 0, "how long the key works (0: until revoked)")
	dataDir := fs.String("data-dir", "./postern-data", "the gateway's data directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("apikey create takes no arguments, got %q", fs.Args())
	}
	if *idFlag == "" {
		return usagef("--id is required")
	}
	id, err := spiffeid.FromString(*idFlag)
	if err != nil {
		return usagef("--id %q: %v", *idFlag, err)
	}
	if k := pki.Kind(id); k != pki.KindUser && k != pki.KindWorkload {
		return usagef("--id %q: API keys are for spiffe://TD/user/NAME or spiffe://TD/workload/NAME", *idFlag)
	}
	for _, g := range groups {
		if strings.TrimSpace(g) == "" {
			return usagef("--group: empty group name")
		}
	}
	if *ttl < 0 {
		return usagef("--ttl %s: must be 0 (no expiry) or positive", *ttl)
	}
	d, err := gateway.OpenExistingDataDir(ctx, *dataDir)
	if err != nil {
		return errorf("opening data dir", err)
	}
	defer d.Close()
	if id.TrustDomain() != d.CA.TrustDomain() {
		return usagef("--id %q: this gateway's trust domain is %q", *idFlag, d.CA.TrustDomain().Name())
	}
	key, rec, err := bearer.NewAPIKey(id, groups, time.Now().UTC(), *ttl)
	if err != nil {
		return errorf("creating API key", err)
	}
	if err := d.Store.CreateAPIKey(ctx, rec); err != nil {
		return err // the store's error says what failed
	}
	fmt.Fprintln(stdout, key)
	expires := "never expires"
	if !rec.ExpiresAt.IsZero() {
		expires = "valid until " + rec.ExpiresAt.Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "API key %s for %s (groups: %v), %s; it is shown only this once\n",
		rec.KeyID, id, []string(groups), expires)
	return nil
}

func runAPIKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("apikey revoke", apikeyRevokeUsage, stderr)
	dataDir := fs.String("data-dir", "./postern-data", "the gateway's data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: postern %s", apikeyRevokeUsage)
	}
	keyID := pos[0]
	if strings.HasPrefix(keyID, bearer.APIKeyPrefix) {
		return usagef("give the key id (the %d characters after %q), not the key", bearer.KeyIDLen, bearer.APIKeyPrefix)
	}
	d, err := gateway.OpenExistingDataDir(ctx, *dataDir)
	if err != nil {
		return errorf("opening data dir", err)
	}
	defer d.Close()
	if err := d.Store.RevokeAPIKey(ctx, keyID, time.Now().UTC()); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("revoking API key %s: no such key (postern apikey list shows them)", keyID)
	} else if err != nil {
		return err // the store's error says what failed
	}
	fmt.Fprintf(stdout, "revoked API key %s\n", keyID)
	return nil
}

// apiKeyJSON is one key in `apikey list --format json`; never the hash.
type apiKeyJSON struct {
	KeyID     string     `json:"key_id"`
	ID        string     `json:"spiffe_id"`
	Groups    []string   `json:"groups"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func runAPIKeyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("apikey list", apikeyListUsage, stderr)
	dataDir := fs.String("data-dir", "./postern-data", "the gateway's data directory")
	format := fs.String("format", "text", "output format: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("apikey list takes no arguments, got %q", fs.Args())
	}
	if *format != "text" && *format != "json" {
		return usagef("--format %q: want text or json", *format)
	}
	d, err := gateway.OpenExistingDataDir(ctx, *dataDir)
	if err != nil {
		return errorf("opening data dir", err)
	}
	defer d.Close()
	keys, err := d.Store.APIKeys(ctx)
	if err != nil {
		return errorf("listing API keys", err)
	}
	now := time.Now()
	if *format == "json" {
		out := make([]apiKeyJSON, 0, len(keys))
		for _, k := range keys {
			j := apiKeyJSON{KeyID: k.KeyID, ID: k.ID, Groups: k.Groups, Status: keyStatus(k, now), CreatedAt: k.CreatedAt}
			if j.Groups == nil {
				j.Groups = []string{}
			}
			if !k.ExpiresAt.IsZero() {
				j.ExpiresAt = &k.ExpiresAt
			}
			if !k.RevokedAt.IsZero() {
				j.RevokedAt = &k.RevokedAt
			}
			out = append(out, j)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tSPIFFE ID\tGROUPS\tSTATUS\tCREATED\tEXPIRES")
	for _, k := range keys {
		expires := "never"
		if !k.ExpiresAt.IsZero() {
			expires = k.ExpiresAt.Format(time.RFC3339)
		}
		groups := strings.Join(k.Groups, ",")
		if groups == "" {
			groups = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.KeyID, k.ID, groups, keyStatus(k, now),
			k.CreatedAt.Format(time.RFC3339), expires)
	}
	return tw.Flush()
}

// keyStatus is "revoked", "expired" or "active", as the gateway would see
// the key at now.
func keyStatus(k store.APIKey, now time.Time) string {
	switch {
	case !k.RevokedAt.IsZero():
		return "revoked"
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return "expired"
	}
	return "active"
}

// parseInterleaved parses flags that may come before or after the
// positional arguments, and returns those.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Args()[0])
		args = fs.Args()[1:]
	}
}
