/*-------------------------------------------------------------------------
 *
 * apply_batch.c
 *	  Bulk apply: consecutive remote inserts into one table written as
 *	  COPY writes them.
 *
 * NOTES
 *	  This file owns the insert batch of the apply worker, and the rule
 *	  by which a write that keeps a row's unique values probes no unique
 *	  index for them (cr_unique_values_kept).  An insert that
 *	  apply_change.c has read and found a candidate (the table has no row
 *	  trigger that fires in the worker, no deferred or exclusion index, no
 *	  stored generated column, is no partition, and the row is newer than
 *	  the table's truncate horizon) is not decided at once: its row is
 *	  copied into a buffer slot of the table's batch, and the batch is
 *	  written when it holds 1,000 rows or 64 kB (COPY's limits), when a row
 *	  of another table or a change that is not such an insert comes, when
 *	  a MESSAGE or RELATION arrives, and before the local transaction of
 *	  the group commits: a batch may hold the rows of several remote
 *	  transactions of a group.  Each row keeps the remote transaction it
 *	  belongs to, and an error while a row is written counts against that
 *	  transaction (cr_batch_failing, read by apply_worker.c), which after
 *	  repeated failures is applied change by change, without batches.
 *
 *	  Writing a batch decides each of its rows exactly as the row-at-a-time
 *	  path would, in the order they came: the rows go into the heap with
 *	  one table_multi_insert (one WAL record per page), then each row's
 *	  index entries are inserted in order with the unique checks in
 *	  partial mode, which report a row whose key or secondary unique value
 *	  another row here holds (or may hold: a writer in progress) instead of
 *	  raising an error; then the tombstones of all the rows are read with
 *	  one fresh snapshot and one index scan (none per row if the table has
 *	  no tombstone at all).  The first row that had such a report, or
 *	  whose key has a tombstone (whether the insert had seen that delete
 *	  is the decision's: seen.c), is taken out
 *	  again with the rest of its run (deleted in this transaction, before
 *	  anyone can see them), applied the usual way (cr_apply_insert_again:
 *	  primary key lookup, decision, collisions), and the rows after it form
 *	  the next run: of one row, doubling with every run that goes in
 *	  whole.  A row with no report and no tombstone is exactly the
 *	  case in which the usual way finds no local row, no collision, decides
 *	  no conflict and inserts it.
 *
 *	  The tombstones are read after the index entries are in: a local
 *	  delete of the same key that committed before then is seen by the
 *	  snapshot; one still in progress leaves its row where the unique
 *	  check reports it; one that starts later waits for this transaction.
 *
 *	  Batching is used only outside the change-by-change (careful) mode,
 *	  which applies each change in a subtransaction.  Exactly-once is
 *	  untouched: every batched row is written in the local transaction of
 *	  its remote transaction's group, before that transaction commits with
 *	  the origin's progress.
 *
 *	  Memory: the buffer slots belong to the table's executor state
 *	  (CrApplyTransactionContext, until the group commits); the keys read
 *	  while writing a batch live in the batch's own context, reset after
 *	  each write.
 *
 * IDENTIFICATION
 *	  src/apply_batch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlogdefs.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "apply_internal.h"
#include "run_as.h"
#include "tombstone.h"

/* COPY's limits for one buffer (copyfrom.c) */
#define BATCH_MAX_ROWS	1000
#define BATCH_MAX_BYTES	65535

/* the buffered inserts of one table in the open local transaction */
typedef struct ApplyBatch
{
	ApplyRel   *ar;
	bool		eligible;		/* the table can take batched inserts */
	int			nrows;			/* rows buffered */
	int			nslots;			/* buffer slots made so far */
	Size		bytes;			/* their tuples' size */
	/* made only for a table that can batch: */
	TupleTableSlot **slots;		/* [BATCH_MAX_ROWS] */
	CrIncoming *incoming;		/* [BATCH_MAX_ROWS] */
	XLogRecPtr *transactions;	/* [BATCH_MAX_ROWS]: of each row */
	int64	   *tombstones;		/* [BATCH_MAX_ROWS] */
	MemoryContext cxt;			/* the keys read, reset after each write */
} ApplyBatch;

/* set by the stream loop around an insert that may be batched */
bool		cr_batch_allowed = false;

/*
 * The remote transaction (its final LSN) that the rows taken now belong
 * to, set by the stream loop at BEGIN; and, while a batch is written, the
 * transaction of the row being written, which a failure counts against
 * (InvalidXLogRecPtr otherwise).
 */
XLogRecPtr	cr_batch_transaction = InvalidXLogRecPtr;
XLogRecPtr	cr_batch_failing = InvalidXLogRecPtr;

/* rows written through batches by this worker, and of them rerun */
uint64		cr_batched_rows = 0;
uint64		cr_batch_reruns = 0;

/* the executor state whose batch holds rows, or NULL */
static ApplyExec *pending = NULL;

