/*-------------------------------------------------------------------------
 *
 * conflict_log.c
 *	  The record of conflicts in cosmosrep.conflict: written by apply, read
 *	  through cosmosrep.conflicts, purged after their retention.
 *
 * NOTES
 *	  Each region records the conflicts it detects, in the transaction
 *	  that applies the change: they are collected while the group's
 *	  changes are applied and inserted before it commits, in batches as
 *	  COPY does (no SQL, no per-row parse or plan), with the rows as
 *	  composite datums (a copy of the tuple, no work per column), which
 *	  cosmosrep.conflicts decodes to jsonb when it is read.  The history
 *	  table has no CHECK constraints: only this file and feed.c write it.
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

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
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

/* in TopTransactionContext; the apply worker flushes before it commits */
static List *pending_conflicts = NIL;

/* how many of them are feed entries (pending, error) */
static int	pending_feed_entries = 0;

/* rows written to cosmosrep.conflict at once (table_multi_insert) */
#define FLUSH_BATCH 100

static SPIPlanPtr row_plans[3];

PG_FUNCTION_INFO_V1(cosmosrep_conflict_row);

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
 * where it failed.  Kept in the transaction's memory and written, with
 * the others of the transaction, by cr_flush_conflicts before it commits.
 */
void
cr_record_conflict(Relation rel, const char *policy, const CrIncoming *incoming,
				   const CrLocalState *local, const CrDecision *decision,
				   TupleTableSlot *local_row, TupleTableSlot *remote_row,
				   TupleTableSlot *winner_row)
{
	MemoryContext oldctx = MemoryContextSwitchTo(TopTransactionContext);
	PendingConflict *c = palloc(sizeof(PendingConflict));

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
 * WAL record and one buffer lock per page rather than per row.  The rows
 * are written by this file only, so there are no constraints to check.
 */
static void
insert_batch(ResultRelInfo *rri, EState *estate, TupleTableSlot **slots, int n)
{
	table_multi_insert(rri->ri_RelationDesc, slots, n, estate->es_output_cid, 0, NULL);
	for (int i = 0; i < n; i++)
	{
#if PG_VERSION_NUM >= 160000
		(void) ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL, false);
#else
		(void) ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL);
#endif
		ResetPerTupleExprContext(estate);
	}
}

/*
 * Write the conflicts recorded in this transaction.  Called by apply
 * before each commit (and before DDL messages).
 */
void
cr_flush_conflicts(void)
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slots[FLUSH_BATCH];
	int			nslots = 0;
	Oid			seqid;
	Datum		detected_at;
	Datum		local_region;
	Datum		kinds[lengthof(conflict_kind_names)] = {0};
	Datum		resolutions[lengthof(cr_resolution_names)] = {0};
	const char *last_policy = NULL;
	Datum		by_policy = CStringGetTextDatum("policy");
	Datum		policy = (Datum) 0;
	ListCell   *lc;

	if (pending_conflicts == NIL)
		return;
	/* called at commit, where no snapshot is set for the statements here */
	PushActiveSnapshot(GetTransactionSnapshot());
	local_region = Int16GetDatum(cr_local_region_id(false));
	seqid = get_relname_relid("conflict_conflict_id_seq", cr_schema_oid());
	detected_at = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	rel = table_open(get_relname_relid("conflict", cr_schema_oid()), RowExclusiveLock);
	if (RelationGetDescr(rel)->natts != Natts_conflict || !OidIsValid(seqid))
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
		slots[i] = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsVirtual);

	foreach(lc, pending_conflicts)
	{
		PendingConflict *c = lfirst(lc);
		TupleTableSlot *slot = slots[nslots++];
		Datum	   *values = slot->tts_values;
		bool	   *nulls = slot->tts_isnull;
		bool		resolved = c->resolution != CR_RESOLUTION_PENDING &&
			c->resolution != CR_RESOLUTION_ERROR;

		ExecClearTuple(slot);
		memset(nulls, false, sizeof(bool) * Natts_conflict);
		if (kinds[c->kind] == (Datum) 0)
			kinds[c->kind] = CStringGetTextDatum(conflict_kind_names[c->kind]);
		if (resolutions[c->resolution] == (Datum) 0)
			resolutions[c->resolution] = CStringGetTextDatum(cr_resolution_names[c->resolution]);
		values[Anum_conflict_id - 1] = Int64GetDatum(nextval_internal(seqid, false));
		values[Anum_conflict_detected_at - 1] = detected_at;
		values[Anum_conflict_relid - 1] = ObjectIdGetDatum(c->relid);
		values[Anum_conflict_key - 1] = PointerGetDatum(c->key);
		nulls[Anum_conflict_key - 1] = c->key == NULL;
		values[Anum_conflict_kind - 1] = kinds[c->kind];
		values[Anum_conflict_local_region - 1] = local_region;
		values[Anum_conflict_remote_region - 1] = Int16GetDatum(c->remote_region);
		values[Anum_conflict_local_version - 1] = Int64GetDatum(c->local_version);
		values[Anum_conflict_remote_version - 1] = Int64GetDatum(c->remote_version);
		values[Anum_conflict_local_row - 1] = c->local_row;
		nulls[Anum_conflict_local_row - 1] = c->local_row == (Datum) 0;
		values[Anum_conflict_remote_row - 1] = c->remote_row;
		nulls[Anum_conflict_remote_row - 1] = c->remote_row == (Datum) 0;
		values[Anum_conflict_winner_row - 1] = c->winner_row;
		nulls[Anum_conflict_winner_row - 1] = c->winner_row == (Datum) 0;
		if (last_policy == NULL || strcmp(c->policy, last_policy) != 0)
			policy = CStringGetTextDatum(c->policy);
		last_policy = c->policy;
		values[Anum_conflict_policy - 1] = policy;
		values[Anum_conflict_resolution - 1] = resolutions[c->resolution];
		nulls[Anum_conflict_error - 1] = c->error == NULL;
		if (c->error)
			values[Anum_conflict_error - 1] = CStringGetTextDatum(c->error);
		values[Anum_conflict_resolved_at - 1] = detected_at;
		nulls[Anum_conflict_resolved_at - 1] = !resolved;
		values[Anum_conflict_resolved_by - 1] = by_policy;
		nulls[Anum_conflict_resolved_by - 1] = !resolved;
		ExecStoreVirtualTuple(slot);
		if (nslots == FLUSH_BATCH || lnext(pending_conflicts, lc) == NULL)
		{
			insert_batch(rri, estate, slots, nslots);
			nslots = 0;
		}
	}

	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	PopActiveSnapshot();
	CommandCounterIncrement();
	list_free(pending_conflicts);
	pending_conflicts = NIL;
	pending_feed_entries = 0;
}

