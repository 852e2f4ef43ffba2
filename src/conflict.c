/*-------------------------------------------------------------------------
 *
 * conflict.c
 *	  The one decision of apply, and conflicts: which remote change wins,
 *	  whether it collided with a write it had not seen, and the record of
 *	  that collision in cosmosrep.conflict.
 *
 * NOTES
 *	  Every kind of remote change (insert, update, the delete and insert
 *	  halves of an update that changes the key, delete, the rows of an
 *	  enable) is decided here, against either the local row or, when
 *	  there is none, the newest tombstone of the key (a delete, or the
 *	  table's truncate horizon).  Versions are unique and totally ordered
 *	  (hlc.h), so "the higher version wins" gives every region the same
 *	  winner whatever the order in which the writes arrive: that is what
 *	  makes last-writer-wins converge.  An equal version is the same write
 *	  arriving twice (after a join's copy), which changes nothing.
 *
 *	  Detection is separate from the decision and never changes it.  A
 *	  change conflicts when its writer had not seen what this region
 *	  holds, and this region's write had not seen the change: every write
 *	  carries the version it replaced (its base), so an update made after
 *	  seeing the local row has that row's version as base, and a local
 *	  row written after seeing the change has the change's version as
 *	  base.  Causally ordered writes are therefore no conflicts.  The base
 *	  reaches one write back: a region that receives two causally
 *	  ordered writes of one key from two regions out of order (the later
 *	  one first) records the earlier one as a conflict, which the decision
 *	  resolves exactly as it would have anyway.
 *
 *	  Each region records the conflicts it detects, in the transaction
 *	  that applies the change, with both rows as jsonb.
 *
 * IDENTIFICATION
 *	  src/conflict.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "conflict.h"
#include "cosmosrep.h"
#include "hlc.h"

/* names of the conflict kinds, as cosmosrep.conflicts shows them */
static const char *const conflict_kind_names[] = {
	[CR_CONFLICT_NONE] = "none",
	[CR_CONFLICT_INSERT_EXISTS] = "insert_exists",
	[CR_CONFLICT_INSERT_DELETED] = "insert_deleted",
	[CR_CONFLICT_UPDATE_UPDATE] = "update_update",
	[CR_CONFLICT_UPDATE_DELETED] = "update_deleted",
	[CR_CONFLICT_DELETE_UPDATED] = "delete_updated",
};

static SPIPlanPtr record_plan = NULL;

static Datum row_jsonb(TupleTableSlot *slot);
static Datum primary_key_names(Relation rel);

/*
 * Whether a remote write at incoming_version replaces what local holds:
 * the row (an insert or update makes it the remote row, a delete removes
 * it) or the tombstone (an insert or update recreates the row).
 */
bool
cr_remote_wins(int64 incoming_version, const CrLocalState *local)
{
	return incoming_version > local->version;
}

/*
 * Whether a remote change collides with what this region holds, and how.
 */
CrConflictKind
cr_detect_conflict(const CrIncoming *incoming, const CrLocalState *local)
{
	/* the same write twice, or nothing here to collide with */
	if (local->version == incoming->version || local->version == 0)
		return CR_CONFLICT_NONE;

	if (local->row_found)
	{
		/* the change was made on this row, or this row after the change */
		if (incoming->base == local->version || local->base == incoming->version)
			return CR_CONFLICT_NONE;
		switch (incoming->kind)
		{
			case CR_CHANGE_INSERT:
				return CR_CONFLICT_INSERT_EXISTS;
			case CR_CHANGE_UPDATE:
				return CR_CONFLICT_UPDATE_UPDATE;
			case CR_CHANGE_DELETE:
				return CR_CONFLICT_DELETE_UPDATED;
		}
	}

	/*
	 * A tombstone, whose base is the version the delete removed.  The
	 * delete had seen the change if it removed it.  An update based on
	 * that version, or on an older one, was made without seeing the
	 * delete; one based on a newer version belongs to a later life of the
	 * key (recreated after the delete), not to the deleted row.  An
	 * insert older than the delete is one the delete had not seen.
	 */
	if (local->base == incoming->version || incoming->kind == CR_CHANGE_DELETE)
		return CR_CONFLICT_NONE;
	if (incoming->kind == CR_CHANGE_UPDATE && incoming->base != 0 &&
		incoming->base <= local->base)
		return CR_CONFLICT_UPDATE_DELETED;
	if (incoming->kind == CR_CHANGE_INSERT && incoming->version < local->version)
		return CR_CONFLICT_INSERT_DELETED;
	return CR_CONFLICT_NONE;
}

