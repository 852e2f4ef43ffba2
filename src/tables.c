/*-------------------------------------------------------------------------
 *
 * tables.c
 *	  Making tables multi-region: enable, alter policy, disable.
 *
 * NOTES
 *	  Each operation validates everything before its first change and runs
 *	  in the caller's transaction, so a rejected call changes nothing.  It
 *	  also writes a transactional logical message (CR_DDL_MESSAGE_PREFIX)
 *	  that the output plugin ships, ordered with the rows, so the other
 *	  regions repeat the operation (cr_table_apply_ddl) before they apply
 *	  any row of the table written after it.  When an apply worker repeats
 *	  an operation its own message carries the worker's replication origin
 *	  and is not shipped again.
 *
 *	  A table enabled while it holds rows ships them too: after the DDL
 *	  message, its rows travel as RELATION and INSERT messages inside
 *	  transactional messages (CR_ROWS_MESSAGE_PREFIX), which every other
 *	  region applies like remote inserts, version against version.  A
 *	  region that receives an enable for a table that is not multi-region
 *	  there yet and holds rows refuses it (its rows would reach no other
 *	  region); enabling the table there too, or emptying it, resolves that.
 *	  An enable that arrives for a table already enabled here (both regions
 *	  enabled it) only merges the configuration.
 *
 *	  Every configuration carries the version of the enable or policy
 *	  change that set it; a region keeps the newest, so concurrent policy
 *	  changes in two regions end with the same policy everywhere.  Every
 *	  row carries the version of the configuration its writer had
 *	  (CR_CONFIG_COLUMN), and every region keeps each configuration it
 *	  has had or received in cosmosrep.policy_history, so that a conflict
 *	  is decided alike everywhere: by the configuration order between
 *	  writes made under different configurations, else by the policy of
 *	  theirs (conflict.c).
 *
 *	  An operation received from another region is repeated as the local
 *	  table's owner, with SECURITY_RESTRICTED_OPERATION, and only if that
 *	  owner has the same name as the table's owner in the sending region:
 *	  otherwise one region's user could make another user's table of the
 *	  same name multi-region and receive its rows.
 *
 * IDENTIFICATION
 *	  src/tables.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_am.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parse_func.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "conflict.h"
#include "ddl_names.h"
#include "hlc.h"
#include "names.h"
#include "protocol.h"
#include "run_as.h"
#include "shmem.h"
#include "signing.h"
#include "tables.h"
#include "tombstone.h"

PG_FUNCTION_INFO_V1(cosmosrep_check_table);

static const char *const cr_added_columns[] = {
	CR_VERSION_COLUMN, CR_BASE_COLUMN, CR_REGION_COLUMN, CR_CONFIG_COLUMN,
	CR_SEEN_COLUMN
};

static Relation open_user_table(Oid relid, bool must_be_enabled);

static CrTableConfig *build_table_config(Relation rel, const char *policy,
										 const char *path, const char *resolver);
static void check_resolver_execute(Relation rel, const CrTableConfig *config,
								   const char *name);
static void spi_run_ddl(const char *sql);
static bool calls_nextval(Node *node, void *context);
static void check_key_generators(Relation rel);

typedef enum CrSequenceKeys
{
	CR_SEQUENCE_KEYS_WARN,
	CR_SEQUENCE_KEYS_REFUSE,
	CR_SEQUENCE_KEYS_ALLOW
} CrSequenceKeys;

static int	cr_sequence_keys = CR_SEQUENCE_KEYS_WARN;
static void grant_to_link_roles(Oid relid, const char *qualname);
static void check_trigger(Relation rel, const char *name);
static void log_table_ddl(char action, Relation rel, const CrTableConfig *config);
static void log_table_rows(Relation rel);
static void log_rows_of(Relation rel, Relation source, StringInfo buf,
						TupleTableSlot *sendslot, MemoryContext rowctx);
static const char *next_ddl_field(const char **cursor, const char *end);
static void apply_remote_ddl(char action, Oid relid, const char *policy,
							 const char *path, const char *resolver,
							 int64 config_version, const char *origin_region);

/* whether name is one of the columns cosmosrep adds to a table */
bool
cr_is_cosmosrep_column(const char *name)
{
	for (int i = 0; i < lengthof(cr_added_columns); i++)
		if (strcmp(name, cr_added_columns[i]) == 0)
			return true;
	return false;
}

/*
 * Open a user table for enable/alter/disable after checking what every one
 * of them requires.  The relation is returned open and locked in
 * AccessExclusiveLock mode, which the caller keeps until commit.
 */
