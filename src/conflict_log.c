/*-------------------------------------------------------------------------
 *
 * conflict_log.c
 *	  The record of conflicts in cosmosrep.conflict: written by apply, read
 *	  through cosmosrep.conflicts, purged after their retention.
 *
 * NOTES
 *	  Each region records the conflicts it detects, in the transaction
 *	  that applies the change: they are collected while the group's
 *	  changes are applied and inserted a thousand at a time between
 *	  changes and the rest before it commits, in batches as COPY does (no
 *	  SQL, no per-row parse or plan), with the rows as composite datums (a
 *	  copy of the tuple, no work per column), which cosmosrep.conflicts
 *	  decodes to jsonb when it is read, fetching each entry by its ctid.
 *	  The history table has no CHECK constraints and no btree over every
 *	  entry: only this file and feed.c write it.
 *
 *	  Entries that a policy resolved at once carry resolved_at; pending
 *	  and error entries (the feed) carry none until the application
 *	  resolves them (feed.c), and only resolved ones are purged.
 *
 * IDENTIFICATION
 *	  src/conflict_log.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "conflict.h"
#include "cosmosrep.h"
#include "hlc.h"

/* the columns of cosmosrep.conflict */
#define Natts_conflict					17
#define Anum_conflict_id				1
#define Anum_conflict_detected_at		2
#define Anum_conflict_relid				3
#define Anum_conflict_key				4
#define Anum_conflict_kind				5
#define Anum_conflict_local_region		6
#define Anum_conflict_remote_region		7
#define Anum_conflict_local_version		8
#define Anum_conflict_remote_version	9
#define Anum_conflict_local_row			10
#define Anum_conflict_remote_row		11
#define Anum_conflict_policy			12
#define Anum_conflict_resolution		13
#define Anum_conflict_winner_row		14
#define Anum_conflict_error				15
#define Anum_conflict_resolved_at		16
#define Anum_conflict_resolved_by		17

/* names of the conflict kinds, as cosmosrep.conflicts shows them */
static const char *const conflict_kind_names[] = {
	[CR_CONFLICT_NONE] = "none",
	[CR_CONFLICT_INSERT_EXISTS] = "insert_exists",
	[CR_CONFLICT_INSERT_DELETED] = "insert_deleted",
	[CR_CONFLICT_UPDATE_UPDATE] = "update_update",
	[CR_CONFLICT_UPDATE_DELETED] = "update_deleted",
	[CR_CONFLICT_DELETE_UPDATED] = "delete_updated",
	[CR_CONFLICT_UNIQUE] = "unique_collision",
	[CR_CONFLICT_APPLY_ERROR] = "apply_error",
};

const char *const cr_resolution_names[] = {
	[CR_RESOLUTION_REMOTE_APPLIED] = "remote_applied",
	[CR_RESOLUTION_LOCAL_KEPT] = "local_kept",
	[CR_RESOLUTION_MERGED] = "merged",
	[CR_RESOLUTION_PENDING] = "pending",
	[CR_RESOLUTION_ERROR] = "error",
};

/* a conflict detected in the open transaction, not yet written */
typedef struct PendingConflict
{
	Oid			relid;
	bytea	   *key;
	CrConflictKind kind;
	int16		remote_region;
	int64		local_version;
	int64		remote_version;
	Datum		local_row;		/* composite datums, or 0 */
	Datum		remote_row;
	Datum		winner_row;
	const char *policy;
	CrResolution resolution;
	char	   *error;
} PendingConflict;

/*
 * The conflicts recorded and not yet written, in pending_cxt, which each
 * write empties: the apply worker writes them between changes once
 * FLUSH_AT wait (so that a transaction that conflicts on every row keeps
 * a bounded, reused amount of memory) and before it commits.
 */
static MemoryContext pending_cxt = NULL;
static List *pending_conflicts = NIL;

/* how many of them are feed entries (pending, error) */
static int	pending_feed_entries = 0;

