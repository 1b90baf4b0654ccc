package classify

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// kind is what a statement node's type (and flags) alone imply.
type kind struct {
	class  Class
	tag    string
	tx     bool // transaction control
	dml    bool // INSERT, UPDATE, DELETE or MERGE
	reason string

	deallocate string // DEALLOCATE name
}

func readKind(tag string) kind { return kind{class: Read, tag: tag} }

func writeKind(tag, reason string) kind { return kind{class: Write, tag: tag, reason: reason} }

func dmlKind(tag string) kind {
	return kind{class: Write, tag: tag, dml: true, reason: tag + " changes rows"}
}

func ddlKind(tag string) kind { return kind{class: DDL, tag: tag, reason: tag + " changes the schema"} }

func adminKind(tag, reason string) kind { return kind{class: Admin, tag: tag, reason: reason} }

// objectKind is ddl, or admin for objects that reach beyond the database's
// own schema (see adminObject).
func objectKind(tag string, t pg_query.ObjectType) kind {
	if adminObject(t) {
		return adminKind(tag, tag+" manages "+strings.ToLower(objName(t))+"s, which reach beyond the database's data")
	}
	return ddlKind(tag)
}

// kindOf classifies a statement node by its type. ok is false for nodes that
// are not statements (expressions, clauses...). A statement type it does not
// know is admin: unknown means refused for everyone but admins.
func kindOf(m protoreflect.Message) (k kind, ok bool) {
	switch x := m.Interface().(type) {
	// Queries.
	case *pg_query.SelectStmt:
		return selectKind(x), true
	case *pg_query.SetOperationStmt:
		return readKind("SELECT"), true
	case *pg_query.InsertStmt:
		return dmlKind("INSERT"), true
	case *pg_query.UpdateStmt:
		return dmlKind("UPDATE"), true
	case *pg_query.DeleteStmt:
		return dmlKind("DELETE"), true
	case *pg_query.MergeStmt:
		return dmlKind("MERGE"), true
	case *pg_query.CopyStmt:
		return copyKind(x), true
	case *pg_query.ExplainStmt:
		return readKind("EXPLAIN"), true
	case *pg_query.ReturnStmt: // the body of a LANGUAGE sql function
		return readKind("RETURN"), true

	// Session, transaction and cursor control.
	case *pg_query.TransactionStmt:
		return transactionKind(x), true
	case *pg_query.VariableSetStmt:
		return setKind(x), true
	case *pg_query.VariableShowStmt:
		return readKind("SHOW"), true
	case *pg_query.ConstraintsSetStmt:
		return readKind("SET CONSTRAINTS"), true
	case *pg_query.PrepareStmt:
		return readKind("PREPARE"), true
	case *pg_query.ExecuteStmt:
		return readKind("EXECUTE"), true
	case *pg_query.DeallocateStmt:
		if x.GetIsall() || x.GetName() == "" {
			return readKind("DEALLOCATE ALL"), true
		}
		k := readKind("DEALLOCATE")
		k.deallocate = x.GetName()
		return k, true
	case *pg_query.DeclareCursorStmt:
		return readKind("DECLARE CURSOR"), true
	case *pg_query.FetchStmt:
		if x.GetIsmove() {
			return readKind("MOVE"), true
		}
		return readKind("FETCH"), true
	case *pg_query.ClosePortalStmt:
		if x.GetPortalname() == "" {
			return readKind("CLOSE CURSOR ALL"), true
		}
		return readKind("CLOSE CURSOR"), true
	case *pg_query.ListenStmt:
		return readKind("LISTEN"), true
	case *pg_query.UnlistenStmt:
		return readKind("UNLISTEN"), true
	case *pg_query.NotifyStmt:
		return writeKind("NOTIFY", "NOTIFY signals other sessions"), true
	case *pg_query.LockStmt:
		return writeKind("LOCK TABLE", "LOCK TABLE blocks other sessions"), true
	case *pg_query.TruncateStmt:
		return writeKind("TRUNCATE TABLE", "TRUNCATE removes rows"), true
	case *pg_query.DiscardStmt:
		switch x.GetTarget() {
		case pg_query.DiscardMode_DISCARD_PLANS:
			return readKind("DISCARD PLANS"), true
		case pg_query.DiscardMode_DISCARD_SEQUENCES:
			return readKind("DISCARD SEQUENCES"), true
		case pg_query.DiscardMode_DISCARD_TEMP:
			return kind{class: DDL, tag: "DISCARD TEMP", reason: "DISCARD TEMP drops temporary tables"}, true
		}
		return adminKind("DISCARD ALL", "DISCARD ALL resets every setting, read-only mode included"), true

	// Code the classifier cannot see into.
	case *pg_query.DoStmt:
		return adminKind("DO", "DO runs procedural code that cannot be analysed"), true
	case *pg_query.CallStmt:
		return adminKind("CALL", "CALL runs a procedure, which may commit and run any statement"), true

	// Maintenance of tables the role owns.
	case *pg_query.VacuumStmt:
		if x.GetIsVacuumcmd() {
			return kind{class: DDL, tag: "VACUUM", reason: "VACUUM is table maintenance"}, true
		}
		return kind{class: DDL, tag: "ANALYZE", reason: "ANALYZE is table maintenance"}, true
	case *pg_query.ClusterStmt:
		return kind{class: DDL, tag: "CLUSTER", reason: "CLUSTER is table maintenance"}, true
	case *pg_query.ReindexStmt:
		return kind{class: DDL, tag: "REINDEX", reason: "REINDEX is table maintenance"}, true
	case *pg_query.RefreshMatViewStmt:
		return kind{class: DDL, tag: "REFRESH MATERIALIZED VIEW", reason: "REFRESH MATERIALIZED VIEW is table maintenance"}, true

	// Schema.
	case *pg_query.CreateStmt:
		return ddlKind("CREATE TABLE"), true
	case *pg_query.CreateTableAsStmt:
		switch {
		case x.GetObjtype() == pg_query.ObjectType_OBJECT_MATVIEW:
			return ddlKind("CREATE MATERIALIZED VIEW"), true
		case x.GetIsSelectInto():
			return kind{class: DDL, tag: "SELECT INTO", reason: "SELECT ... INTO creates a table"}, true
		}
		return ddlKind("CREATE TABLE AS"), true
	case *pg_query.AlterTableStmt:
		return objectKind("ALTER "+objName(x.GetObjtype()), x.GetObjtype()), true
	case *pg_query.ReplicaIdentityStmt: // inside ALTER TABLE
		return ddlKind("ALTER TABLE"), true
	case *pg_query.IndexStmt:
		return ddlKind("CREATE INDEX"), true
	case *pg_query.ViewStmt:
		return ddlKind("CREATE VIEW"), true
	case *pg_query.CreateSeqStmt:
		return ddlKind("CREATE SEQUENCE"), true
	case *pg_query.AlterSeqStmt:
		return ddlKind("ALTER SEQUENCE"), true
	case *pg_query.CreateFunctionStmt:
		if x.GetIsProcedure() {
			return ddlKind("CREATE PROCEDURE"), true
		}
		return ddlKind("CREATE FUNCTION"), true
	case *pg_query.AlterFunctionStmt:
		return ddlKind("ALTER " + objName(x.GetObjtype())), true
	case *pg_query.CreateSchemaStmt:
		return ddlKind("CREATE SCHEMA"), true
	case *pg_query.CreateTrigStmt:
		return ddlKind("CREATE TRIGGER"), true
	case *pg_query.RuleStmt:
		return ddlKind("CREATE RULE"), true
	case *pg_query.CreateEnumStmt, *pg_query.CompositeTypeStmt, *pg_query.CreateRangeStmt:
		return ddlKind("CREATE TYPE"), true
	case *pg_query.AlterEnumStmt, *pg_query.AlterTypeStmt:
		return ddlKind("ALTER TYPE"), true
	case *pg_query.CreateDomainStmt:
		return ddlKind("CREATE DOMAIN"), true
	case *pg_query.AlterDomainStmt:
		return ddlKind("ALTER DOMAIN"), true
	case *pg_query.DefineStmt:
		return objectKind("CREATE "+objName(x.GetKind()), x.GetKind()), true
	case *pg_query.CreatePolicyStmt:
		return ddlKind("CREATE POLICY"), true
	case *pg_query.AlterPolicyStmt:
		return ddlKind("ALTER POLICY"), true
	case *pg_query.CreateStatsStmt:
		return ddlKind("CREATE STATISTICS"), true
	case *pg_query.AlterStatsStmt:
		return ddlKind("ALTER STATISTICS"), true
	case *pg_query.CreateCastStmt:
		return ddlKind("CREATE CAST"), true
	case *pg_query.CreateOpClassStmt:
		return ddlKind("CREATE OPERATOR CLASS"), true
	case *pg_query.CreateOpFamilyStmt:
		return ddlKind("CREATE OPERATOR FAMILY"), true
	case *pg_query.AlterOpFamilyStmt:
		return ddlKind("ALTER OPERATOR FAMILY"), true
	case *pg_query.AlterOperatorStmt:
		return ddlKind("ALTER OPERATOR"), true
	case *pg_query.CreateConversionStmt:
		return ddlKind("CREATE CONVERSION"), true
	case *pg_query.CreateTransformStmt:
		return ddlKind("CREATE TRANSFORM"), true
	case *pg_query.AlterCollationStmt:
		return ddlKind("ALTER COLLATION"), true
	case *pg_query.AlterTSDictionaryStmt:
		return ddlKind("ALTER TEXT SEARCH DICTIONARY"), true
	case *pg_query.AlterTSConfigurationStmt:
		return ddlKind("ALTER TEXT SEARCH CONFIGURATION"), true
	case *pg_query.AlterObjectDependsStmt:
		return ddlKind("ALTER " + objName(x.GetObjectType())), true
	case *pg_query.CommentStmt:
		return ddlKind("COMMENT"), true
	case *pg_query.SecLabelStmt:
		return ddlKind("SECURITY LABEL"), true
	case *pg_query.DropStmt:
		return objectKind("DROP "+objName(x.GetRemoveType()), x.GetRemoveType()), true
	case *pg_query.RenameStmt:
		return objectKind("ALTER "+objName(x.GetRenameType()), x.GetRenameType()), true
	case *pg_query.AlterOwnerStmt:
		return objectKind("ALTER "+objName(x.GetObjectType()), x.GetObjectType()), true
	case *pg_query.AlterObjectSchemaStmt:
		return objectKind("ALTER "+objName(x.GetObjectType()), x.GetObjectType()), true
	case *pg_query.DropOwnedStmt:
		return ddlKind("DROP OWNED"), true

	// Privileges.
	case *pg_query.GrantStmt:
		if x.GetIsGrant() {
			return kind{class: DDL, tag: "GRANT", reason: "GRANT changes privileges"}, true
		}
		return kind{class: DDL, tag: "REVOKE", reason: "REVOKE changes privileges"}, true
	case *pg_query.AlterDefaultPrivilegesStmt:
		return kind{class: DDL, tag: "ALTER DEFAULT PRIVILEGES", reason: "ALTER DEFAULT PRIVILEGES changes privileges"}, true

	// Beyond the data: roles, databases, tablespaces, the server, code
	// loaded into it, other servers, replication.
	case *pg_query.GrantRoleStmt:
		if x.GetIsGrant() {
			return adminKind("GRANT ROLE", "GRANT ROLE changes role membership"), true
		}
		return adminKind("REVOKE ROLE", "REVOKE ROLE changes role membership"), true
	case *pg_query.CreateRoleStmt:
		return adminKind("CREATE ROLE", "CREATE ROLE manages roles"), true
	case *pg_query.AlterRoleStmt, *pg_query.AlterRoleSetStmt:
		return adminKind("ALTER ROLE", "ALTER ROLE manages roles"), true
	case *pg_query.DropRoleStmt:
		return adminKind("DROP ROLE", "DROP ROLE manages roles"), true
	case *pg_query.ReassignOwnedStmt:
		return adminKind("REASSIGN OWNED", "REASSIGN OWNED moves objects between roles"), true
	case *pg_query.CreatedbStmt:
		return adminKind("CREATE DATABASE", "CREATE DATABASE manages databases"), true
	case *pg_query.AlterDatabaseStmt, *pg_query.AlterDatabaseSetStmt, *pg_query.AlterDatabaseRefreshCollStmt:
		return adminKind("ALTER DATABASE", "ALTER DATABASE manages databases"), true
	case *pg_query.DropdbStmt:
		return adminKind("DROP DATABASE", "DROP DATABASE manages databases"), true
	case *pg_query.CreateTableSpaceStmt:
		return adminKind("CREATE TABLESPACE", "CREATE TABLESPACE manages server storage"), true
	case *pg_query.DropTableSpaceStmt:
		return adminKind("DROP TABLESPACE", "DROP TABLESPACE manages server storage"), true
	case *pg_query.AlterTableSpaceOptionsStmt:
		return adminKind("ALTER TABLESPACE", "ALTER TABLESPACE manages server storage"), true
	case *pg_query.AlterTableMoveAllStmt:
		return adminKind("ALTER TABLE", "ALTER TABLE ALL IN TABLESPACE manages server storage"), true
	case *pg_query.AlterSystemStmt:
		return adminKind("ALTER SYSTEM", "ALTER SYSTEM changes the server configuration"), true
	case *pg_query.CheckPointStmt:
		return adminKind("CHECKPOINT", "CHECKPOINT acts on the whole server"), true
	case *pg_query.LoadStmt:
		return adminKind("LOAD", "LOAD loads a shared library into the server"), true
	case *pg_query.CreateExtensionStmt:
		return adminKind("CREATE EXTENSION", "CREATE EXTENSION installs code into the server"), true
	case *pg_query.AlterExtensionStmt, *pg_query.AlterExtensionContentsStmt:
		return adminKind("ALTER EXTENSION", "ALTER EXTENSION changes code installed in the server"), true
	case *pg_query.CreatePLangStmt:
		return adminKind("CREATE LANGUAGE", "CREATE LANGUAGE installs code into the server"), true
	case *pg_query.CreateAmStmt:
		return adminKind("CREATE ACCESS METHOD", "CREATE ACCESS METHOD installs code into the server"), true
	case *pg_query.CreateEventTrigStmt:
		return adminKind("CREATE EVENT TRIGGER", "event triggers act on every session"), true
	case *pg_query.AlterEventTrigStmt:
		return adminKind("ALTER EVENT TRIGGER", "event triggers act on every session"), true
	case *pg_query.CreateFdwStmt:
		return adminKind("CREATE FOREIGN DATA WRAPPER", "foreign data wrappers reach outside the database"), true
	case *pg_query.AlterFdwStmt:
		return adminKind("ALTER FOREIGN DATA WRAPPER", "foreign data wrappers reach outside the database"), true
	case *pg_query.CreateForeignServerStmt:
		return adminKind("CREATE SERVER", "foreign servers reach outside the database"), true
	case *pg_query.AlterForeignServerStmt:
		return adminKind("ALTER SERVER", "foreign servers reach outside the database"), true
	case *pg_query.CreateForeignTableStmt:
		return adminKind("CREATE FOREIGN TABLE", "foreign tables reach outside the database"), true
	case *pg_query.ImportForeignSchemaStmt:
		return adminKind("IMPORT FOREIGN SCHEMA", "foreign tables reach outside the database"), true
	case *pg_query.CreateUserMappingStmt:
		return adminKind("CREATE USER MAPPING", "user mappings hold credentials for other servers"), true
	case *pg_query.AlterUserMappingStmt:
		return adminKind("ALTER USER MAPPING", "user mappings hold credentials for other servers"), true
	case *pg_query.DropUserMappingStmt:
		return adminKind("DROP USER MAPPING", "user mappings hold credentials for other servers"), true
	case *pg_query.CreatePublicationStmt:
		return adminKind("CREATE PUBLICATION", "publications feed replication"), true
	case *pg_query.AlterPublicationStmt:
		return adminKind("ALTER PUBLICATION", "publications feed replication"), true
	case *pg_query.CreateSubscriptionStmt:
		return adminKind("CREATE SUBSCRIPTION", "subscriptions connect to other servers"), true
	case *pg_query.AlterSubscriptionStmt:
		return adminKind("ALTER SUBSCRIPTION", "subscriptions connect to other servers"), true
	case *pg_query.DropSubscriptionStmt:
		return adminKind("DROP SUBSCRIPTION", "subscriptions connect to other servers"), true
	}
	name := string(m.Descriptor().Name())
	if strings.HasSuffix(name, "Stmt") {
		return adminKind(name, "unrecognised statement type "+name), true
	}
	return kind{}, false
}