/* forget the conflicts recorded and not yet written (a change undone) */
void
cr_conflicts_forget(void)
{
	list_free(pending_conflicts);
	pending_conflicts = NIL;
	pending_feed_entries = 0;
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
							" WHERE resolved_at OPERATOR(pg_catalog.<)"
							" (pg_catalog.now() OPERATOR(pg_catalog.-)"
							"  pg_catalog.make_interval(secs => $1))",
							1, argtypes, values, NULL, SPI_OK_DELETE);
}

/*
 * The composite datum of one of the rows of conflict_id ("local",
 * "remote" or "winner"), copied into the caller's context, and the
 * conflict's table in *relid; NULL if there is none.  Read as the
 * bootstrap superuser: callers check the caller's privileges.
 */
HeapTupleHeader
cr_conflict_row_datum(int64 conflict_id, const char *which, Oid *relid)
{
	static const char *const rows[3] = {"local", "remote", "winner"};
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(conflict_id)};
	MemoryContext callerctx = CurrentMemoryContext;
	HeapTupleHeader row = NULL;
	Oid			save_userid;
	int			save_sec_context;
	int			i;

	for (i = 0; i < 3; i++)
		if (strcmp(which, rows[i]) == 0)
			break;
	if (i == 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown conflict row \"%s\"", which),
				 errhint("The rows of a conflict are local, remote and winner.")));

	*relid = InvalidOid;
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SPI_connect();
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (row_plans[i] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(psprintf("SELECT relid, %s_row FROM cosmosrep.conflict"
												" WHERE conflict_id OPERATOR(pg_catalog.=) $1",
												rows[i]), 1, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		row_plans[i] = plan;
	}
	if (SPI_execute_plan(row_plans[i], values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		bool		isnull;
		Datum		d;

		*relid = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
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
	if (row != NULL &&
		(VARSIZE(row) < SizeofHeapTupleHeader ||
		 get_typtype(HeapTupleHeaderGetTypeId(row)) != TYPTYPE_COMPOSITE))
		row = NULL;
	return row;
}

/*
 * cosmosrep.conflict_row(conflict_id, which): the local, remote or winner
 * row of a recorded conflict as jsonb, decoded from the composite datum
 * stored when it was detected (with the table's current row type: columns
 * added since read as null), or NULL.  Takes an id, not the stored bytes,
 * so that no caller can make it decode bytes of their own, and answers
 * only a user who may read the table.
 */
Datum
cosmosrep_conflict_row(PG_FUNCTION_ARGS)
{
	Oid			relid;
	HeapTupleHeader row = cr_conflict_row_datum(PG_GETARG_INT64(0),
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
	Oid			save_userid;
	int			save_sec_context;
	ArrayType  *array;

	/* entries this transaction recorded count too, whatever the grouping */
	if (pending_feed_entries > 0)
		cr_flush_conflicts();

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SPI_connect();
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT remote_row FROM cosmosrep.conflict"
						   " WHERE relid OPERATOR(pg_catalog.=) $1"
						   " AND key OPERATOR(pg_catalog.=) $2"
						   " AND resolved_at IS NULL AND remote_row IS NOT NULL"
						   " ORDER BY conflict_id", 2, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT)
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
	SetUserIdAndSecContext(save_userid, save_sec_context);
	SPI_finish();
	array = nrows > 0 ?
		construct_array(rows, nrows, rowtype, -1, false, TYPALIGN_DOUBLE) :
		construct_empty_array(rowtype);
	return PointerGetDatum(array);
}