/*
 * Whether rows of ex's table can be written as a batch: what
 * ExecSimpleRelationInsert would do besides the heap and index insertion
 * (row triggers that fire with session_replication_role = replica, stored
 * generated columns, a partition's constraint) is absent, and every index
 * checks its constraint at once, without exclusion operators, so that the
 * partial unique check reports every collision.
 */
static bool
batch_eligible(ApplyExec *ex)
{
	Relation	rel = ex->rel;
	TriggerDesc *trigdesc = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition)
		return false;
	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		return false;
	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *trigger = &trigdesc->triggers[i];

		if (TRIGGER_FOR_ROW(trigger->tgtype) && TRIGGER_FOR_INSERT(trigger->tgtype) &&
			(trigger->tgenabled == TRIGGER_FIRES_ALWAYS ||
			 trigger->tgenabled == TRIGGER_FIRES_ON_REPLICA))
			return false;
	}
	for (int i = 0; i < ex->rri->ri_NumIndices; i++)
	{
		Relation	index = ex->rri->ri_IndexRelationDescs[i];

		if (!index->rd_index->indimmediate ||
			ex->rri->ri_IndexRelationInfo[i]->ii_ExclusionOps != NULL)
			return false;
	}
	return true;
}

/*
 * ex's batch, made at the table's first insert in the local transaction:
 * for a table that cannot batch, only the answer.
 */
static ApplyBatch *
batch_of(ApplyExec *ex, ApplyRel *ar)
{
	if (ex->batch == NULL)
	{
		MemoryContext oldctx = MemoryContextSwitchTo(CrApplyTransactionContext);
		ApplyBatch *b = palloc0(sizeof(ApplyBatch));

		b->ar = ar;
		b->eligible = batch_eligible(ex);
		if (b->eligible)
		{
			b->slots = palloc(sizeof(TupleTableSlot *) * BATCH_MAX_ROWS);
			b->incoming = palloc(sizeof(CrIncoming) * BATCH_MAX_ROWS);
			b->transactions = palloc(sizeof(XLogRecPtr) * BATCH_MAX_ROWS);
			b->tombstones = palloc(sizeof(int64) * BATCH_MAX_ROWS);
			b->cxt = AllocSetContextCreate(CrApplyTransactionContext,
										   "cosmosrep apply batch",
										   ALLOCSET_DEFAULT_SIZES);
		}
		ex->batch = b;
		MemoryContextSwitchTo(oldctx);
	}
	return ex->batch;
}

/*
 * Take row, a remote insert written by incoming into ex's table, into the
 * table's batch.  Called by the insert handler, as the table's owner with
 * the change's snapshot, after reading the row and before deciding it.
 * Returns false if the row must go the usual way now: batching is off
 * (careful mode, or a change that is not a plain insert), the table
 * cannot batch, or its truncate horizon is not older than the row; any
 * batch is written first then, so that the usual way sees its rows.
 */
bool
cr_batch_add(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
			 const CrIncoming *incoming)
{
	ApplyBatch *b;
	TupleTableSlot *slot;

	if (pending != NULL && pending != ex)
		cr_batch_flush();
	if (!cr_batch_allowed || incoming->kind != CR_CHANGE_INSERT ||
		incoming->version <= ex->horizon.version || !batch_of(ex, ar)->eligible)
	{
		cr_batch_flush();
		return false;
	}
	b = ex->batch;

	/* NOT NULL and CHECK constraints, as ExecSimpleRelationInsert checks */
	if (ex->rel->rd_att->constr)
		ExecConstraints(ex->rri, row, ex->estate);

	if (b->nrows == b->nslots)
	{
		/* the slot, and the rows it will hold, live as long as the table's state */
		MemoryContext oldctx = MemoryContextSwitchTo(ex->estate->es_query_cxt);

		b->slots[b->nslots++] = table_slot_create(ex->rel, &ex->estate->es_tupleTable);
		MemoryContextSwitchTo(oldctx);
	}
	slot = b->slots[b->nrows];
	ExecCopySlot(slot, row);
	b->bytes += ExecFetchSlotHeapTuple(slot, false, NULL)->t_len;
	b->transactions[b->nrows] = cr_batch_transaction;
	b->incoming[b->nrows++] = *incoming;
	pending = ex;
	if (b->nrows == BATCH_MAX_ROWS || b->bytes >= BATCH_MAX_BYTES)
		cr_batch_flush();
	return true;
}

/*
 * Write the rows first .. end - 1 of b, a run: into the heap together,
 * then their index entries one by one in order, then check their
 * tombstones.  Returns end if all went in; else the first row that could
 * not go in as it is has been taken out with the rows of the run after
 * it, applied the usual way, and the row after it is returned.
 */