// selectKind tags a SELECT the way Postgres does when it locks rows or
// creates a table.
func selectKind(x *pg_query.SelectStmt) kind {
	if x.GetIntoClause() != nil {
		return kind{class: DDL, tag: "SELECT INTO", reason: "SELECT ... INTO creates a table"}
	}
	strongest := pg_query.LockClauseStrength_LOCK_CLAUSE_STRENGTH_UNDEFINED
	for _, n := range x.GetLockingClause() {
		if s := n.GetLockingClause().GetStrength(); s > strongest {
			strongest = s
		}
	}
	if len(x.GetLockingClause()) > 0 {
		l := lockName(strongest)
		return writeKind("SELECT "+l, "SELECT ... "+l+" locks rows")
	}
	return readKind("SELECT")
}

// copyKind: COPY TO STDOUT reads, COPY FROM STDIN writes, and COPY to or
// from a server file or program is admin.
func copyKind(x *pg_query.CopyStmt) kind {
	switch {
	case x.GetIsProgram():
		return adminKind("COPY", "COPY ... PROGRAM runs a program on the server")
	case x.GetFilename() != "":
		return adminKind("COPY", "COPY with a file name reads or writes server files")
	case x.GetIsFrom():
		return writeKind("COPY", "COPY FROM adds rows")
	}
	return readKind("COPY")
}

