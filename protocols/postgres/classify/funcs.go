package classify

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// sideEffects maps built-in (and common extension) functions with side
// effects to the class of what they do. Functions not listed are taken to be
// read: built-in functions are side-effect free unless they are here, and a
// user-defined function can do anything its owner wrote, which is why the
// Postgres handler also runs read sessions with
// default_transaction_read_only on.
var sideEffects = map[string]Class{
	// Sequences, notifications, replication messages.
	"nextval":                 Write,
	"setval":                  Write,
	"pg_notify":               Write,
	"pg_logical_emit_message": Write,
	"lowrite":                 Write,
	"loread":                  Write,

	// Statistics restored by hand.
	"pg_restore_relation_stats":  DDL,
	"pg_restore_attribute_stats": DDL,
	"pg_clear_relation_stats":    DDL,
	"pg_clear_attribute_stats":   DDL,
	"pg_extension_config_dump":   DDL,

	// Other sessions and the server process.
	"pg_terminate_backend":           Admin,
	"pg_cancel_backend":              Admin,
	"pg_signal_backend":              Admin,
	"pg_reload_conf":                 Admin,
	"pg_rotate_logfile":              Admin,
	"pg_rotate_logfile_old":          Admin,
	"pg_log_backend_memory_contexts": Admin,
	"pg_log_standby_snapshot":        Admin,
	"pg_promote":                     Admin,
	"pg_switch_wal":                  Admin,
	"pg_switch_xlog":                 Admin,
	"pg_create_restore_point":        Admin,
	"pg_backup_start":                Admin,
	"pg_backup_stop":                 Admin,
	"pg_start_backup":                Admin,
	"pg_stop_backup":                 Admin,
	"pg_import_system_collations":    Admin,
	"pg_truncate_visibility_map":     Admin,
	"pg_stat_statements_reset":       Admin,

	// Server files.
	"lo_import":    Admin,
	"lo_export":    Admin,
	"pg_stat_file": Admin,
	"pg_logdir_ls": Admin,

	// Queries given as text, which the classifier cannot see.
	"query_to_xml":               Admin,
	"query_to_xmlschema":         Admin,
	"query_to_xml_and_xmlschema": Admin,
	"cursor_to_xml":              Admin,
	"cursor_to_xmlschema":        Admin,
	"ts_stat":                    Admin,
}

// sideEffectPrefixes catches function families by name prefix, checked
// after sideEffects.
var sideEffectPrefixes = []struct {
	prefix string
	class  Class
}{
	{"lo_", Write},          // large objects
	{"pg_advisory_", Write}, // advisory locks
	{"pg_try_advisory_", Write},
	{"dblink", Admin},        // connections to other servers
	{"pg_read_", Admin},      // pg_read_file, pg_read_binary_file
	{"pg_ls_", Admin},        // pg_ls_dir, pg_ls_logdir, pg_ls_waldir...
	{"pg_file_", Admin},      // pg_file_write, pg_file_rename...
	{"pg_stat_reset", Admin}, // statistics of the whole server
	{"pg_logical_slot_", Admin},
	{"pg_replication_origin_", Admin},
	{"pg_wal_replay_", Admin},
	{"binary_upgrade_", Admin},
}

// funcClass classifies a call by the function's name, whatever its schema:
// a user function that shares a name with one of these is treated like it.
func funcClass(fc *pg_query.FuncCall) (Class, string) {
	parts := fc.GetFuncname()
	if len(parts) == 0 {
		return Admin, "calls a function with no name"
	}
	name := strings.ToLower(parts[len(parts)-1].GetString_().GetSval())
	why := "calls " + name
	if name == "set_config" {
		return setConfigClass(fc)
	}
	if c, ok := sideEffects[name]; ok {
		return c, why
	}
	for _, p := range sideEffectPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			return p.class, why
		}
	}
	if strings.Contains(name, "replication_slot") {
		return Admin, why
	}
	return Read, ""
}

// setConfigClass applies the SET rules to set_config(name, value, local):
// a constant setting name is judged like SET; a computed one is admin.
func setConfigClass(fc *pg_query.FuncCall) (Class, string) {
	args := fc.GetArgs()
	if len(args) < 2 {
		return Admin, "calls set_config with a computed setting"
	}
	name, ok := constValue(args[0])
	if !ok {
		return Admin, "calls set_config with a computed setting"
	}
	var value *string
	if v, ok := constValue(args[1]); ok {
		value = &v
	}
	if c, why := settingClass(name, value); c != Read {
		return c, "calls set_config: " + why
	}
	return Read, ""
}
