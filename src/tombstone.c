/*-------------------------------------------------------------------------
 *
 * tombstone.c
 *	  Tombstones: the versions of deleted rows.
 *
 * NOTES
 *	  A delete leaves (table, primary key, delete version) in
 *	  cosmosrep.tombstone, in the region that made it (row trigger) and in
 *	  every region that applies it.  An update that arrives for a row that
 *	  is missing here is then ordered against the delete like any two
 *	  writes: it recreates the row only if its version is higher than the
 *	  tombstone's.  Without the tombstone a late update would resurrect a
 *	  row that a newer delete removed, and regions would diverge.
 *
 *	  The key is the text form of the primary key columns, each prefixed
 *	  by its length, so that it is unambiguous; it is only ever compared
 *	  within one region.  Both statements are prepared once per backend
 *	  (SPI_keepplan) and executed per deleted row: no SQL is parsed per row.
 *
 * IDENTIFICATION
 *	  src/tombstone.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "catalog/pg_authid.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "tombstone.h"

static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr lookup_plan = NULL;
static SPIPlanPtr forget_plan = NULL;

static SPIPlanPtr prepare_once(SPIPlanPtr *plan, const char *sql, int nargs,
							   Oid *argtypes);
static int	execute_as_owner(SPIPlanPtr plan, Datum *values, bool read_only,
							 long count);

/*
 * The tombstone key of the row in slot, in the caller's memory context.
 */
char *
cr_tombstone_key(Relation rel, TupleTableSlot *slot)
{
	Bitmapset  *pkattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	StringInfoData buf;
	int			col = -1;

	initStringInfo(&buf);
	slot_getallattrs(slot);
	while ((col = bms_next_member(pkattrs, col)) >= 0)
	{
		AttrNumber	attnum = col + FirstLowInvalidHeapAttributeNumber;
		Oid			typoutput;
		bool		isvarlena;
		char	   *value;

		if (slot->tts_isnull[attnum - 1])
		{
			appendStringInfoString(&buf, "-1:");
			continue;
		}
		getTypeOutputInfo(TupleDescAttr(slot->tts_tupleDescriptor, attnum - 1)->atttypid,
						  &typoutput, &isvarlena);
		value = OidOutputFunctionCall(typoutput, slot->tts_values[attnum - 1]);
		appendStringInfo(&buf, "%zu:%s", strlen(value), value);
	}
	return buf.data;
}

static SPIPlanPtr
prepare_once(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * Execute a prepared statement on cosmosrep.tombstone, which PUBLIC may
 * not touch, as its owner; the callers act for a user who may delete or
 * replicate the row.
 */
static int
execute_as_owner(SPIPlanPtr plan, Datum *values, bool read_only, long count)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(plan, values, NULL, read_only, count);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return rc;
}

/*
 * Remember that the row with key was deleted at version (keeping the
 * higher version if a tombstone exists).
 */
void
cr_tombstone_record(Oid relid, const char *key, int64 version)
{
	Oid			argtypes[3] = {OIDOID, TEXTOID, INT8OID};
	Datum		values[3];
	int			rc;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(key);
	values[2] = Int64GetDatum(version);

	SPI_connect();
	rc = execute_as_owner(prepare_once(&record_plan,
									   "INSERT INTO cosmosrep.tombstone AS t (relid, key, version)"
									   " VALUES ($1, $2, $3)"
									   " ON CONFLICT (relid, key) DO UPDATE"
									   " SET version = excluded.version, deleted_at = pg_catalog.now()"
									   " WHERE t.version OPERATOR(pg_catalog.<) excluded.version",
									   3, argtypes),
						  values, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not record tombstone: %s", SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * The version of the delete that removed the row with key, or 0.
 */
int64
cr_tombstone_version(Oid relid, const char *key)
{
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		values[2];
	int64		version = 0;
	int			rc;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(key);

	SPI_connect();
	rc = execute_as_owner(prepare_once(&lookup_plan,
									   "SELECT version FROM cosmosrep.tombstone"
									   " WHERE relid OPERATOR(pg_catalog.=) $1"
									   " AND key OPERATOR(pg_catalog.=) $2",
									   2, argtypes),
						  values, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read tombstone: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;

		version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	return version;
}

/*
 * Drop the tombstones of a table that stops being multi-region.
 */
void
cr_tombstone_forget_table(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	int			rc;

	SPI_connect();
	rc = execute_as_owner(prepare_once(&forget_plan,
									   "DELETE FROM cosmosrep.tombstone"
									   " WHERE relid OPERATOR(pg_catalog.=) $1",
									   1, argtypes),
						  values, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not drop tombstones: %s", SPI_result_code_string(rc));
	SPI_finish();
}