// transactionKind: transaction control is allowed in every class, except
// starting a read-write transaction (which lifts read-only mode) and
// two-phase commit (whose prepared transactions outlive the session and can
// be finished from another one).
func transactionKind(x *pg_query.TransactionStmt) kind {
	tx := func(tag string) kind { return kind{class: Read, tag: tag, tx: true} }
	switch x.GetKind() {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		tag := "BEGIN"
		if x.GetKind() == pg_query.TransactionStmtKind_TRANS_STMT_START {
			tag = "START TRANSACTION"
		}
		if liftsReadOnly(x.GetOptions()) {
			return adminKind(tag, tag+" READ WRITE lifts read-only mode")
		}
		return tx(tag)
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		return tx("COMMIT")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK, pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return tx("ROLLBACK")
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return tx("SAVEPOINT")
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		return tx("RELEASE")
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		return adminKind("PREPARE TRANSACTION", "two-phase commit outlives the session")
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		return adminKind("COMMIT PREPARED", "two-phase commit outlives the session")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		return adminKind("ROLLBACK PREPARED", "two-phase commit outlives the session")
	}
	return adminKind("TRANSACTION", "unrecognised transaction statement")
}

// liftsReadOnly reports whether transaction modes (BEGIN, START TRANSACTION,
// SET TRANSACTION, SET SESSION CHARACTERISTICS) ask for READ WRITE.
func liftsReadOnly(opts []*pg_query.Node) bool {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			return true // not a transaction mode: refuse what we cannot read
		}
		if !equalFold(d.GetDefname(), "transaction_read_only") {
			continue
		}
		if v, ok := constValue(d.GetArg()); !ok || !isTrue(v) {
			return true
		}
	}
	return false
}

