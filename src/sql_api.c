/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *	  SQL-callable functions of cosmosrep: regions, tables and versions.
 *
 * NOTES
 *	  These functions validate their arguments and then delegate: hlc.c for
 *	  versions, catalog.c for regions, tables.c for multi-region tables.
 *	  Every validation runs before the first change, and everything happens
 *	  in the caller's transaction, so a rejected call changes nothing.
 *
 * IDENTIFICATION
 *	  src/sql_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "hlc.h"
#include "names.h"
#include "shmem.h"
#include "sql_api.h"
#include "tables.h"

PG_FUNCTION_INFO_V1(cosmosrep_next_version);
PG_FUNCTION_INFO_V1(cosmosrep_global_id);
PG_FUNCTION_INFO_V1(cosmosrep_current_version);
PG_FUNCTION_INFO_V1(cosmosrep_observe_version);
PG_FUNCTION_INFO_V1(cosmosrep_version_region);
PG_FUNCTION_INFO_V1(cosmosrep_version_time);
PG_FUNCTION_INFO_V1(cosmosrep_create_region);
PG_FUNCTION_INFO_V1(cosmosrep_redact_dsn);
PG_FUNCTION_INFO_V1(cosmosrep_arbiter);
PG_FUNCTION_INFO_V1(cosmosrep_enable_table);
PG_FUNCTION_INFO_V1(cosmosrep_alter_table_policy);
PG_FUNCTION_INFO_V1(cosmosrep_disable_table);

#define MAX_REGION_NAME_LEN 28

static PQconninfoOption *parse_dsn(const char *dsn);
static void check_table_arguments(FunctionCallInfo fcinfo);

/* ----------------------------------------------------------------
 * Versions
 * ----------------------------------------------------------------
 */

Datum
cosmosrep_next_version(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	PG_RETURN_INT64(cr_hlc_next_version(cr_local_region_id(false)));
}

/*
 * cosmosrep.global_id(): a 64-bit id unique in the whole group, for a
 * column default: the region's clock (milliseconds, a counter, the region
 * id), so rising in each region and above every id issued before a crash
 * or a step back of the wall clock.
 */
Datum
cosmosrep_global_id(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	PG_RETURN_INT64(cr_hlc_next_id(cr_local_region_id(false)));
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
void
cr_validate_region_name(const char *name)
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

/* report an error unless dsn is a valid libpq connection string */
void
cr_validate_dsn(const char *dsn)
{
	PQconninfoFree(parse_dsn(dsn));
}

Datum
cosmosrep_create_region(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *dsn = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int			local_id;
	CrRegion	region;

	cr_require_preload();
	cr_validate_region_name(name);
	cr_validate_dsn(dsn);

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
	region.paused = false;
	region.accepts_writes = true;
	cr_insert_region(&region);

	PG_RETURN_INT16(region.id);
}

/* the name of the arbiter, the region that runs the resolvers (catalog.c) */
Datum
cosmosrep_arbiter(PG_FUNCTION_ARGS)
{
	CrRegion   *arbiter = cr_get_region_by_id(cr_arbiter_region_id());

	if (arbiter == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(arbiter->name));
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
		/* dispchar '*' marks secrets: password, sslpassword */
		if (o->val == NULL || o->dispchar[0] == '*')
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

/* a text argument, NULL when SQL NULL */
#define TEXT_ARG_OR_NULL(n) (PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n)))

static void
check_table_arguments(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("conflict policy must not be null")));
}

Datum
cosmosrep_enable_table(PG_FUNCTION_ARGS)
{
	check_table_arguments(fcinfo);
	cr_table_enable(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
					PG_ARGISNULL(2) ? NULL : NameStr(*PG_GETARG_NAME(2)),
					TEXT_ARG_OR_NULL(3), 0);
	PG_RETURN_VOID();
}

Datum
cosmosrep_alter_table_policy(PG_FUNCTION_ARGS)
{
	check_table_arguments(fcinfo);
	cr_table_alter_policy(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
						  PG_ARGISNULL(2) ? NULL : NameStr(*PG_GETARG_NAME(2)),
						  TEXT_ARG_OR_NULL(3));
	PG_RETURN_VOID();
}

Datum
cosmosrep_disable_table(PG_FUNCTION_ARGS)
{
	cr_table_disable(PG_GETARG_OID(0));
	PG_RETURN_VOID();
}