#define FLUSH_AT 1000

/* rows written to cosmosrep.conflict at once (table_multi_insert) */
#define FLUSH_BATCH 100

PG_FUNCTION_INFO_V1(cosmosrep_conflict_row_at);

/*
 * A copy of slot's row as a composite datum in the current context, or 0:
 * one copy, where ExecFetchSlotHeapTupleDatum would make two or three.
 * A tuple formed from the values is a composite datum already (unless it
 * points to TOASTed values, which are fetched into it).
 */
static Datum
row_datum(TupleTableSlot *slot)
{
	TupleDesc	desc;
	bool		shouldFree;

	if (slot == NULL)
		return (Datum) 0;
	desc = slot->tts_tupleDescriptor;
	if (TTS_IS_VIRTUAL(slot))
	{
		slot_getallattrs(slot);
		return HeapTupleHeaderGetDatum(heap_form_tuple(desc, slot->tts_values,
													   slot->tts_isnull)->t_data);
	}
	return heap_copy_tuple_as_datum(ExecFetchSlotHeapTuple(slot, false, &shouldFree), desc);
}

/*
 * Record a conflict of rel detected here, with its key, the two rows
 * (NULL where there is none: a tombstone, an incoming delete), how the
 * policy resolved it, the row it wrote where it merged, and the error
 * where it failed.  Kept in memory and written, with the others of the
 * transaction, by cr_flush_conflicts before it commits or once enough
 * wait (cr_flush_some_conflicts).
 */
void
cr_record_conflict(Relation rel, const char *policy, const CrIncoming *incoming,
				   const CrLocalState *local, const CrDecision *decision,
				   TupleTableSlot *local_row, TupleTableSlot *remote_row,
				   TupleTableSlot *winner_row)
{
	MemoryContext oldctx;
	PendingConflict *c;

	if (pending_cxt == NULL)
		pending_cxt = AllocSetContextCreate(TopMemoryContext, "cosmosrep conflicts",
											ALLOCSET_DEFAULT_SIZES);
	oldctx = MemoryContextSwitchTo(pending_cxt);
	c = palloc(sizeof(PendingConflict));
	c->relid = RelationGetRelid(rel);
	c->key = decision->key ? DatumGetByteaPCopy(PointerGetDatum(decision->key)) : NULL;
	c->kind = decision->kind;
	c->remote_region = cr_version_region(incoming->version);
	c->local_version = local->version;
	c->remote_version = incoming->version;
	c->local_row = row_datum(local_row);
	c->remote_row = row_datum(remote_row);
	c->winner_row = row_datum(winner_row);
	c->policy = pstrdup(policy);
	c->resolution = decision->resolution;
	c->error = decision->error ? pstrdup(decision->error) : NULL;
	pending_conflicts = lappend(pending_conflicts, c);
	if (c->resolution == CR_RESOLUTION_PENDING || c->resolution == CR_RESOLUTION_ERROR)
		pending_feed_entries++;
	MemoryContextSwitchTo(oldctx);
}

/*
 * Insert the rows in slots, and their index entries, as COPY does: one
 * WAL record and one buffer lock per page rather than per row, the page
 * kept pinned from one batch to the next (and, from PostgreSQL 16, the
 * table extended by several pages at once).  The rows are written by
 * this file only, so there are no constraints to check.
 */
static void
insert_batch(ResultRelInfo *rri, EState *estate, BulkInsertState bistate,
			 TupleTableSlot **slots, int n)
{
	table_multi_insert(rri->ri_RelationDesc, slots, n, estate->es_output_cid, 0, bistate);
	for (int i = 0; i < n; i++)
	{
#if PG_VERSION_NUM >= 160000
		(void) ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL, false);
#else
		(void) ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL);
#endif
		ExecClearTuple(slots[i]);
		ResetPerTupleExprContext(estate);
	}
}