// setKind classifies SET and RESET by the setting they change.
func setKind(x *pg_query.VariableSetStmt) kind {
	tag := "SET"
	switch x.GetKind() {
	case pg_query.VariableSetKind_VAR_RESET, pg_query.VariableSetKind_VAR_RESET_ALL:
		tag = "RESET"
	}
	switch x.GetKind() {
	case pg_query.VariableSetKind_VAR_SET_VALUE:
		var value *string
		if args := x.GetArgs(); len(args) == 1 {
			if v, ok := constValue(args[0]); ok {
				value = &v
			}
		}
		c, why := settingClass(x.GetName(), value)
		return kind{class: c, tag: tag, reason: why}
	case pg_query.VariableSetKind_VAR_SET_DEFAULT, pg_query.VariableSetKind_VAR_SET_CURRENT, pg_query.VariableSetKind_VAR_RESET:
		c, why := settingClass(x.GetName(), nil)
		return kind{class: c, tag: tag, reason: why}
	case pg_query.VariableSetKind_VAR_SET_MULTI: // SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ...
		if equalFold(x.GetName(), "TRANSACTION SNAPSHOT") { // adopts another transaction's snapshot
			return readKind(tag)
		}
		if liftsReadOnly(x.GetArgs()) {
			return adminKind(tag, "SET "+x.GetName()+" READ WRITE lifts read-only mode")
		}
		return readKind(tag)
	case pg_query.VariableSetKind_VAR_RESET_ALL:
		return adminKind(tag, "RESET ALL resets every setting, read-only mode included")
	}
	return adminKind(tag, "unrecognised SET statement")
}

