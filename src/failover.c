/*-------------------------------------------------------------------------
 *
 * failover.c
 *	  The roles of regions: failover priorities, the connection string
 *	  that lets libpq's multi-host failover serve as Cosmos DB's preferred
 *	  regions, and which regions accept writes.
 *
 * NOTES
 *	  cosmosrep.set_failover_priority validates a priority where it is
 *	  called (1 or more, unique among the regions there) and writes a
 *	  transactional message that every other region applies, so the
 *	  change reaches a region that is partitioned away once it is back.
 *	  Each priority carries the version of the change that set it; a
 *	  region keeps the newest, so concurrent changes end alike everywhere.
 *
 *	  cosmosrep.connection_string orders the regions' hosts by priority
 *	  (a preferred region first, then priorities 1, 2, ..., then regions
 *	  without one, by id) into one libpq connection string with
 *	  target_session_attrs=read-write: libpq tries the hosts in order and
 *	  connects to the first that answers.  It carries no credentials.
 *
 *	  cosmosrep.set_multiple_write_regions switches multi-region writes on
 *	  (every region accepts writes to multi-region tables, the default) or
 *	  off (one write region).  It travels like a priority, with a version,
 *	  so every region ends with the newest setting; the row trigger refuses
 *	  writes in a region that does not accept them.  It cannot be switched
 *	  on while the server-wide consistency level is strong, which needs a
 *	  single write region (consistency.c).
 *
 * IDENTIFICATION
 *	  src/failover.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "consistency.h"
#include "failover.h"
#include "hlc.h"
#include "names.h"
#include "protocol.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(cosmosrep_set_failover_priority);
PG_FUNCTION_INFO_V1(cosmosrep_connection_string);
PG_FUNCTION_INFO_V1(cosmosrep_set_multiple_write_regions);

static void append_conninfo_value(StringInfo buf, const char *value);


Datum
cosmosrep_set_failover_priority(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			priority = PG_GETARG_INT32(1);
	int64		version;
	CrRegion   *target = NULL;
	ListCell   *lc;

	cr_require_preload();
	cr_local_region_id(false);
	if (priority < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("failover priority must be at least 1"),
				 errdetail("Priority 1 is tried first.")));
	foreach(lc, cr_get_regions())
	{
		CrRegion   *r = lfirst(lc);

		if (strcmp(r->name, name) == 0)
			target = r;
		else if (r->failover_priority == priority)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("region \"%s\" already has failover priority %d", r->name, priority),
					 errhint("Give region \"%s\" another priority first.", r->name)));
	}
	if (target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("region \"%s\" does not exist", name)));

	version = cr_hlc_next_version(cr_local_region_id(false));
	cr_set_failover_priority(name, priority, version);
	if (XLogLogicalInfoActive())
	{
		const char *fields[3] = {name, psprintf("%d", priority),
		psprintf(INT64_FORMAT, version)};

		cr_log_fields_message(CR_FAILOVER_MESSAGE_PREFIX, fields, 3);
	}
	PG_RETURN_VOID();
}

/*
 * Apply a priority change received from another region: region name,
 * priority and version, as NUL-terminated strings.  A region unknown here
 * (removed meanwhile) is skipped.
 */
void
cr_failover_apply_message(const char *content, Size size)
{
	const char *cursor = content;
	const char *end = content + size;
	const char *name = cr_message_name_field(&cursor, end, "failover priority");
	int32		priority = cr_message_int_field(&cursor, end, "failover priority",
												1, PG_INT32_MAX);
	int64		version = cr_message_int_field(&cursor, end, "failover priority",
											   1, PG_INT64_MAX);

	cr_message_end(cursor, end, "failover priority");
	cr_set_failover_priority(name, priority, version);
}



/*
 * cosmosrep.set_multiple_write_regions(enabled, write_region): on, every
 * region accepts writes; off, only write_region (this region by default).
 */
Datum
cosmosrep_set_multiple_write_regions(PG_FUNCTION_ARGS)
{
	char	   *write_region = NULL;
	int64		version;

	cr_require_preload();
	cr_local_region_id(false);
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("enabled must not be null")));
	if (PG_GETARG_BOOL(0))
	{
		if (!PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a write region is named only when multi-region writes are switched off")));
		if (cr_consistency_requires_single_writer())
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("multi-region writes cannot be switched on while the consistency level is \"strong\""),
					 errhint("Set cosmosrep.default_consistency to a weaker level first.")));
	}
	else
	{
		write_region = PG_ARGISNULL(1) ?
			cr_get_region_by_id(cr_local_region_id(false))->name :
			text_to_cstring(PG_GETARG_TEXT_PP(1));
		if (cr_get_region_by_name(write_region) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("region \"%s\" does not exist", write_region)));
	}

	version = cr_hlc_next_version(cr_local_region_id(false));
	cr_set_write_regions(write_region, version);
	if (XLogLogicalInfoActive())
	{
		const char *fields[2] = {psprintf(INT64_FORMAT, version),
		write_region ? write_region : ""};

		cr_log_fields_message(CR_WRITES_MESSAGE_PREFIX, fields, 2);
	}
	PG_RETURN_VOID();
}