/*
 * Write the conflicts recorded in this transaction.  Called by apply
 * before each commit, and wherever what it recorded must be in the
 * table (before DDL, a resolved message, a subtransaction).
 */
void
cr_flush_conflicts(void)
{
	Relation	rel;
	TupleDesc	desc;
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertState bistate;
	TupleTableSlot *slots[FLUSH_BATCH];
	int			nslots = 0;
	Oid			seqid;
	Datum		values[Natts_conflict];
	bool		nulls[Natts_conflict];
	Datum		kinds[lengthof(conflict_kind_names)] = {0};
	Datum		resolutions[lengthof(cr_resolution_names)] = {0};
	const char *last_policy = NULL;
	MemoryContext oldctx;
	ListCell   *lc;

	if (pending_conflicts == NIL)
		return;
	/* called at commit, where no snapshot is set for the statements here */
	PushActiveSnapshot(GetTransactionSnapshot());
	oldctx = MemoryContextSwitchTo(pending_cxt);
	seqid = get_relname_relid("conflict_conflict_id_seq", cr_schema_oid());
	rel = table_open(get_relname_relid("conflict", cr_schema_oid()), RowExclusiveLock);
	desc = RelationGetDescr(rel);
	if (desc->natts != Natts_conflict || !OidIsValid(seqid))
		elog(ERROR, "cosmosrep.conflict does not have the columns of this version of cosmosrep");
	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);

		rte->rtekind = RTE_RELATION;
		rte->relid = RelationGetRelid(rel);
		rte->relkind = rel->rd_rel->relkind;
		rte->rellockmode = RowExclusiveLock;
		ExecInitRangeTable(estate, list_make1(rte));
	}
	ExecOpenIndices(rri, false);
	estate->es_output_cid = GetCurrentCommandId(true);
	for (int i = 0; i < FLUSH_BATCH; i++)
		slots[i] = ExecInitExtraTupleSlot(estate, desc, &TTSOpsHeapTuple);
	bistate = GetBulkInsertState();

	memset(nulls, false, sizeof(nulls));
	values[Anum_conflict_detected_at - 1] =
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[Anum_conflict_local_region - 1] = Int16GetDatum(cr_local_region_id(false));
	values[Anum_conflict_resolved_by - 1] = CStringGetTextDatum("policy");
	foreach(lc, pending_conflicts)
	{
		PendingConflict *c = lfirst(lc);
		bool		resolved = c->resolution != CR_RESOLUTION_PENDING &&
			c->resolution != CR_RESOLUTION_ERROR;

		if (kinds[c->kind] == (Datum) 0)
			kinds[c->kind] = CStringGetTextDatum(conflict_kind_names[c->kind]);
		if (resolutions[c->resolution] == (Datum) 0)
			resolutions[c->resolution] = CStringGetTextDatum(cr_resolution_names[c->resolution]);
		if (last_policy == NULL || strcmp(c->policy, last_policy) != 0)
			values[Anum_conflict_policy - 1] = CStringGetTextDatum(c->policy);
		last_policy = c->policy;
		values[Anum_conflict_id - 1] = Int64GetDatum(nextval_internal(seqid, false));
		values[Anum_conflict_relid - 1] = ObjectIdGetDatum(c->relid);
		values[Anum_conflict_key - 1] = PointerGetDatum(c->key);
		nulls[Anum_conflict_key - 1] = c->key == NULL;
		values[Anum_conflict_kind - 1] = kinds[c->kind];
		values[Anum_conflict_remote_region - 1] = Int16GetDatum(c->remote_region);
		values[Anum_conflict_local_version - 1] = Int64GetDatum(c->local_version);
		values[Anum_conflict_remote_version - 1] = Int64GetDatum(c->remote_version);
		values[Anum_conflict_local_row - 1] = c->local_row;
		nulls[Anum_conflict_local_row - 1] = c->local_row == (Datum) 0;
		values[Anum_conflict_remote_row - 1] = c->remote_row;
		nulls[Anum_conflict_remote_row - 1] = c->remote_row == (Datum) 0;
		values[Anum_conflict_winner_row - 1] = c->winner_row;
		nulls[Anum_conflict_winner_row - 1] = c->winner_row == (Datum) 0;
		values[Anum_conflict_resolution - 1] = resolutions[c->resolution];
		values[Anum_conflict_error - 1] = c->error ? CStringGetTextDatum(c->error) : (Datum) 0;
		nulls[Anum_conflict_error - 1] = c->error == NULL;
		values[Anum_conflict_resolved_at - 1] = values[Anum_conflict_detected_at - 1];
		nulls[Anum_conflict_resolved_at - 1] = !resolved;
		nulls[Anum_conflict_resolved_by - 1] = !resolved;
		/* formed once, and owned by the slot: the insert copies nothing */
		ExecStoreHeapTuple(heap_form_tuple(desc, values, nulls), slots[nslots++], true);
		if (nslots == FLUSH_BATCH || lnext(pending_conflicts, lc) == NULL)
		{
			insert_batch(rri, estate, bistate, slots, nslots);
			nslots = 0;
		}
	}

	FreeBulkInsertState(bistate);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	MemoryContextSwitchTo(oldctx);
	PopActiveSnapshot();
	CommandCounterIncrement();
	cr_conflicts_forget();
}