// settingClass classifies giving setting name the value value; value is nil
// when the new value is not a constant (RESET, SET ... TO DEFAULT, a list,
// or a computed set_config argument). Most settings only shape the
// session's own behaviour and are read. The exceptions:
//   - default_transaction_read_only and transaction_read_only may only be
//     turned on: anything else can lift read-only mode;
//   - standard_conforming_strings may only be turned on and client_encoding
//     may only be UTF8: otherwise the server would read string literals
//     differently from the classifier, which could hide a statement inside
//     what the classifier took for a string;
//   - role and session_authorization change who the session acts as;
//   - settings that switch off the server's safety checks, load libraries,
//     or control server logging are admin.
func settingClass(name string, value *string) (Class, string) {
	name = strings.ToLower(name)
	switch name {
	case "default_transaction_read_only", "transaction_read_only":
		if value != nil && isTrue(*value) {
			return Read, ""
		}
		return Admin, "setting " + name + " other than on lifts read-only mode"
	case "standard_conforming_strings":
		if value != nil && isTrue(*value) {
			return Read, ""
		}
		return Admin, "standard_conforming_strings other than on changes how the server reads string literals"
	case "client_encoding":
		if value != nil && safeEncoding(*value) {
			return Read, ""
		}
		return Admin, "client_encoding " + quoteValue(value) + " lets a multibyte character hide a quote or backslash from the classifier"
	case "role", "session_authorization":
		return Admin, "setting " + name + " changes the session's identity"
	case "session_replication_role", "allow_system_table_mods", "ignore_system_indexes",
		"zero_damaged_pages", "ignore_checksum_failure", "ignore_invalid_pages",
		"session_preload_libraries", "local_preload_libraries", "dynamic_library_path",
		"jit_provider", "lo_compat_privileges", "allow_in_place_tablespaces",
		"restrict_nonsystem_relation_kind":
		return Admin, "setting " + name + " is server administration"
	}
	for _, p := range []string{"log_", "debug_", "trace_"} {
		if strings.HasPrefix(name, p) {
			return Admin, "setting " + name + " controls server logging"
		}
	}
	return Read, ""
}

