// Package pgtest starts private PostgreSQL clusters for tests of the ways
// Postern logs in to Postgres (SCRAM-SHA-256, MD5, cleartext password,
// client certificates, TLS), which a shared trust-only system cluster
// cannot show.
//
// Start gives each caller its own cluster, listening on 127.0.0.1 at a free
// port with ssl=on, and stops and removes it when the test ends. To be
// fast, a test binary runs initdb and the setup SQL only once, into a
// template directory, and each Start copies that template and starts a
// postmaster on the copy (about 0.3s). Tests that only log in and read may
// share one cluster through subtests.
//
// Every cluster has the same roles (see the constants), whose passwords are
// made fresh per test binary; pg_hba.conf lets each role in only by its own
// method and rejects everything else:
//
//	hostssl all cert_user  127.0.0.1/32 cert
//	host    all scram_user 127.0.0.1/32 scram-sha-256
//	host    all md5_user   127.0.0.1/32 md5        (its password stored as an md5 hash)
//	host    all clear_user 127.0.0.1/32 password
//	host    all postgres   127.0.0.1/32 trust
//
// and a database "app" owned by postgres with a table items(id int primary
// key, name text) of three rows, readable by the four roles.
//
// The certificates (a CA, the server's certificate for 127.0.0.1 and
// localhost, and cert_user's client certificate) are generated in Go per
// test binary; nothing is committed. The binaries are the newest under
// /usr/lib/postgresql/*/bin, else initdb and postgres on the PATH; when
// there are none, Start fails the test (it never skips: CI installs them).
// As root, the clusters run as the user postgres, since initdb and
// postgres refuse to run as root.
//
// The postmaster gets SIGQUIT if the test binary dies, and the next test
// binary removes the directories that a dead one left behind.
package pgtest
