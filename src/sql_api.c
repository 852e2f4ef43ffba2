/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *	  SQL-callable functions of cosmosrep: regions, tables and versions.
 *
 * NOTES
 *	  These functions validate their arguments, check privileges and then
 *	  delegate: catalog.c for configuration rows, hlc.c for versions, SPI
 *	  for the DDL that makes a table multi-region.  Every validation runs
 *	  before the first change, and everything happens in the caller's
 *	  transaction, so a rejected call changes nothing.
 *
 * IDENTIFICATION
 *	  src/sql_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "catalog.h"
#include "cosmosrep.h"
#include "hlc.h"

PG_FUNCTION_INFO_V1(cosmosrep_next_version);
PG_FUNCTION_INFO_V1(cosmosrep_current_version);
PG_FUNCTION_INFO_V1(cosmosrep_observe_version);
PG_FUNCTION_INFO_V1(cosmosrep_version_region);
PG_FUNCTION_INFO_V1(cosmosrep_version_time);
PG_FUNCTION_INFO_V1(cosmosrep_create_region);
PG_FUNCTION_INFO_V1(cosmosrep_redact_dsn);
PG_FUNCTION_INFO_V1(cosmosrep_enable_table);
PG_FUNCTION_INFO_V1(cosmosrep_alter_table_policy);
PG_FUNCTION_INFO_V1(cosmosrep_disable_table);

#define MAX_REGION_NAME_LEN 30

static const char *const cr_added_columns[] = {
	CR_VERSION_COLUMN, CR_BASE_COLUMN, CR_REGION_COLUMN
};

static void validate_region_name(const char *name);
static PQconninfoOption *parse_dsn(const char *dsn);
static Relation open_user_table(Oid relid, bool must_be_enabled);
static CrTableConfig *build_table_config(Relation rel, FunctionCallInfo fcinfo);
static Oid	lookup_resolver(Relation rel, const char *name);
static void spi_run_ddl(const char *sql);

/* ----------------------------------------------------------------
 * Versions
 * ----------------------------------------------------------------
 */

Datum
cosmosrep_next_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(cr_hlc_next_version(cr_local_region_id(false)));
}

Datum
cosmosrep_current_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(cr_hlc_current());
}

Datum
cosmosrep_observe_version(PG_FUNCTION_ARGS)
{
	int64		version = PG_GETARG_INT64(0);

	if (version <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid version %lld", (long long) version),
				 errdetail("Versions are positive.")));
	cr_hlc_observe(version);
	PG_RETURN_VOID();
}

Datum
cosmosrep_version_region(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16((int16) cr_version_region(PG_GETARG_INT64(0)));
}

Datum
cosmosrep_version_time(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(cr_version_time(PG_GETARG_INT64(0)));
}

/* ----------------------------------------------------------------
 * Regions
 * ----------------------------------------------------------------
 */

/*
 * Region names become part of replication slot and origin names, so they
 * are restricted to what those accept.
 */
static void
validate_region_name(const char *name)
{
	bool		ok = name[0] >= 'a' && name[0] <= 'z' &&
		strlen(name) <= MAX_REGION_NAME_LEN;

	for (const char *p = name; ok && *p; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';

	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid region name \"%s\"", name),
				 errdetail("A region name starts with a lowercase letter and contains only lowercase letters, digits and underscores, at most %d characters.",
						   MAX_REGION_NAME_LEN)));
}

/*
 * Parse a libpq connection string; the caller frees the result with
 * PQconninfoFree.
 */
static PQconninfoOption *
parse_dsn(const char *dsn)
{
	char	   *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(dsn, &err);

	if (opts == NULL)
	{
		char	   *detail = err ? pstrdup(err) : pstrdup("out of memory");
		size_t		len = strlen(detail);

		if (err)
			PQfreemem(err);
		/* libpq ends its messages with a newline */
		while (len > 0 && detail[len - 1] == '\n')
			detail[--len] = '\0';
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid connection string"),
				 errdetail_internal("%s", detail)));
	}
	return opts;
}