static Relation
open_user_table(Oid relid, bool must_be_enabled)
{
	Relation	rel = try_relation_open(relid, AccessExclusiveLock);
	const char *relname;
	bool		enabled;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	relname = RelationGetRelationName(rel);

	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", relname),
				 errdetail("Only ordinary and partitioned tables can be multi-region.")));

	/*
	 * A partition's rows belong to its partitioned table, whose
	 * configuration, triggers and columns it shares (README, "Partitioned
	 * tables"): it is never multi-region alone.
	 */
	if (rel->rd_rel->relispartition)
	{
		const char *root = get_rel_name(cr_partition_root(relid));

		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" is a partition of \"%s\"", relname, root),
				 errdetail("A partition is multi-region with the partitioned table at the top of its tree, never alone."),
				 errhint("Call cosmosrep.enable_table for \"%s\".", root)));
	}

	if (rel->rd_rel->relpersistence != RELPERSISTENCE_PERMANENT)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" is not a permanent table", relname),
				 errdetail("Temporary and unlogged tables are not written to the WAL that replication reads.")));

	if (RelationGetNamespace(rel) == cr_schema_oid())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" belongs to cosmosrep", relname)));

#if PG_VERSION_NUM >= 160000
	if (!object_ownercheck(RelationRelationId, relid, GetUserId()))
#else
	if (!pg_class_ownercheck(relid, GetUserId()))
#endif
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, relname);

	enabled = cr_get_table_config(relid) != NULL;
	if (must_be_enabled && !enabled)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not multi-region", relname),
				 errhint("Call cosmosrep.enable_table first.")));
	if (!must_be_enabled && enabled)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already multi-region", relname),
				 errhint("Use cosmosrep.alter_table_policy to change its conflict policy.")));
	return rel;
}

/*
 * Validate the policy arguments (policy, path, resolver) of enable_table
 * and alter_table_policy and return the configuration they declare.
 */
static CrTableConfig *
build_table_config(Relation rel, const char *policy, const char *path,
				   const char *resolver)
{
	CrTableConfig *config = palloc0(sizeof(CrTableConfig));
	const char *relname = RelationGetRelationName(rel);
	int			kind;

	config->relid = RelationGetRelid(rel);
	config->policy = pstrdup(policy);
	config->path = path ? pstrdup(path) : NULL;

	kind = cr_policy_kind(config->policy, config->path != NULL);
	if (kind < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown conflict policy \"%s\"", config->policy),
				 errhint("The conflict policies are last_writer_wins, custom and manual.")));

	if (config->path != NULL)
	{
		AttrNumber	attnum;
		Oid			typid;

		if (kind != CR_POLICY_PATH)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conflict policy \"%s\" does not take a path", config->policy),
					 errhint("Only last_writer_wins compares a column named by path.")));

		if (cr_is_cosmosrep_column(config->path))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" belongs to cosmosrep and cannot be a path", config->path),
					 errhint("Omit path to compare row versions.")));

		attnum = get_attnum(config->relid, config->path);
		if (attnum == InvalidAttrNumber || attnum < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" does not exist",
							config->path, relname)));

		typid = get_atttype(config->relid, attnum);
		if (!OidIsValid(GetDefaultOpClass(typid, BTREE_AM_OID)))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" has type %s, which has no ordering",
							config->path, format_type_be(typid)),
					 errhint("A path column needs a type with a default btree operator class, such as a number or a timestamp.")));
	}

	if (kind == CR_POLICY_CUSTOM)
	{
		if (resolver == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conflict policy \"custom\" requires a resolver"),
					 errhint("Pass the name of a function as resolver.")));
		config->resolver = cr_resolver_name(cr_lookup_resolver(rel, resolver));
	}
	else if (resolver != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("conflict policy \"%s\" does not take a resolver", config->policy),
				 errhint("Use policy => 'custom' with a resolver.")));

	return config;
}

/*
 * A resolver runs as the table's owner (conflict.c): enable_table and
 * alter_table_policy refuse one that the owner may not execute, whoever
 * calls them.  (A configuration received from another region, or copied
 * by a join, is taken as it is; a resolver the owner may not execute then
 * fails at its call, like any resolver error.)
 */
static void
check_resolver_execute(Relation rel, const CrTableConfig *config, const char *name)
{
	Oid			owner = rel->rd_rel->relowner;
	Oid			funcid;
	AclResult	aclresult;

	if (config->resolver == NULL)
		return;
	funcid = cr_lookup_resolver(rel, config->resolver);
#if PG_VERSION_NUM >= 160000
	aclresult = object_aclcheck(ProcedureRelationId, funcid, owner, ACL_EXECUTE);
#else
	aclresult = pg_proc_aclcheck(funcid, owner, ACL_EXECUTE);
#endif
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", name),
				 errdetail("A resolver runs as the table's owner, \"%s\", who may not execute it.",
						   GetUserNameFromId(owner, false)),
				 errhint("Grant EXECUTE on the function to the table's owner.")));
}