// constValue returns the text of a constant node: a string, number or
// boolean, bare or as an A_Const, possibly under a type cast.
func constValue(n *pg_query.Node) (string, bool) {
	constReads.Add(1)
	switch {
	case n == nil:
		return "", false
	case n.GetString_() != nil:
		return n.GetString_().GetSval(), true
	case n.GetInteger() != nil:
		return strconv.Itoa(int(n.GetInteger().GetIval())), true
	case n.GetFloat() != nil:
		return n.GetFloat().GetFval(), true
	case n.GetBoolean() != nil:
		if n.GetBoolean().GetBoolval() {
			return "true", true
		}
		return "false", true
	case n.GetTypeCast() != nil:
		return constValue(n.GetTypeCast().GetArg())
	case n.GetAConst() != nil:
		c := n.GetAConst()
		switch {
		case c.GetIsnull():
			return "", false
		case c.GetSval() != nil:
			return c.GetSval().GetSval(), true
		case c.GetIval() != nil:
			return strconv.Itoa(int(c.GetIval().GetIval())), true
		case c.GetFval() != nil:
			return c.GetFval().GetFval(), true
		case c.GetBoolval() != nil:
			if c.GetBoolval().GetBoolval() {
				return "true", true
			}
			return "false", true
		}
	}
	return "", false
}

// isTrue accepts only the unambiguous spellings of a true boolean setting.
func isTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true", "yes", "1":
		return true
	}
	return false
}

// isFalse accepts only the unambiguous spellings of a false boolean option.
func isFalse(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "off", "false", "no", "0":
		return true
	}
	return false
}

// safeEncoding reports whether a client encoding keeps every ASCII byte a
// character of its own, so that quotes, backslashes and semicolons are where
// the classifier sees them. Postgres's client-only encodings (BIG5, GBK,
// GB18030, JOHAB, SJIS, SHIFT_JIS_2004, UHC) use ASCII bytes as the second
// byte of a character and are refused; so is anything unrecognised, and
// "auto" (libpq resolves it before it reaches a server).
func safeEncoding(v string) bool {
	var b strings.Builder
	for _, r := range strings.ToLower(v) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	switch n := b.String(); {
	case n == "utf8" || n == "unicode" || n == "sqlascii":
		return true
	case strings.HasPrefix(n, "latin") || strings.HasPrefix(n, "iso8859") || strings.HasPrefix(n, "win") ||
		strings.HasPrefix(n, "windows") || strings.HasPrefix(n, "koi8") || strings.HasPrefix(n, "euc") ||
		strings.HasPrefix(n, "mule") || n == "alt" || n == "tcvn" || n == "tcvn5712" || n == "abc" || n == "vscii":
		// EUC_* and MULE_INTERNAL use only high bytes in multibyte
		// characters; the rest are single-byte encodings.
		return true
	}
	return false
}