Datum
cosmosrep_create_region(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *dsn = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int			local_id;
	CrRegion	region;

	cr_require_preload();
	validate_region_name(name);
	PQconninfoFree(parse_dsn(dsn));

	local_id = cr_local_region_id(true);
	if (local_id > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this database is already a cosmosrep region"),
				 errdetail("Its region has id %d.", local_id)));

	region.id = 1;
	region.name = name;
	region.dsn = dsn;
	region.is_local = true;
	region.failover_priority = 0;
	cr_insert_region(&region);

	PG_RETURN_INT16(region.id);
}

/*
 * The connection string without its password, for users who may see the
 * regions but not their secrets.
 */
Datum
cosmosrep_redact_dsn(PG_FUNCTION_ARGS)
{
	PQconninfoOption *opts = parse_dsn(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	StringInfoData buf;

	initStringInfo(&buf);
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
	{
		if (o->val == NULL || strcmp(o->keyword, "password") == 0)
			continue;
		if (buf.len > 0)
			appendStringInfoChar(&buf, ' ');
		appendStringInfo(&buf, "%s='", o->keyword);
		for (const char *c = o->val; *c; c++)
		{
			if (*c == '\'' || *c == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *c);
		}
		appendStringInfoChar(&buf, '\'');
	}
	PQconninfoFree(opts);
	PG_RETURN_TEXT_P(cstring_to_text(buf.data));
}

/* ----------------------------------------------------------------
 * Multi-region tables
 * ----------------------------------------------------------------
 */

/*
 * Open a user table for enable/alter/disable after checking what every one
 * of them requires.  The relation is returned open and locked in
 * AccessExclusiveLock mode, which the caller keeps until commit.
 */
static Relation
open_user_table(Oid relid, bool must_be_enabled)
{
	Relation	rel = relation_open(relid, AccessExclusiveLock);
	const char *relname = RelationGetRelationName(rel);
	bool		enabled;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", relname),
				 errdetail("Only ordinary tables can be multi-region.")));

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
build_table_config(Relation rel, FunctionCallInfo fcinfo)
{
	CrTableConfig *config = palloc0(sizeof(CrTableConfig));
	const char *relname = RelationGetRelationName(rel);
	char	   *resolver;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("conflict policy must not be null")));
	config->relid = RelationGetRelid(rel);
	config->policy = text_to_cstring(PG_GETARG_TEXT_PP(1));
	config->path = PG_ARGISNULL(2) ? NULL : pstrdup(NameStr(*PG_GETARG_NAME(2)));
	resolver = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));

	if (strcmp(config->policy, "last_writer_wins") != 0 &&
		strcmp(config->policy, "custom") != 0 &&
		strcmp(config->policy, "manual") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown conflict policy \"%s\"", config->policy),
				 errhint("The conflict policies are last_writer_wins, custom and manual.")));

	if (config->path != NULL)
	{
		AttrNumber	attnum;
		Oid			typid;

		if (strcmp(config->policy, "last_writer_wins") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conflict policy \"%s\" does not take a path", config->policy),
					 errhint("Only last_writer_wins compares a column named by path.")));

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

	if (strcmp(config->policy, "custom") == 0)
	{
		if (resolver == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conflict policy \"custom\" requires a resolver"),
					 errhint("Pass the name of a function as resolver.")));
		config->resolver = lookup_resolver(rel, resolver);
	}
	else if (resolver != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("conflict policy \"%s\" does not take a resolver", config->policy),
				 errhint("Use policy => 'custom' with a resolver.")));

	return config;
}

/*
 * Find the resolver function for rel: (incoming rel, existing rel,
 * is_tombstone boolean, conflict_kind text) RETURNS rel.
 */
