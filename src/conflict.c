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
 *	  that applies the change: they are collected while the group's
 *	  changes are applied and written in one statement before it commits,
 *	  with both rows as composite datums (a copy of the tuple, no work per
 *	  column), which cosmosrep.conflicts decodes to jsonb when it is read.
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
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

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

/* a conflict detected in the open transaction, not yet written */
typedef struct PendingConflict
{
	Oid			relid;
	CrConflictKind kind;
	int16		remote_region;
	int64		local_version;
	int64		remote_version;
	Datum		local_row;		/* composite datum, or 0 */
	Datum		remote_row;
	char	   *policy;
	bool		remote_applied;
} PendingConflict;

/* in TopTransactionContext; the apply worker flushes before it commits */
static List *pending_conflicts = NIL;

static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr local_row_plan = NULL;
static SPIPlanPtr remote_row_plan = NULL;

PG_FUNCTION_INFO_V1(cosmosrep_conflict_row);

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
 * Record a conflict of rel detected here.  It is kept with the rows (as
 * their composite datums, which carry their row type: no per-column work
 * while applying) in the transaction's memory, and written, with the
 * others of the transaction, by cr_flush_conflicts before it commits.
 * local_row and remote_row are the two rows, or NULL where there is none
 * (a tombstone, an incoming delete).
 */
void
cr_record_conflict(Relation rel, const char *policy, CrConflictKind kind,
				   const CrIncoming *incoming, const CrLocalState *local,
				   TupleTableSlot *local_row, TupleTableSlot *remote_row,
				   bool remote_applied)
{
	MemoryContext oldctx = MemoryContextSwitchTo(TopTransactionContext);
	PendingConflict *c = palloc(sizeof(PendingConflict));

	c->relid = RelationGetRelid(rel);
	c->kind = kind;
	c->remote_region = cr_version_region(incoming->version);
	c->local_version = local->version;
	c->remote_version = incoming->version;
	c->local_row = local_row ? ExecFetchSlotHeapTupleDatum(local_row) : (Datum) 0;
	c->remote_row = remote_row ? ExecFetchSlotHeapTupleDatum(remote_row) : (Datum) 0;
	c->policy = pstrdup(policy);
	c->remote_applied = remote_applied;
	pending_conflicts = lappend(pending_conflicts, c);
	MemoryContextSwitchTo(oldctx);
}

/*
 * Write the conflicts recorded in this transaction, in one statement.
 * Called by apply before each commit (and before DDL messages).
 */
void
cr_flush_conflicts(void)
{
	int			n = list_length(pending_conflicts);
	Oid			argtypes[10] = {OIDARRAYOID, TEXTARRAYOID, INT2ARRAYOID, INT2ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, BYTEAARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Oid			elemtypes[10] = {OIDOID, TEXTOID, INT2OID, INT2OID, INT8OID, INT8OID,
	BYTEAOID, BYTEAOID, TEXTOID, TEXTOID};
	Datum	   *columns[10];
	bool	   *nulls[10];
	Datum		values[10];
	int			i = 0;
	ListCell   *lc;
	int16		local_region;

	if (n == 0)
		return;
	/* called at commit, where no snapshot is set for the statements here */
	PushActiveSnapshot(GetTransactionSnapshot());
	local_region = cr_local_region_id(false);
	for (int col = 0; col < 10; col++)
	{
		columns[col] = palloc(sizeof(Datum) * n);
		nulls[col] = palloc0(sizeof(bool) * n);
	}
	foreach(lc, pending_conflicts)
	{
		PendingConflict *c = lfirst(lc);

		columns[0][i] = ObjectIdGetDatum(c->relid);
		columns[1][i] = CStringGetTextDatum(conflict_kind_names[c->kind]);
		columns[2][i] = Int16GetDatum(local_region);
		columns[3][i] = Int16GetDatum(c->remote_region);
		columns[4][i] = Int64GetDatum(c->local_version);
		columns[5][i] = Int64GetDatum(c->remote_version);
		columns[6][i] = c->local_row;
		nulls[6][i] = c->local_row == (Datum) 0;
		columns[7][i] = c->remote_row;
		nulls[7][i] = c->remote_row == (Datum) 0;
		columns[8][i] = CStringGetTextDatum(c->policy);
		columns[9][i] = CStringGetTextDatum(c->remote_applied ? "remote_applied" : "local_kept");
		i++;
	}
	for (int col = 0; col < 10; col++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {n};
		int			lbs[1] = {1};

		get_typlenbyvalalign(elemtypes[col], &typlen, &typbyval, &typalign);
		values[col] = PointerGetDatum(construct_md_array(columns[col], nulls[col], 1,
														 dims, lbs, elemtypes[col],
														 typlen, typbyval, typalign));
	}
	(void) cr_catalog_write(&record_plan,
							"INSERT INTO cosmosrep.conflict"
							" (relid, kind, local_region, remote_region, local_version,"
							"  remote_version, local_row, remote_row, policy, resolution)"
							" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							"  pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							"  pg_catalog.unnest($9), pg_catalog.unnest($10))",
							10, argtypes, values, NULL, SPI_OK_INSERT);
	PopActiveSnapshot();
	list_free(pending_conflicts);
	pending_conflicts = NIL;
}

/*
 * cosmosrep.conflict_row(conflict_id, local): one of the two rows of a
 * recorded conflict as jsonb, decoded from the composite datum stored
 * when it was detected (with the table's current row type: columns added
 * since read as null), or NULL.  Takes an id, not the stored bytes, so
 * that no caller can make it decode bytes of their own, and answers only
 * a user who may read the table.
 */
Datum
cosmosrep_conflict_row(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {PG_GETARG_DATUM(0)};
	bool		local = PG_GETARG_BOOL(1);
	SPIPlanPtr *plan = local ? &local_row_plan : &remote_row_plan;
	MemoryContext callerctx = CurrentMemoryContext;
	HeapTupleHeader row = NULL;
	Oid			relid = InvalidOid;
	Oid			save_userid;
	int			save_sec_context;
	Datum		json;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SPI_connect();
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (*plan == NULL)
	{
		*plan = SPI_prepare(local ?
							"SELECT relid, local_row FROM cosmosrep.conflict WHERE conflict_id = $1" :
							"SELECT relid, remote_row FROM cosmosrep.conflict WHERE conflict_id = $1",
							1, argtypes);
		if (*plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(*plan);
	}
	if (SPI_execute_plan(*plan, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		bool		isnull;
		Datum		d;

		relid = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull)
		{
			MemoryContext spictx = MemoryContextSwitchTo(callerctx);

			row = (HeapTupleHeader) PG_DETOAST_DATUM_COPY(d);
			MemoryContextSwitchTo(spictx);
		}
	}
	SetUserIdAndSecContext(save_userid, save_sec_context);
	SPI_finish();
	if (row == NULL || pg_class_aclcheck(relid, save_userid, ACL_SELECT) != ACLCHECK_OK ||
		VARSIZE(row) < SizeofHeapTupleHeader ||
		get_typtype(HeapTupleHeaderGetTypeId(row)) != TYPTYPE_COMPOSITE)
		PG_RETURN_NULL();
	json = DirectFunctionCall1(row_to_json, PointerGetDatum(row));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
										CStringGetDatum(TextDatumGetCString(json))));
}