func quoteValue(v *string) string {
	if v == nil {
		return "DEFAULT"
	}
	return strconv.Quote(*v)
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }

// adminObject reports object types whose management reaches beyond the
// database's own schema: cluster-wide objects, code loaded into the server,
// and objects that reach other servers or files.
func adminObject(t pg_query.ObjectType) bool {
	switch t {
	case pg_query.ObjectType_OBJECT_DATABASE, pg_query.ObjectType_OBJECT_ROLE,
		pg_query.ObjectType_OBJECT_TABLESPACE, pg_query.ObjectType_OBJECT_EXTENSION,
		pg_query.ObjectType_OBJECT_LANGUAGE, pg_query.ObjectType_OBJECT_ACCESS_METHOD,
		pg_query.ObjectType_OBJECT_EVENT_TRIGGER, pg_query.ObjectType_OBJECT_FDW,
		pg_query.ObjectType_OBJECT_FOREIGN_SERVER, pg_query.ObjectType_OBJECT_FOREIGN_TABLE,
		pg_query.ObjectType_OBJECT_USER_MAPPING, pg_query.ObjectType_OBJECT_PUBLICATION,
		pg_query.ObjectType_OBJECT_PUBLICATION_NAMESPACE, pg_query.ObjectType_OBJECT_PUBLICATION_REL,
		pg_query.ObjectType_OBJECT_SUBSCRIPTION, pg_query.ObjectType_OBJECT_PARAMETER_ACL,
		pg_query.ObjectType_OBJECT_TYPE_UNDEFINED:
		return true
	}
	return false
}

// objName spells an object type as it appears in command tags.
func objName(t pg_query.ObjectType) string {
	switch t {
	case pg_query.ObjectType_OBJECT_MATVIEW:
		return "MATERIALIZED VIEW"
	case pg_query.ObjectType_OBJECT_FDW:
		return "FOREIGN DATA WRAPPER"
	case pg_query.ObjectType_OBJECT_FOREIGN_SERVER:
		return "SERVER"
	case pg_query.ObjectType_OBJECT_TSCONFIGURATION:
		return "TEXT SEARCH CONFIGURATION"
	case pg_query.ObjectType_OBJECT_TSDICTIONARY:
		return "TEXT SEARCH DICTIONARY"
	case pg_query.ObjectType_OBJECT_TSPARSER:
		return "TEXT SEARCH PARSER"
	case pg_query.ObjectType_OBJECT_TSTEMPLATE:
		return "TEXT SEARCH TEMPLATE"
	case pg_query.ObjectType_OBJECT_STATISTIC_EXT:
		return "STATISTICS"
	case pg_query.ObjectType_OBJECT_OPCLASS:
		return "OPERATOR CLASS"
	case pg_query.ObjectType_OBJECT_OPFAMILY, pg_query.ObjectType_OBJECT_AMOP, pg_query.ObjectType_OBJECT_AMPROC:
		return "OPERATOR FAMILY"
	case pg_query.ObjectType_OBJECT_LARGEOBJECT:
		return "LARGE OBJECT"
	case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT, pg_query.ObjectType_OBJECT_DEFAULT:
		return "TABLE"
	case pg_query.ObjectType_OBJECT_ATTRIBUTE:
		return "TYPE"
	case pg_query.ObjectType_OBJECT_DOMCONSTRAINT:
		return "DOMAIN"
	case pg_query.ObjectType_OBJECT_DEFACL:
		return "DEFAULT PRIVILEGES"
	case pg_query.ObjectType_OBJECT_PARAMETER_ACL:
		return "PARAMETER"
	case pg_query.ObjectType_OBJECT_PUBLICATION_NAMESPACE, pg_query.ObjectType_OBJECT_PUBLICATION_REL:
		return "PUBLICATION"
	case pg_query.ObjectType_OBJECT_TYPE_UNDEFINED:
		return "OBJECT"
	}
	return strings.ReplaceAll(strings.TrimPrefix(t.String(), "OBJECT_"), "_", " ")
}