/*
 * Write the conflicts recorded so far if enough of them wait; called by
 * apply between changes.
 */
void
cr_flush_some_conflicts(void)
{
	if (list_length(pending_conflicts) >= FLUSH_AT)
		cr_flush_conflicts();
}

/* forget the conflicts recorded and not yet written (a change undone) */
void
cr_conflicts_forget(void)
{
	pending_conflicts = NIL;
	pending_feed_entries = 0;
	if (pending_cxt != NULL)
		MemoryContextReset(pending_cxt);
}

/*
 * Drop the resolved conflicts older than cosmosrep.conflict_retention;
 * pending and error entries (the feed) stay until they are resolved.  The
 * condition on detected_at lets the BRIN index skip the recent part of
 * the history: an entry is resolved when it is detected or later (an
 * entry that a transaction older than its detection resolved goes at
 * the next purge after its detection is old enough).
 */
void
cr_conflict_purge_history(void)
{
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {
		TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTransactionStartTimestamp(),
														-(int64) cr_conflict_retention_s * 1000))
	};

	(void) cr_catalog_write(NULL,
							"DELETE FROM cosmosrep.conflict"
							" WHERE resolved_at OPERATOR(pg_catalog.<) $1"
							" AND detected_at OPERATOR(pg_catalog.<) $1",
							1, argtypes, values, NULL, SPI_OK_DELETE);
}

/*
 * The composite datum of one of the rows ("local", "remote" or "winner")
 * of the conflict entry at tid, as the query's snapshot sees it, copied
 * into the current context, and the conflict's table in *relid; NULL if
 * there is none.  Read without privilege checks: the caller checks the
 * user's.
 */
