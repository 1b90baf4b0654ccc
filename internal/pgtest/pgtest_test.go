package pgtest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestStart: a cluster takes logins, holds the roles with the password
// hashes their methods need and the table, and a second one is its own.
func TestStart(t *testing.T) {
	begin := time.Now()
	c := Start(t)
	t.Logf("first cluster in %s", time.Since(begin))
	ctx := context.Background()
	conn, err := c.connect(ctx, Superuser, Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, `SELECT rolname, coalesce(left(rolpassword, 6), '') FROM pg_authid WHERE rolname LIKE '%_user' ORDER BY 1;
		SELECT count(*) FROM items;
		SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL`).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]string{}
	for _, r := range res[0].Rows {
		hashes[string(r[0])] = string(r[1])
	}
	want := map[string]string{CertUser: "", ClearUser: "SCRAM-", MD5User: "md5", ScramUser: "SCRAM-"}
	for role, prefix := range want {
		if got, ok := hashes[role]; !ok || !strings.HasPrefix(got, prefix) || (prefix == "" && got != "") {
			t.Errorf("role %s: got password hash %q, want prefix %q", role, got, prefix)
		}
	}
	if got := string(res[1].Rows[0][0]); got != "3" {
		t.Errorf("got %s items, want 3", got)
	}
	if got := string(res[2].Rows[0][0]); got != "0" {
		t.Errorf("got %s bad pg_hba lines, want 0", got)
	}
	if len(c.Passwords) != 3 || c.ClientCert.Leaf == nil || c.ClientCert.Leaf.Subject.CommonName != CertUser {
		t.Errorf("got passwords %d and client cert %v, want 3 and CN=%s", len(c.Passwords), c.ClientCert.Leaf, CertUser)
	}

	begin = time.Now()
	c2 := Start(t)
	t.Logf("second cluster in %s", time.Since(begin))
	if c2.Addr == c.Addr || c2.Dir == c.Dir {
		t.Fatalf("second cluster shares %s / %s with the first", c2.Addr, c2.Dir)
	}
	c2.Stop()
	if _, err := c2.connect(ctx, Superuser, "postgres"); err == nil {
		t.Fatal("a stopped cluster still takes logins")
	}
}