/* whether an expression takes a value from a sequence */
static bool
calls_nextval(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, NextValueExpr) ||
		(IsA(node, FuncExpr) && ((FuncExpr *) node)->funcid == F_NEXTVAL))
		return true;
	return expression_tree_walker(node, calls_nextval, context);
}

/*
 * A primary key column that takes its values from a sequence (an identity
 * column, serial, a default calling nextval) gets the same numbers in
 * every region: rows inserted in two regions collide on the key.  Warned
 * of, refused or let through as cosmosrep.sequence_keys says.
 */
static void
check_key_generators(Relation rel)
{
	Relation	index;

	if (cr_sequence_keys == CR_SEQUENCE_KEYS_ALLOW)
		return;
	index = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	for (int i = 0; i < index->rd_index->indnkeyatts; i++)
	{
		AttrNumber	attnum = index->rd_index->indkey.values[i];
		Form_pg_attribute att;
		Node	   *def;

		if (attnum <= 0)
			continue;
		att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
		def = build_column_default(rel, attnum);
		if (att->attidentity == '\0' && (def == NULL || !calls_nextval(def, NULL)))
			continue;
		ereport(cr_sequence_keys == CR_SEQUENCE_KEYS_REFUSE ? ERROR : WARNING,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("column \"%s\" of table \"%s\" takes its values from a sequence",
						NameStr(att->attname), RelationGetRelationName(rel)),
				 errdetail("Sequences do not replicate: every region issues the same numbers, and rows inserted in two regions collide on the primary key."),
				 errhint("Make cosmosrep.global_id() the column's default (ALTER TABLE %s ALTER COLUMN %s DROP IDENTITY IF EXISTS, ALTER COLUMN %s SET DEFAULT cosmosrep.global_id()).",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel)),
						 quote_identifier(NameStr(att->attname)),
						 quote_identifier(NameStr(att->attname)))));
	}
	index_close(index, AccessShareLock);
}

/* the setting, defined where it is read */
static const struct config_enum_entry sequence_keys_options[] = {
	{"warn", CR_SEQUENCE_KEYS_WARN, false},
	{"refuse", CR_SEQUENCE_KEYS_REFUSE, false},
	{"allow", CR_SEQUENCE_KEYS_ALLOW, false},
	{NULL, 0, false}
};

void
cr_tables_define_settings(void)
{
	DefineCustomEnumVariable("cosmosrep.sequence_keys",
							 "What enable_table does with a primary key that takes its values from a sequence.",
							 "warn, refuse, or allow; cosmosrep.global_id() gives keys unique across regions.",
							 &cr_sequence_keys,
							 CR_SEQUENCE_KEYS_WARN, sequence_keys_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}

static void
spi_run_ddl(const char *sql)
{
	int			rc;
	int			nestlevel = cr_pin_search_path();

	SPI_connect();
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed for \"%s\": %s", sql, SPI_result_code_string(rc));
	SPI_finish();
	cr_unpin_search_path(nestlevel);
}

/*
 * Grant SELECT on a new multi-region table to every link role of this
 * region: the roles that may execute cosmosrep.add_region, to which
 * cosmosrep.grant_link_role granted that.  Other regions copy the table
 * (join) and fetch its rows (apply) as such a role.  USAGE on the table's
 * schema goes with it when the role lacks it and the current user owns the
 * schema; otherwise the schema's owner grants it (README, "Security").
 * Runs as the current user, who owns the table (or a superuser).
 */
static void
grant_to_link_roles(Oid relid, const char *qualname)
{
	Oid			argtypes[3] = {INT2OID, TEXTOID, TEXTOID};
	Oid			funcid;
	Oid			nspid = get_rel_namespace(relid);
	HeapTuple	tup;
	Datum		acldatum;
	bool		isnull;
	Oid			funcowner;
	Acl		   *acl;
	AclItem    *items;

	funcid = LookupFuncName(list_make2(makeString(pstrdup(COSMOSREP_SCHEMA)),
									   makeString(pstrdup("add_region"))),
							3, argtypes, false);
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", funcid);
	funcowner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	acldatum = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proacl, &isnull);
	acl = isnull ? NULL : DatumGetAclPCopy(acldatum);
	ReleaseSysCache(tup);
	if (acl == NULL)
		return;

	items = ACL_DAT(acl);
	for (int i = 0; i < ACL_NUM(acl); i++)
	{
		Oid			role = items[i].ai_grantee;
		const char *rolename;

		if (role == ACL_ID_PUBLIC || role == funcowner ||
			(ACLITEM_GET_PRIVS(items[i]) & ACL_EXECUTE) == 0)
			continue;
		rolename = quote_identifier(GetUserNameFromId(role, false));
		if (pg_namespace_aclcheck(nspid, role, ACL_USAGE) != ACLCHECK_OK &&
			pg_namespace_ownercheck(nspid, GetUserId()))
			spi_run_ddl(psprintf("GRANT USAGE ON SCHEMA %s TO %s",
								 quote_identifier(get_namespace_name(nspid)), rolename));
		spi_run_ddl(psprintf("GRANT SELECT ON %s TO %s", qualname, rolename));
	}
}