/*
 * Apply a write regions change received from another region: version and
 * write region ("" for every region), as NUL-terminated strings.
 */
void
cr_write_regions_apply_message(const char *content, Size size)
{
	const char *cursor = content;
	const char *end = content + size;
	int64		version = cr_message_int_field(&cursor, end, "write regions",
											   1, PG_INT64_MAX);
	const char *region = cr_message_field(&cursor, end, "write regions");

	cr_message_end(cursor, end, "write regions");
	if (*region && cr_get_region_by_name(region) == NULL)
	{
		/* removed here meanwhile: no region of this group may write then */
		ereport(LOG,
				(errmsg("cosmosrep skipped a change of write regions to unknown region \"%s\"",
						region)));
		return;
	}
	cr_set_write_regions(*region ? region : NULL, version);
}

/* a libpq connection string value, quoted when it needs to be */
static void
append_conninfo_value(StringInfo buf, const char *value)
{
	if (value[0] != '\0' && strpbrk(value, " '\\") == NULL)
	{
		appendStringInfoString(buf, value);
		return;
	}
	appendStringInfoChar(buf, '\'');
	for (const char *c = value; *c; c++)
	{
		if (*c == '\'' || *c == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *c);
	}
	appendStringInfoChar(buf, '\'');
}

Datum
cosmosrep_connection_string(PG_FUNCTION_ARGS)
{
	char	   *preferred = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	List	   *ordered = NIL;
	ListCell   *lc;
	StringInfoData hosts;
	StringInfoData ports;
	StringInfoData result;
	char	   *dbname = NULL;
	bool		found_preferred = (preferred == NULL);

	cr_require_preload();
	cr_local_region_id(false);

	/* preferred first, then priorities 1, 2, ..., then the others by id */
	for (int pass = 0; pass < 3; pass++)
	{
		List	   *regions = cr_get_regions();

		if (pass == 1)
		{
			int			max_priority = 0;

			foreach(lc, regions)
				max_priority = Max(max_priority, ((CrRegion *) lfirst(lc))->failover_priority);
			for (int p = 1; p <= max_priority; p++)
			{
				foreach(lc, regions)
				{
					CrRegion   *r = lfirst(lc);

					if (r->failover_priority == p &&
						(preferred == NULL || strcmp(r->name, preferred) != 0))
						ordered = lappend(ordered, r);
				}
			}
			continue;
		}
		foreach(lc, regions)
		{
			CrRegion   *r = lfirst(lc);
			bool		is_preferred = preferred && strcmp(r->name, preferred) == 0;

			if (pass == 0 && is_preferred)
			{
				ordered = lappend(ordered, r);
				found_preferred = true;
			}
			else if (pass == 2 && !is_preferred && r->failover_priority < 1)
				ordered = lappend(ordered, r);
		}
	}
	if (!found_preferred)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("region \"%s\" does not exist", preferred)));

	initStringInfo(&hosts);
	initStringInfo(&ports);
	foreach(lc, ordered)
	{
		CrRegion   *r = lfirst(lc);
		char	   *err = NULL;
		PQconninfoOption *opts = PQconninfoParse(r->dsn, &err);
		const char *host = "";
		const char *port = "";
		const char *db = NULL;

		if (opts == NULL)
		{
			if (err)
				PQfreemem(err);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("connection string of region \"%s\" is invalid", r->name)));
		}
		for (PQconninfoOption *o = opts; o->keyword; o++)
		{
			if (o->val == NULL)
				continue;
			if (strcmp(o->keyword, "host") == 0)
				host = pstrdup(o->val);
			else if (strcmp(o->keyword, "port") == 0)
				port = pstrdup(o->val);
			else if (strcmp(o->keyword, "dbname") == 0)
				db = pstrdup(o->val);
		}
		PQconninfoFree(opts);
		if (db == NULL)
			db = "";
		if (dbname == NULL)
			dbname = pstrdup(db);
		else if (strcmp(dbname, db) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("regions use different database names"),
					 errdetail("Region \"%s\" uses database \"%s\", another region \"%s\".",
							   r->name, db, dbname),
					 errhint("A libpq connection string with several hosts names one database.")));
		appendStringInfo(&hosts, "%s%s", lc != list_head(ordered) ? "," : "", host);
		appendStringInfo(&ports, "%s%s", lc != list_head(ordered) ? "," : "", port);
	}

	initStringInfo(&result);
	appendStringInfoString(&result, "host=");
	append_conninfo_value(&result, hosts.data);
	appendStringInfoString(&result, " port=");
	append_conninfo_value(&result, ports.data);
	appendStringInfoString(&result, " dbname=");
	append_conninfo_value(&result, dbname ? dbname : "");
	appendStringInfoString(&result, " target_session_attrs=read-write");
	PG_RETURN_TEXT_P(cstring_to_text(result.data));
}
