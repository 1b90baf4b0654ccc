// Package classify decides which statement class — read, write, ddl or
// admin — each statement of a Postgres query string belongs to, so that the
// Postgres handler can hold an identity to the classes its policy allows
// (postgres.statements). Classes come from the real Postgres parse tree
// (pg_query), never from a keyword prefix, and the whole tree is walked:
// a function call, a row lock or a data-modifying statement is found in a
// CTE, a subquery, a LATERAL join, a VALUES list, a DEFAULT or any other
// place the grammar allows it.
//
// # Classes
//
// A statement's class is the strongest of what its kind implies and of
// everything nested inside it; a query string's class is the strongest of its
// statements' (Result.Class), so a multi-statement string is allowed only if
// every statement is.
//
//   - read: no side effect. SELECT, VALUES, TABLE, SHOW, EXPLAIN without
//     ANALYZE (of anything: nothing runs), EXPLAIN ANALYZE of a read, COPY ...
//     TO STDOUT, cursors (DECLARE/FETCH/MOVE/CLOSE), LISTEN, UNLISTEN,
//     DEALLOCATE, DISCARD PLANS/SEQUENCES, SET CONSTRAINTS, PREPARE of a read,
//     and SET/RESET of settings that only shape the session (search_path,
//     statement_timeout, application_name, DateStyle, TimeZone...).
//   - write: changes rows or takes locks other sessions feel. INSERT,
//     UPDATE, DELETE, MERGE, COPY FROM STDIN, TRUNCATE, LOCK TABLE, NOTIFY,
//     data-modifying CTEs, SELECT ... FOR UPDATE/NO KEY UPDATE/SHARE/KEY
//     SHARE, and calls to nextval, setval, pg_notify, lo_* (large objects)
//     and pg_advisory_* anywhere in the statement.
//   - ddl: changes the schema or privileges. CREATE/ALTER/DROP of schema
//     objects (temporary ones too), SELECT ... INTO, CREATE TABLE AS, COMMENT,
//     SECURITY LABEL, GRANT/REVOKE of privileges, ALTER DEFAULT PRIVILEGES,
//     DISCARD TEMP, and table maintenance on objects the role owns: VACUUM,
//     ANALYZE, CLUSTER, REINDEX, REFRESH MATERIALIZED VIEW.
//   - admin: reaches beyond the data. ALTER SYSTEM, CHECKPOINT, LOAD, COPY
//     to or from a server file or PROGRAM, roles and role membership
//     (CREATE/ALTER/DROP ROLE, GRANT/REVOKE ROLE, REASSIGN OWNED), databases,
//     tablespaces, extensions, languages, access methods, event triggers,
//     foreign data wrappers, servers, foreign tables and user mappings,
//     publications and subscriptions, two-phase commit (PREPARE TRANSACTION,
//     COMMIT/ROLLBACK PREPARED: they outlive the session), DO blocks (their
//     code cannot be analysed), CALL (a procedure may COMMIT and run anything;
//     a policy can allow the tag CALL instead), anything that lifts read-only
//     mode or changes who the session is (below), and calls to functions that
//     act on the server, its files or other sessions: pg_terminate_backend,
//     pg_cancel_backend, pg_read_file, pg_read_binary_file, pg_ls_*,
//     pg_stat_file, pg_file_*, lo_import, lo_export, dblink*, pg_reload_conf,
//     pg_rotate_logfile, pg_promote, pg_switch_wal, backup and replication
//     slot/origin functions, pg_stat_reset*, and functions that run a query
//     given as text (query_to_xml and friends, ts_stat).
//
// Transaction control (BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK,
// ABORT, SAVEPOINT, RELEASE, ROLLBACK TO) is part of every class: it is read
// with TxControl set. BEGIN/START TRANSACTION READ WRITE is admin instead.
//
// # Settings
//
// SET, RESET and set_config() with a constant setting name are judged by the
// setting. These are admin: RESET ALL and DISCARD ALL; any value other than
// on (including RESET and DEFAULT) for default_transaction_read_only and
// transaction_read_only; SET TRANSACTION / SET SESSION CHARACTERISTICS AS
// TRANSACTION READ WRITE; role and session_authorization; settings that
// switch off server safety checks, load libraries or control server logging
// (session_replication_role, zero_damaged_pages, *_preload_libraries, log_*,
// ...). standard_conforming_strings may only be turned on and client_encoding
// may only be UTF8: the classifier reads string literals as a server with
// those settings does, and a server reading them differently could see a
// statement where the classifier saw a string. set_config() with a computed
// setting name is admin.
//
// # Failing closed
//
// Text that does not parse, text holding a NUL byte or invalid UTF-8, a
// statement node type the rules do not know, and an internal error all
// classify as admin (a parse error is Result.Err): such text is forwarded
// only for an identity that may run everything. An unknown Class ranks as
// admin.
//
// # Command tags
//
// Statement.Tag is the command tag Postgres reports ("SELECT", "CREATE
// TABLE", "SELECT FOR UPDATE", "SELECT INTO"...). Statement.Base is the class
// the tag alone implies; Class is higher when something inside raised it
// (SELECT nextval('s') is tag SELECT, base read, class write). A policy
// listing command tags should match a tag only when Class == Base.
//
// # Prepared statements
//
// PREPARE name AS query carries the classification of query (its Class is
// query's). EXECUTE name — and EXPLAIN ANALYZE EXECUTE, CREATE TABLE AS
// EXECUTE — is admin until the caller resolves it with Statement.Resolve
// against the PREPARE it recorded for that name: which statement a name
// means is session state the caller keeps (see PreparedInfo).
//
// # What the classifier cannot see
//
// A user-defined function, operator, cast, view or trigger can do whatever
// its owner wrote, and a call to one classifies by name only (names of the
// built-in side-effect functions are matched whatever the schema). Function
// bodies given as strings are not parsed; BEGIN ATOMIC bodies are, and count
// as if they ran. This is why the Postgres handler also starts the server
// sessions of read-only identities with default_transaction_read_only on,
// and should watch the server's ParameterStatus reports of
// standard_conforming_strings and client_encoding: the classifier is one
// layer of defence, not the only one.
//
// # Cache
//
// Classifier caches classifications by statement text in a bounded LRU so
// that the parser (a cgo call and a protobuf decode) is not on the path of
// every repeated query. Text longer than MaxCachedLen is not cached.
package classify