/*
 * Make a table multi-region: validate, add the columns (existing rows get
 * a version each), install the triggers, record the policy, and tell the
 * other regions through the stream, with the rows the table holds.
 * config_version is the version of the configuration, or 0 for a new
 * one.
 */
void
cr_table_enable(Oid relid, const char *policy, const char *path,
				const char *resolver, int64 config_version)
{
	Relation	rel;
	CrTableConfig *config;
	char	   *qualname;
	const char *relname;
	TupleDesc	desc;
	bool		has_rows;

	cr_require_preload();
	cr_local_region_id(false);

	rel = open_user_table(relid, false);
	relname = RelationGetRelationName(rel);
	desc = RelationGetDescr(rel);

	if (!OidIsValid(RelationGetPrimaryKeyIndex(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key", relname),
				 errhint("Add a primary key, then call cosmosrep.enable_table again.")));
	/* what a region receives was checked where it was enabled */
	if (config_version == 0)
		check_key_generators(rel);

	/*
	 * Apply writes every row as the table's owner, whom policies do not
	 * restrict (or, under FORCE, would silently filter what arrives), and
	 * the conflict history keeps rows outside the table: a table with
	 * row-level security is not made multi-region.
	 */
	if (rel->rd_rel->relrowsecurity || rel->rd_rel->relforcerowsecurity)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" has row-level security enabled", relname),
				 errdetail("Changes from other regions are applied as the table's owner, and its policies would not decide which rows other regions receive or which rows the conflict history shows."),
				 errhint("Disable row-level security (ALTER TABLE ... DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY), then call cosmosrep.enable_table again.")));

	for (int i = 0; i < lengthof(cr_added_columns); i++)
	{
		if (SPI_fnumber(desc, cr_added_columns[i]) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" already exists",
							cr_added_columns[i], relname),
					 errhint("cosmosrep adds the columns %s, %s, %s, %s and %s; rename that column first.",
							 CR_VERSION_COLUMN, CR_BASE_COLUMN, CR_REGION_COLUMN,
							 CR_CONFIG_COLUMN, CR_SEEN_COLUMN)));
	}

	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		cr_check_partition_layouts(rel, false);

	config = build_table_config(rel, policy, path, resolver);
	if (config_version == 0)
		check_resolver_execute(rel, config, resolver);
	config->config_version = config_version != 0 ? config_version :
		cr_hlc_next_version(cr_local_region_id(false));
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  relname);
	has_rows = cr_table_has_rows(rel);
	log_table_ddl(CR_DDL_ENABLE, rel, config);
	/* ALTER TABLE refuses a table this session still has open */
	relation_close(rel, NoLock);

	/*
	 * The DDL below runs as the caller (the owner, or a superuser): none of
	 * it runs the owner's code.  Adding the columns rewrites the table but
	 * checks only the new columns' constraints (cosmosrep's bigint and
	 * smallint columns, cosmosrep's default) and copies generated columns
	 * as they are; the rewrite rebuilds the indexes, and index_build runs
	 * index expressions as the table's owner with
	 * SECURITY_RESTRICTED_OPERATION itself.  CREATE TRIGGER runs no
	 * function.  Only the rows shipped below (the types' output functions)
	 * reach the owner's code, and log_table_rows switches to the owner.
	 * cr_table_disable drops the same objects (no rewrite, no function).
	 *
	 * Existing rows get a distinct version each from the volatile default,
	 * this region as writer and this configuration.  The region is a plain
	 * column, stamped by the trigger and carried by the stream: a
	 * generated column would cost an expression per row on every write and
	 * every apply.
	 */
	spi_run_ddl(psprintf("ALTER TABLE %s"
						 " ADD COLUMN %s bigint NOT NULL DEFAULT cosmosrep.next_version(),"
						 " ADD COLUMN %s bigint NOT NULL DEFAULT 0,"
						 " ADD COLUMN %s smallint NOT NULL DEFAULT %d,"
						 " ADD COLUMN %s bigint NOT NULL DEFAULT " INT64_FORMAT ","
						 " ADD COLUMN %s bytea",
						 qualname, CR_VERSION_COLUMN, CR_BASE_COLUMN,
						 CR_REGION_COLUMN, cr_local_region_id(false),
						 CR_CONFIG_COLUMN, config->config_version, CR_SEEN_COLUMN));
	/* later writes are stamped by the trigger (local) or carry theirs */
	spi_run_ddl(psprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT 0",
						 qualname, CR_CONFIG_COLUMN));
	spi_run_ddl(psprintf("CREATE TRIGGER %s BEFORE INSERT OR UPDATE OR DELETE ON %s"
						 " FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row()",
						 CR_TRIGGER_NAME, qualname));
	spi_run_ddl(psprintf("CREATE TRIGGER %s BEFORE TRUNCATE ON %s"
						 " FOR EACH STATEMENT EXECUTE FUNCTION cosmosrep.stamp_truncate()",
						 CR_TRUNCATE_TRIGGER_NAME, qualname));
	spi_run_ddl(psprintf("CREATE TRIGGER %s AFTER INSERT ON %s"
						 " FOR EACH ROW EXECUTE FUNCTION cosmosrep.check_insert()",
						 CR_INSERT_CHECK_TRIGGER_NAME, qualname));
	grant_to_link_roles(relid, qualname);
	cr_insert_table_config(config);
	cr_record_policy_history(config);

	if (has_rows)
	{
		rel = table_open(relid, NoLock);
		log_table_rows(rel);
		table_close(rel, NoLock);
	}
}