static HeapTupleHeader
conflict_row_datum(ItemPointer tid, const char *which, Oid *relid)
{
	static const char *const names[3] = {"local", "remote", "winner"};
	static const AttrNumber columns[3] = {
		Anum_conflict_local_row, Anum_conflict_remote_row, Anum_conflict_winner_row
	};
	HeapTupleHeader row = NULL;
	Relation	rel;
	TupleTableSlot *slot;
	int			i;

	for (i = 0; i < 3; i++)
		if (strcmp(which, names[i]) == 0)
			break;
	if (i == 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown conflict row \"%s\"", which),
				 errhint("The rows of a conflict are local, remote and winner.")));

	*relid = InvalidOid;
	rel = table_open(get_relname_relid("conflict", cr_schema_oid()), AccessShareLock);
	if (RelationGetDescr(rel)->natts != Natts_conflict)
		elog(ERROR, "cosmosrep.conflict does not have the columns of this version of cosmosrep");
	slot = table_slot_create(rel, NULL);
	if (ItemPointerIsValid(tid) &&
		ItemPointerGetBlockNumber(tid) < RelationGetNumberOfBlocks(rel) &&
		table_tuple_fetch_row_version(rel, tid,
									  ActiveSnapshotSet() ? GetActiveSnapshot() :
									  GetTransactionSnapshot(), slot))
	{
		bool		isnull;
		Datum		d;

		*relid = DatumGetObjectId(slot_getattr(slot, Anum_conflict_relid, &isnull));
		d = slot_getattr(slot, columns[i], &isnull);
		if (!isnull)
			row = (HeapTupleHeader) PG_DETOAST_DATUM_COPY(d);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, AccessShareLock);
	if (row != NULL &&
		(VARSIZE(row) < SizeofHeapTupleHeader ||
		 get_typtype(HeapTupleHeaderGetTypeId(row)) != TYPTYPE_COMPOSITE))
		row = NULL;
	return row;
}

/*
 * cosmosrep.conflict_row(entry, which): the local, remote or winner row
 * of the conflict entry at ctid entry of cosmosrep.conflict, as jsonb,
 * decoded from the composite datum stored when it was detected (with the
 * table's current row type: columns added since read as null), or NULL.
 * cosmosrep.conflicts reads each entry's rows with it.  It takes where
 * the entry is, not its bytes, so that no caller can make it decode
 * bytes of their own, and answers only a user who may read the table.
 * (A C name of its own: the function took a conflict id before.)
 */
Datum
cosmosrep_conflict_row_at(PG_FUNCTION_ARGS)
{
	Oid			relid;
	HeapTupleHeader row = conflict_row_datum((ItemPointer) PG_GETARG_POINTER(0),
											 text_to_cstring(PG_GETARG_TEXT_PP(1)),
											 &relid);
	Datum		json;

	if (row == NULL || pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		PG_RETURN_NULL();
	json = DirectFunctionCall1(row_to_json, PointerGetDatum(row));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
										CStringGetDatum(TextDatumGetCString(json))));
}

/*
 * The remote rows of the key of relid that wait in the feed (pending and
 * error entries), oldest first, as an array of rowtype: the conflicting
 * versions a resolver is shown.  Read as the bootstrap superuser.
 */
Datum
cr_feed_rows(Oid relid, bytea *key, Oid rowtype)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {OIDOID, BYTEAOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), PointerGetDatum(key)};
	MemoryContext callerctx = CurrentMemoryContext;
	Datum	   *rows = NULL;
	int			nrows = 0;
	ArrayType  *array;

	/* entries this transaction recorded count too, whatever the grouping */
	if (pending_feed_entries > 0)
		cr_flush_conflicts();

	SPI_connect();
	if (cr_catalog_query(&plan,
						 "SELECT remote_row FROM cosmosrep.conflict"
						 " WHERE relid OPERATOR(pg_catalog.=) $1"
						 " AND key OPERATOR(pg_catalog.=) $2"
						 " AND resolved_at IS NULL AND remote_row IS NOT NULL"
						 " ORDER BY conflict_id",
						 2, argtypes, values, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read the feed of a conflict");
	if (SPI_processed > 0)
	{
		MemoryContext spictx = MemoryContextSwitchTo(callerctx);

		rows = palloc(sizeof(Datum) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
										  1, &isnull);
			HeapTupleHeader row = (HeapTupleHeader) PG_DETOAST_DATUM_COPY(d);

			if (HeapTupleHeaderGetTypeId(row) == rowtype)
				rows[nrows++] = PointerGetDatum(row);
		}
		MemoryContextSwitchTo(spictx);
	}
	SPI_finish();
	array = nrows > 0 ?
		construct_array(rows, nrows, rowtype, -1, false, TYPALIGN_DOUBLE) :
		construct_empty_array(rowtype);
	return PointerGetDatum(array);
}