static Oid
lookup_resolver(Relation rel, const char *name)
{
	Oid			rowtype = rel->rd_rel->reltype;
	Oid			argtypes[4] = {rowtype, rowtype, BOOLOID, TEXTOID};
	List	   *names = stringToQualifiedNameList(name);
	Oid			funcid = LookupFuncName(names, 4, argtypes, true);
	char	   *rowtypename = format_type_be(rowtype);

	if (!OidIsValid(funcid) || get_func_rettype(funcid) != rowtype)
	{
		if (!OidIsValid(funcid) &&
			FuncnameGetCandidates(names, -1, NIL, false, false, false, true) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("resolver function \"%s\" does not exist", name)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function \"%s\" cannot resolve conflicts of table \"%s\"",
						name, RelationGetRelationName(rel)),
				 errdetail("A resolver must take (incoming %s, existing %s, is_tombstone boolean, conflict_kind text) and return %s.",
						   rowtypename, rowtypename, rowtypename)));
	}
	return funcid;
}

static void
spi_run_ddl(const char *sql)
{
	int			rc;

	SPI_connect();
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed for \"%s\": %s", sql, SPI_result_code_string(rc));
	SPI_finish();
}

Datum
cosmosrep_enable_table(PG_FUNCTION_ARGS)
{
	Relation	rel;
	CrTableConfig *config;
	char	   *qualname;
	const char *relname;
	TupleDesc	desc;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation must not be null")));

	cr_require_preload();
	cr_local_region_id(false);

	rel = open_user_table(PG_GETARG_OID(0), false);
	relname = RelationGetRelationName(rel);
	desc = RelationGetDescr(rel);

	if (!OidIsValid(RelationGetPrimaryKeyIndex(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key", relname),
				 errhint("Add a primary key, then call cosmosrep.enable_table again.")));

	for (int i = 0; i < lengthof(cr_added_columns); i++)
	{
		if (SPI_fnumber(desc, cr_added_columns[i]) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" already exists",
							cr_added_columns[i], relname),
					 errhint("cosmosrep adds the columns %s, %s and %s; rename that column first.",
							 CR_VERSION_COLUMN, CR_BASE_COLUMN, CR_REGION_COLUMN)));
	}

	config = build_table_config(rel, fcinfo);
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  relname);
	/* ALTER TABLE refuses a table this session still has open */
	relation_close(rel, NoLock);

	/* existing rows get a distinct version each from the volatile default */
	spi_run_ddl(psprintf("ALTER TABLE %s"
						 " ADD COLUMN %s bigint NOT NULL DEFAULT cosmosrep.next_version(),"
						 " ADD COLUMN %s bigint NOT NULL DEFAULT 0,"
						 " ADD COLUMN %s smallint NOT NULL"
						 " GENERATED ALWAYS AS (cosmosrep.version_region(%s)) STORED",
						 qualname, CR_VERSION_COLUMN, CR_BASE_COLUMN,
						 CR_REGION_COLUMN, CR_VERSION_COLUMN));
	spi_run_ddl(psprintf("CREATE TRIGGER %s BEFORE INSERT OR UPDATE OR DELETE ON %s"
						 " FOR EACH ROW EXECUTE FUNCTION cosmosrep.stamp_row()",
						 CR_TRIGGER_NAME, qualname));
	cr_insert_table_config(config);

	PG_RETURN_VOID();
}

Datum
cosmosrep_alter_table_policy(PG_FUNCTION_ARGS)
{
	Relation	rel;
	CrTableConfig *config;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation must not be null")));

	rel = open_user_table(PG_GETARG_OID(0), true);
	config = build_table_config(rel, fcinfo);
	relation_close(rel, NoLock);
	cr_update_table_config(config);

	PG_RETURN_VOID();
}

Datum
cosmosrep_disable_table(PG_FUNCTION_ARGS)
{
	Relation	rel = open_user_table(PG_GETARG_OID(0), true);
	char	   *qualname;

	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel));
	relation_close(rel, NoLock);

	spi_run_ddl(psprintf("DROP TRIGGER %s ON %s", CR_TRIGGER_NAME, qualname));
	spi_run_ddl(psprintf("ALTER TABLE %s DROP COLUMN %s, DROP COLUMN %s, DROP COLUMN %s",
						 qualname, CR_REGION_COLUMN, CR_BASE_COLUMN, CR_VERSION_COLUMN));
	cr_delete_table_config(PG_GETARG_OID(0));

	PG_RETURN_VOID();
}