/*
 * Add a configuration that relid, a multi-region table the caller has
 * locked, had in another region to its history here (join_region, and
 * configurations received that are not the newest).
 */
void
cr_table_remember_config(Oid relid, const char *policy, const char *path,
						 const char *resolver, int64 config_version)
{
	Relation	rel = table_open(relid, NoLock);
	CrTableConfig *config = build_table_config(rel, policy, path, resolver);

	config->config_version = config_version;
	table_close(rel, NoLock);
	cr_record_policy_history(config);
}

/*
 * Change the declared conflict policy of a multi-region table, in every
 * region.
 */
void
cr_table_alter_policy(Oid relid, const char *policy, const char *path,
					  const char *resolver)
{
	Relation	rel = open_user_table(relid, true);
	CrTableConfig *config = build_table_config(rel, policy, path, resolver);

	check_resolver_execute(rel, config, resolver);
	config->config_version = cr_hlc_next_version(cr_local_region_id(false));
	log_table_ddl(CR_DDL_ALTER_POLICY, rel, config);
	relation_close(rel, NoLock);
	cr_update_table_config(config);
	cr_record_policy_history(config);
}

/*
 * Make a multi-region table local again, in every region.
 */
void
cr_table_disable(Oid relid)
{
	Relation	rel = open_user_table(relid, true);
	char	   *qualname;

	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel));
	log_table_ddl(CR_DDL_DISABLE, rel, NULL);
	relation_close(rel, NoLock);

	/* forget the table first: the DDL check must not object to the drops */
	cr_delete_table_config(relid);
	cr_forget_policy_history(relid);
	cr_tombstone_forget_table(relid);
	spi_run_ddl(psprintf("DROP TRIGGER %s ON %s", CR_INSERT_CHECK_TRIGGER_NAME, qualname));
	spi_run_ddl(psprintf("DROP TRIGGER %s ON %s", CR_TRUNCATE_TRIGGER_NAME, qualname));
	spi_run_ddl(psprintf("DROP TRIGGER %s ON %s", CR_TRIGGER_NAME, qualname));
	spi_run_ddl(psprintf("ALTER TABLE %s DROP COLUMN %s, DROP COLUMN %s, DROP COLUMN %s,"
						 " DROP COLUMN %s, DROP COLUMN %s",
						 qualname, CR_SEEN_COLUMN, CR_CONFIG_COLUMN, CR_REGION_COLUMN,
						 CR_BASE_COLUMN, CR_VERSION_COLUMN));
}

/*
 * A multi-region table's trigger name must fire for local writes only:
 * disabled, local writes would travel without versions (and deletes would
 * always win); enabled for apply, it would stamp remote rows anew.
 * (Dropping it is refused by the event trigger cosmosrep.on_sql_drop; it
 * is missing only while pg_restore has not created it yet.)
 */