/* a row as jsonb, or a null Datum for NULL */
static Datum
row_jsonb(TupleTableSlot *slot)
{
	Datum		json;

	if (slot == NULL)
		return (Datum) 0;
	json = DirectFunctionCall1(row_to_json, ExecFetchSlotHeapTupleDatum(slot));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(TextDatumGetCString(json)));
}

/* the names of rel's primary key columns, as a text[] */
static Datum
primary_key_names(Relation rel)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkoid));
	Form_pg_index index;
	Datum	   *names;
	ArrayType  *array;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for index %u", pkoid);
	index = (Form_pg_index) GETSTRUCT(tup);
	names = palloc(sizeof(Datum) * index->indnkeyatts);
	for (int i = 0; i < index->indnkeyatts; i++)
		names[i] = CStringGetTextDatum(get_attname(RelationGetRelid(rel),
												   index->indkey.values[i], false));
	array = construct_array(names, index->indnkeyatts, TEXTOID, -1, false,
							TYPALIGN_INT);
	ReleaseSysCache(tup);
	return PointerGetDatum(array);
}

/*
 * Drop the resolved conflicts older than cosmosrep.conflict_retention;
 * pending and error entries (the feed) stay until they are resolved.
 */
void
cr_conflict_purge_history(void)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(cr_conflict_retention_s)};

	(void) cr_catalog_write(NULL,
							"DELETE FROM cosmosrep.conflict"
							" WHERE resolution OPERATOR(pg_catalog.<>) ALL ('{pending,error}'::text[])"
							" AND resolved_at OPERATOR(pg_catalog.<)"
							" (pg_catalog.now() OPERATOR(pg_catalog.-)"
							"  pg_catalog.make_interval(secs => $1))",
							1, argtypes, values, NULL, SPI_OK_DELETE);
}

/*
 * Record a conflict of rel detected here, in the caller's (apply)
 * transaction.  local_row and remote_row are the two rows, or NULL where
 * there is none (a tombstone, an incoming delete).  The winner is the
 * remote row if remote_applied, else what this region kept.
 */
void
cr_record_conflict(Relation rel, const char *policy, CrConflictKind kind,
				   const CrIncoming *incoming, const CrLocalState *local,
				   TupleTableSlot *local_row, TupleTableSlot *remote_row,
				   bool remote_applied)
{
	Oid			argtypes[11] = {OIDOID, TEXTOID, INT2OID, INT2OID, INT8OID, INT8OID,
	JSONBOID, JSONBOID, TEXTOID, TEXTOID, TEXTARRAYOID};
	Datum		values[11];
	char		nulls[11];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = ObjectIdGetDatum(RelationGetRelid(rel));
	values[1] = CStringGetTextDatum(conflict_kind_names[kind]);
	values[2] = Int16GetDatum(cr_local_region_id(false));
	values[3] = Int16GetDatum(cr_version_region(incoming->version));
	values[4] = Int64GetDatum(local->version);
	values[5] = Int64GetDatum(incoming->version);
	values[6] = row_jsonb(local_row);
	nulls[6] = local_row ? ' ' : 'n';
	values[7] = row_jsonb(remote_row);
	nulls[7] = remote_row ? ' ' : 'n';
	values[8] = CStringGetTextDatum(policy);
	values[9] = CStringGetTextDatum(remote_applied ? "remote_applied" : "local_kept");
	values[10] = primary_key_names(rel);

	(void) cr_catalog_write(&record_plan,
							"INSERT INTO cosmosrep.conflict"
							" (relid, key, kind, local_region, remote_region,"
							"  local_version, remote_version, local_row, remote_row,"
							"  policy, resolution, winner_row)"
							" SELECT $1, (SELECT pg_catalog.jsonb_object_agg(k,"
							"              coalesce($8, $7) OPERATOR(pg_catalog.->) k)"
							"             FROM pg_catalog.unnest($11) k),"
							"        $2, $3, $4, $5, $6, $7, $8, $9, $10,"
							"        CASE WHEN $10 OPERATOR(pg_catalog.=) 'remote_applied'"
							"             THEN $8 ELSE $7 END",
							11, argtypes, values, nulls, SPI_OK_INSERT);
}
