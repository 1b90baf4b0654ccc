package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/pki"
)

func runIdentity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "identity issue --id SPIFFE_ID [--group G]... [--ttl 1h] --out DIR [--data-dir DIR]"
	if len(args) == 0 || args[0] != "issue" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stderr, "Usage: postern "+usage)
			return errHelp
		}
		return usagef("usage: postern %s", usage)
	}
	fs := newFlags("identity issue", usage, stderr)
	idFlag := fs.String("id", "", "SPIFFE ID, spiffe://TD/user/NAME or spiffe://TD/workload/NAME")
	var groups listFlag
	fs.Var(&groups, "group", "group the identity belongs to (repeatable)")
	ttl := fs.Duration("ttl", 0, "lifetime (default: 8h for users, 1h for workloads; at least 1m)")
	out := fs.String("out", "", "directory to write svid.pem, svid_key.pem and svid_bundle.pem to")
	dataDir := fs.String("data-dir", "./postern-data", "the gateway's data directory")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *idFlag == "" || *out == "" {
		return usagef("--id and --out are required")
	}
	id, err := spiffeid.FromString(*idFlag)
	if err != nil {
		return usagef("--id %q: %v", *idFlag, err)
	}
	if k := pki.Kind(id); k != "user" && k != "workload" {
		return usagef("--id %q: identities are spiffe://TD/user/NAME or spiffe://TD/workload/NAME (agents enroll with a token)", *idFlag)
	}
	if *ttl != 0 && *ttl < pki.MinTTL {
		return usagef("--ttl %s: the shortest lifetime is %s", *ttl, pki.MinTTL)
	}
	d, err := gateway.OpenExistingDataDir(ctx, *dataDir)
	if err != nil {
		return errorf("opening data dir", err)
	}
	defer d.Close()
	if id.TrustDomain() != d.CA.TrustDomain() {
		return usagef("--id %q: this gateway's trust domain is %q", *idFlag, d.CA.TrustDomain().Name())
	}
	svid, err := d.Issue(ctx, pki.IssueRequest{ID: id, Groups: groups, TTL: *ttl})
	if err != nil {
		return errorf("issuing identity", err)
	}
	if err := pki.WriteFiles(*out, svid, d.CA.Roots()); err != nil {
		return errorf("writing identity", err)
	}
	fmt.Fprintf(stdout, "issued %s (groups: %v), valid until %s, written to %s\n",
		id, []string(groups), svid.Certificates[0].NotAfter.Format(time.RFC3339), *out)
	return nil
}