static void
check_trigger(Relation rel, const char *name)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	for (int i = 0; trigdesc && i < trigdesc->numtriggers; i++)
	{
		Trigger    *trigger = &trigdesc->triggers[i];

		if (strcmp(trigger->tgname, name) == 0 &&
			trigger->tgenabled != TRIGGER_FIRES_ON_ORIGIN)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("trigger \"%s\" of multi-region table \"%s\" must stay enabled for local writes only",
							name, RelationGetRelationName(rel)),
					 errhint("Call cosmosrep.disable_table first.")));
	}
}

/*
 * After DDL on a multi-region table: it must still be what its declared
 * configuration needs (primary key, cosmosrep's columns, the path
 * column), or the DDL is refused.  Called by the event trigger
 * cosmosrep.on_ddl_command_end.
 */
Datum
cosmosrep_check_table(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	CrTableConfig *config = cr_get_table_config(relid);
	Relation	rel;

	/*
	 * A partition of a multi-region table keeps the row trigger cloned
	 * from it enabled for local writes only (its columns and key are the
	 * partitioned table's, which PostgreSQL keeps alike).
	 */
	if (config == NULL && get_rel_relispartition(relid) &&
		cr_get_table_config(cr_partition_root(relid)) != NULL)
	{
		rel = try_relation_open(relid, AccessShareLock);
		if (rel == NULL)
			PG_RETURN_VOID();
		check_trigger(rel, CR_TRIGGER_NAME);
		relation_close(rel, AccessShareLock);
		PG_RETURN_VOID();
	}
	if (config == NULL)
		PG_RETURN_VOID();
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		PG_RETURN_VOID();

	if (!OidIsValid(RelationGetPrimaryKeyIndex(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("multi-region table \"%s\" must keep a primary key",
						RelationGetRelationName(rel)),
				 errhint("Call cosmosrep.disable_table first.")));
	for (int i = 0; i < lengthof(cr_added_columns); i++)
	{
		if (SPI_fnumber(RelationGetDescr(rel), cr_added_columns[i]) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("multi-region table \"%s\" must keep column \"%s\"",
							RelationGetRelationName(rel), cr_added_columns[i]),
					 errhint("Call cosmosrep.disable_table first.")));
	}
	check_trigger(rel, CR_TRIGGER_NAME);
	check_trigger(rel, CR_TRUNCATE_TRIGGER_NAME);
	check_trigger(rel, CR_INSERT_CHECK_TRIGGER_NAME);
	if (config->path != NULL)
		(void) build_table_config(rel, cr_policy_names[CR_POLICY_LWW], config->path, NULL);
	relation_close(rel, AccessShareLock);
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * DDL messages
 * ----------------------------------------------------------------
 */

/*
 * The content of the message that repeats a table DDL in the other
 * regions, in buf: the action byte, then schema, table, the table owner's
 * name, policy, path, resolver and the configuration's version as
 * NUL-terminated strings ("" for none).  The output plugin builds one too,
 * to send a configuration again.
 */
void
cr_build_ddl_message(StringInfo buf, char action, Relation rel,
					 const CrTableConfig *config)
{
	const char *fields[7];
	const char *resolver = NULL;

	fields[0] = get_namespace_name(RelationGetNamespace(rel));
	fields[1] = RelationGetRelationName(rel);
	fields[2] = GetUserNameFromId(rel->rd_rel->relowner, false);
	fields[3] = config ? config->policy : "";
	fields[4] = config && config->path ? config->path : "";
	/* schema-qualified: apply runs with an empty search_path */
	if (config && config->resolver)
		resolver = config->resolver;
	fields[5] = resolver ? resolver : "";
	fields[6] = config ? psprintf(INT64_FORMAT, config->config_version) : "0";
	appendStringInfoChar(buf, action);
	cr_append_fields(buf, fields, lengthof(fields));
}

/* write the message that repeats a table DDL in the other regions */
static void
log_table_ddl(char action, Relation rel, const CrTableConfig *config)
{
	StringInfoData buf;

	if (!XLogLogicalInfoActive())
		return;
	initStringInfo(&buf);
	cr_build_ddl_message(&buf, action, rel, config);
	cr_log_message(CR_DDL_MESSAGE_PREFIX, buf.data, buf.len, true);
	pfree(buf.data);
}

/*
 * Write the rows rel holds as RELATION and INSERT messages, in
 * transactional messages of about CR_WRITE_CHUNK bytes, after the enable's
 * DDL message.  Values are written in text with the settings every
 * connection between regions pins, and TOASTed values in full.
 *
 * The output functions of the columns' types may be the owner's code: the
 * rows are read and written as the table's owner, with
 * SECURITY_RESTRICTED_OPERATION and an empty search_path, whoever enables
 * the table.  A partitioned table's rows are read from each leaf
 * partition and sent as rows of the partitioned table (the leaves have
 * its layout: cr_check_partition_layouts).
 */
static void
log_table_rows(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleTableSlot *sendslot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	MemoryContext rowctx = AllocSetContextCreate(CurrentMemoryContext,
												 "cosmosrep enable rows",
												 ALLOCSET_DEFAULT_SIZES);
	int			nestlevel;
	CrUserContext user;
	StringInfoData buf;

	if (!XLogLogicalInfoActive())
		return;
	nestlevel = NewGUCNestLevel();
	cr_pin_text_formats(PGC_S_SESSION, GUC_ACTION_SAVE);

	cr_switch_to_owner(rel->rd_rel->relowner, &user);

	initStringInfo(&buf);
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		ListCell   *lc;

		foreach(lc, cr_partitions_with_rows(rel))
		{
			Relation	part = table_open(lfirst_oid(lc), NoLock);

			log_rows_of(rel, part, &buf, sendslot, rowctx);
			table_close(part, NoLock);
		}
	}
	else
		log_rows_of(rel, rel, &buf, sendslot, rowctx);
	if (buf.len > 0)
		cr_log_message(CR_ROWS_MESSAGE_PREFIX, buf.data, buf.len, true);
	ExecDropSingleTupleTableSlot(sendslot);
	MemoryContextDelete(rowctx);
	pfree(buf.data);
	cr_restore_user(&user);
	AtEOXact_GUC(true, nestlevel);
}