static int
write_run(ApplyExec *ex, ApplyBatch *b, int first, int end)
{
	int			stop = -1;
	int			checked;

	cr_batch_failing = b->transactions[first];
	table_multi_insert(ex->rel, &b->slots[first], end - first,
					   GetCurrentCommandId(true), 0, NULL);
	for (int i = first; i < end && stop < 0; i++)
	{
		List	   *collisions;

		/* an index expression's error is the row's */
		cr_batch_failing = b->transactions[i];
		collisions = ExecInsertIndexTuples(ex->rri, b->slots[i], ex->estate,
										   false, true, NULL, NIL);

		if (collisions != NIL)
			stop = i;
		list_free(collisions);
		ResetPerTupleExprContext(ex->estate);
	}

	/* the tombstones of the rows before it, whose index entries went in */
	checked = (stop < 0 ? end : stop) - first;
	if (checked > 0)
	{
		MemoryContext oldctx = MemoryContextSwitchTo(b->cxt);

		cr_tombstone_lookup_rows(ex->rel, &b->slots[first], checked, b->tombstones);
		for (int i = 0; i < checked; i++)
			if (b->tombstones[i] != 0)
			{
				stop = first + i;
				break;
			}
		MemoryContextSwitchTo(oldctx);
		MemoryContextReset(b->cxt);
	}
	if (stop < 0)
		return end;
	cr_batch_failing = b->transactions[stop];

	/* take out that row and the rest of the run, then apply it the usual way */
	CommandCounterIncrement();
	for (int i = stop; i < end; i++)
		simple_table_tuple_delete(ex->rel, &b->slots[i]->tts_tid, GetActiveSnapshot());
	CommandCounterIncrement();
	ExecCopySlot(ex->keyslot, b->slots[stop]);
	cr_apply_insert_again(b->ar, ex->keyslot, &b->incoming[stop]);
	cr_batch_reruns++;
	return stop + 1;
}

/*
 * Write the open batch, if one holds rows.  Called before any change or
 * message that is not a batched insert of the same table, before the
 * group commits, and before the tables close (cr_exec_close_all).  Runs as the table's owner (index expressions
 * and predicates, the constraints a row applied the usual way checks)
 * with a snapshot of its own, and makes the rows visible to what follows.
 */
void
cr_batch_flush(void)
{
	ApplyExec  *ex = pending;
	ApplyBatch *b;
	CrUserContext user;
	bool		in_remote = cr_in_remote_transaction;
	int			next = 0;
	int			run = BATCH_MAX_ROWS;

	if (ex == NULL)
		return;
	pending = NULL;
	b = ex->batch;
	if (b->nrows == 0)
		return;

	PushActiveSnapshot(GetTransactionSnapshot());
	cr_switch_to_owner(ex->owner, &user);
	/* a row applied the usual way is a change of its remote transaction */
	cr_in_remote_transaction = true;
	/*
	 * The whole batch is one run.  After a row that had to go the usual
	 * way, the next run is one row, and each run that goes in whole doubles
	 * the next: a batch in which every row meets a local row costs each row
	 * one insertion and removal more than the usual way, never a removal of
	 * the rest of the batch per row.
	 */
	while (next < b->nrows)
	{
		int			end = Min(next + run, b->nrows);
		int			done = write_run(ex, b, next, end);

		run = done == end ? run * 2 : 1;
		next = done;
	}
	cr_batch_failing = InvalidXLogRecPtr;
	cr_in_remote_transaction = in_remote;
	cr_restore_user(&user);
	PopActiveSnapshot();
	CommandCounterIncrement();

	elog(DEBUG1, "cosmosrep: applied a batch of %d inserts into \"%s\" (" UINT64_FORMAT " batched rows, " UINT64_FORMAT " of them applied one by one, since the worker started)",
		 b->nrows, RelationGetRelationName(ex->rel),
		 cr_batched_rows + b->nrows, cr_batch_reruns);
	cr_batched_rows += b->nrows;
	for (int i = 0; i < b->nrows; i++)
		ExecClearTuple(b->slots[i]);
	b->nrows = 0;
	b->bytes = 0;
}


/*
 * Whether row, about to replace self (the local row of its key), holds
 * the same values as self in the columns of ex's secondary unique index
 * number unique (ex->unique_indexes): then no other row can hold them,
 * since self does, and settle_collisions need not probe that index.  An
 * update that leaves a unique column alone thus probes nothing for it.
 */
bool
cr_unique_values_kept(ApplyExec *ex, int unique, TupleTableSlot *row,
					  TupleTableSlot *self)
{
	TupleDesc	desc = RelationGetDescr(ex->rel);
	IndexInfo  *info = NULL;

	for (int i = 0; i < ex->rri->ri_NumIndices && info == NULL; i++)
		if (RelationGetRelid(ex->rri->ri_IndexRelationDescs[i]) == ex->unique_indexes[unique])
			info = ex->rri->ri_IndexRelationInfo[i];
	if (info == NULL)
		return false;
	slot_getallattrs(row);
	slot_getallattrs(self);
	for (int k = 0; k < info->ii_NumIndexKeyAttrs; k++)
	{
		int			att = info->ii_IndexAttrNumbers[k] - 1;
		Form_pg_attribute attr = TupleDescAttr(desc, att);

		if (row->tts_isnull[att] != self->tts_isnull[att])
			return false;
		if (!row->tts_isnull[att] &&
			!datum_image_eq(row->tts_values[att], self->tts_values[att],
							attr->attbyval, attr->attlen))
			return false;
	}
	return true;
}