/*
 * Append the rows of source (rel itself, or a leaf partition of it with
 * its layout) to buf as rows of rel, and write buf out whenever it fills a
 * chunk (log_table_rows).
 */
static void
log_rows_of(Relation rel, Relation source, StringInfo bufp, TupleTableSlot *sendslot,
			MemoryContext rowctx)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	TableScanDesc scan = table_beginscan(source, snapshot, 0, NULL);
	TupleTableSlot *slot = table_slot_create(source, NULL);
	CrColumns	crcols;
	Bitmapset  *columns;

	/*
	 * The rows of an enable have seen nothing (_cr_seen is NULL): without
	 * the column, regions of every protocol version read the message.
	 */
	(void) cr_find_columns(desc, &crcols);
	columns = cr_columns_without(desc, crcols.seen);

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		MemoryContext oldctx = MemoryContextSwitchTo(rowctx);

		slot_getallattrs(slot);
		ExecClearTuple(sendslot);
		for (int i = 0; i < desc->natts; i++)
		{
			Datum		value = slot->tts_values[i];

			if (!slot->tts_isnull[i] && TupleDescAttr(desc, i)->attlen == -1 &&
				VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
				value = PointerGetDatum(detoast_external_attr((struct varlena *) DatumGetPointer(value)));
			sendslot->tts_values[i] = value;
			sendslot->tts_isnull[i] = slot->tts_isnull[i];
		}
		ExecStoreVirtualTuple(sendslot);
		MemoryContextSwitchTo(oldctx);

		if (bufp->len == 0)
			cr_write_relation(bufp, rel, columns);
		cr_write_insert(bufp, rel, sendslot, columns);
		MemoryContextReset(rowctx);
		if (bufp->len >= CR_WRITE_CHUNK)
		{
			cr_log_message(CR_ROWS_MESSAGE_PREFIX, bufp->data, bufp->len, true);
			resetStringInfo(bufp);
		}
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	ExecDropSingleTupleTableSlot(slot);
}

/* the next NUL-terminated string of a DDL message, NULL for "" */
static const char *
next_ddl_field(const char **cursor, const char *end)
{
	const char *field = cr_message_field(cursor, end, "cosmosrep DDL");

	return *field ? field : NULL;
}

/*
 * Repeat a table DDL received from another region, as the local table's
 * owner.  A table missing here, or owned by a role of another name, is an
 * error: replication from that region waits until it is resolved.  Every
 * field is checked first (the content comes from a peer): an action
 * byte, the schema, table and owner names, then the policy, path and
 * resolver (the policy required but for a disable; build_table_config
 * checks their values), and the configuration version.
 */
void
cr_table_apply_ddl(const char *content, Size size, const char *origin_region)
{
	const char *end = content + size;
	const char *cursor = content + 1;
	const char *nspname;
	const char *relname;
	const char *owner;
	const char *policy;
	const char *path;
	const char *resolver;
	int64		config_version;
	Oid			relid;
	Oid			local_owner_id;
	CrUserContext user;

	if (size < 1 || (content[0] != CR_DDL_ENABLE && content[0] != CR_DDL_ALTER_POLICY &&
					 content[0] != CR_DDL_DISABLE))
		cr_message_malformed("cosmosrep DDL", "The message has no known action.");
	nspname = cr_message_name_field(&cursor, end, "cosmosrep DDL");
	relname = cr_message_name_field(&cursor, end, "cosmosrep DDL");
	owner = cr_message_name_field(&cursor, end, "cosmosrep DDL");
	policy = next_ddl_field(&cursor, end);
	path = next_ddl_field(&cursor, end);
	resolver = next_ddl_field(&cursor, end);
	config_version = cr_message_int_field(&cursor, end, "cosmosrep DDL",
										  content[0] == CR_DDL_DISABLE ? 0 : 1,
										  PG_INT64_MAX);
	cr_message_end(cursor, end, "cosmosrep DDL");
	if (policy == NULL && content[0] != CR_DDL_DISABLE)
		cr_message_malformed("cosmosrep DDL", "An enable or policy change names no policy.");

	/*
	 * A policy change locks the table exclusively only where it changes
	 * something (apply_remote_ddl): most arrive known already, sent again
	 * before rows, and must not wait for the table's readers.
	 */
	relid = RangeVarGetRelid(makeRangeVar(pstrdup(nspname), pstrdup(relname), -1),
							 content[0] == CR_DDL_ALTER_POLICY ? RowExclusiveLock :
							 AccessExclusiveLock, true);
	if (!OidIsValid(relid) && content[0] != CR_DDL_ENABLE)
	{
		/* renamed here by a schema change the peer has not had yet */
		relid = cr_ddl_former_table(nspname, relname);
		if (OidIsValid(relid))
			LockRelationOid(relid, content[0] == CR_DDL_ALTER_POLICY ?
							RowExclusiveLock : AccessExclusiveLock);
	}
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.%s\" enabled in region \"%s\" does not exist in this region",
						nspname, relname, origin_region),
				 errhint("Create the table with the same columns in every region; replication from \"%s\" resumes once it exists.",
						 origin_region)));
	local_owner_id = cr_relation_owner_named(relid, owner, nspname, relname, origin_region);

	/* a policy change made here later must be newer than this one */
	cr_hlc_observe(config_version);
	cr_switch_to_owner(local_owner_id, &user);
	apply_remote_ddl(content[0], relid, policy, path, resolver,
					 config_version, origin_region);
	cr_restore_user(&user);
}

/*
 * The effect of one DDL message here: an enable or policy change keeps the
 * newest configuration, a disable of a table that is not multi-region here
 * (disabled here too) changes nothing.
 */
static void
apply_remote_ddl(char action, Oid relid, const char *policy, const char *path,
				 const char *resolver, int64 config_version,
				 const char *origin_region)
{
	CrTableConfig *current = cr_get_table_config(relid);

	switch (action)
	{
		case CR_DDL_ENABLE:
		case CR_DDL_ALTER_POLICY:
			if (current == NULL)
			{
				if (action == CR_DDL_ENABLE)
				{
					Relation	rel = table_open(relid, NoLock);
					bool		has_rows = cr_table_has_rows(rel);

					table_close(rel, NoLock);
					if (has_rows)
						ereport(ERROR,
								(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								 errmsg("table \"%s\" enabled in region \"%s\" has rows in this region",
										get_rel_name(relid), origin_region),
								 errdetail("Rows of a table that is not multi-region here would reach no other region."),
								 errhint("Call cosmosrep.enable_table for the table in this region too, which sends its rows to every region, or empty it; replication from \"%s\" resumes then.",
										 origin_region)));
					cr_table_enable(relid, policy, path, resolver, config_version);
				}
				break;
			}

			/*
			 * Every configuration received goes to the history, the one
			 * newer than the current one becomes current (and only that
			 * locks the table exclusively).  Regions also send each
			 * configuration again before the first row they ship under it
			 * (output_plugin.c): most arrive known already.
			 */
			if (config_version > current->config_version)
			{
				Relation	rel = open_user_table(relid, true);
				CrTableConfig *config = build_table_config(rel, policy, path, resolver);

				config->config_version = config_version;
				relation_close(rel, NoLock);
				cr_update_table_config(config);
				cr_record_policy_history(config);
			}
			else if (cr_get_policy_history(relid, config_version) == NULL)
				cr_table_remember_config(relid, policy, path, resolver, config_version);
			break;
		case CR_DDL_DISABLE:
			if (current != NULL)
				cr_table_disable(relid);
			break;
		default:
			elog(ERROR, "unrecognized cosmosrep DDL action %d", action);
	}
}
