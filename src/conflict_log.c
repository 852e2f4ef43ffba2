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
 *	  A composite datum is only readable with the tuple descriptor it was
 *	  formed with, and the table's row type changes with its DDL (ALTER
 *	  COLUMN TYPE, DROP and ADD COLUMN).  So each entry also carries its
 *	  shape: a 64-bit hash of the names, types, typmods, lengths and
 *	  alignments of the attributes the rows were formed with, and cosmosrep.conflict_shape
 *	  holds each distinct shape once.  The apply worker computes a table's
 *	  shape once per relcache entry and writes it once (in the first
 *	  transaction that records a conflict of that shape, until it
 *	  commits); recording itself stores one more int8 per entry.  An entry
 *	  read when the table has another shape is decoded with a descriptor
 *	  built from its stored shape, each value output by its own type
 *	  (JSON null where that type no longer exists), so one table's DDL
 *	  never makes the history unreadable.
 *
 *	  Row-level security: cosmosrep.enable_table refuses a table with it,
 *	  but it can be enabled later.  The rows of an entry (and its key) are
 *	  shown only to a user whom row security of the table does not apply
 *	  to (check_enable_rls, as PostgreSQL's own error reports decide
 *	  whether to show a row); the resolver gets no feed rows where it
 *	  applies to the table's owner (FORCE ROW LEVEL SECURITY).
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

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "common/hashfn.h"
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
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "catalog.h"
#include "conflict.h"
#include "hlc.h"
#include "names.h"

/* settings */
int			cr_conflict_retention_s = 7 * 24 * 3600;
bool		cr_record_resolved_conflicts = true;
static int	cr_conflict_write_batch = 1000;

/* the columns of cosmosrep.conflict */
#define Natts_conflict					18
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
#define Anum_conflict_shape				18

/* names of the conflict kinds, as cosmosrep.conflicts shows them */
const char *const cr_conflict_kind_names[] = {
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
	[CR_RESOLUTION_TENTATIVE] = "tentative",
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
	int64		shape;			/* the rows' shape (cr_conflict_shape) */
	const char *policy;
	CrResolution resolution;
	char	   *error;
} PendingConflict;

/*
 * The shape of a table's rows as this backend last saw it, and whether
 * cosmosrep.conflict_shape holds it.  Cached per table in shape_cache,
 * dropped by a relcache invalidation of the table.
 */
typedef enum ShapeState
{
	SHAPE_UNKNOWN,				/* not known to be stored */
	SHAPE_QUEUED,				/* in pending_shapes, to be written */
	SHAPE_WRITTEN,				/* written by the open transaction */
	SHAPE_STORED				/* written by a committed transaction */
} ShapeState;

typedef struct ShapeEntry
{
	Oid			relid;			/* hash key */
	int64		shape;
	ShapeState	state;
} ShapeEntry;

/* a shape to write to cosmosrep.conflict_shape, in pending_cxt */
typedef struct PendingShape
{
	Oid			relid;
	int64		shape;
	TupleDesc	desc;
} PendingShape;

static HTAB *shape_cache = NULL;

/* whether some entry of shape_cache is queued or written, not stored */
static bool shapes_unsettled = false;

/*
 * The conflicts recorded and not yet written, in pending_cxt, which each
 * write empties: the apply worker writes them between changes once
 * cosmosrep.conflict_write_batch wait (so that a transaction that conflicts on every row keeps
 * a bounded, reused amount of memory) and before it commits.
 */
static MemoryContext pending_cxt = NULL;
static List *pending_conflicts = NIL;
static List *pending_shapes = NIL;

/* how many of them are feed entries (pending, error) */
static int	pending_feed_entries = 0;

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
	{
		HeapTuple	tuple = ExecFetchSlotHeapTuple(slot, false, &shouldFree);

		/*
		 * A tuple written before columns were added lacks them (their
		 * values are in the descriptor): the datum must hold every
		 * attribute, to be read with the stored shape alone.
		 */
		if (HeapTupleHeaderGetNatts(tuple->t_data) < desc->natts)
		{
			slot_getallattrs(slot);
			return HeapTupleHeaderGetDatum(heap_form_tuple(desc, slot->tts_values,
														   slot->tts_isnull)->t_data);
		}
		return heap_copy_tuple_as_datum(tuple, desc);
	}
}

/*
 * The shape of rows formed with desc: a 64-bit hash of every attribute's
 * name, type, typmod, length, alignment and whether it is dropped, which
 * is all it takes to read such a row again and to output its values.
 */
int64
cr_conflict_shape(TupleDesc desc)
{
	StringInfoData buf;
	int64		shape;

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, (char *) &desc->natts, sizeof(desc->natts));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		appendBinaryStringInfo(&buf, (char *) &att->atttypid, sizeof(Oid));
		appendBinaryStringInfo(&buf, (char *) &att->atttypmod, sizeof(int32));
		appendBinaryStringInfo(&buf, (char *) &att->attlen, sizeof(int16));
		appendStringInfoChar(&buf, att->attbyval ? 't' : 'f');
		appendStringInfoChar(&buf, att->attalign);
		appendStringInfoChar(&buf, att->attisdropped ? 't' : 'f');
		appendStringInfoString(&buf, NameStr(att->attname));
		appendStringInfoChar(&buf, '\0');
	}
	shape = (int64) hash_bytes_extended((unsigned char *) buf.data, buf.len, 0);
	pfree(buf.data);
	return shape;
}

/* a relcache invalidation: forget the shape of the table (or of all) */
static void
shape_cache_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	ShapeEntry *entry;

	if (OidIsValid(relid))
	{
		(void) hash_search(shape_cache, &relid, HASH_REMOVE, NULL);
		return;
	}
	hash_seq_init(&status, shape_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		(void) hash_search(shape_cache, &entry->relid, HASH_REMOVE, NULL);
}

/*
 * At the end of a transaction or subtransaction: shapes it wrote are
 * stored once it commits; any that were not written, or whose write a
 * rollback undid, are written again by the next transaction that needs
 * them (the insert does nothing where the shape is there).
 */
static void
shape_states_settle(bool committed)
{
	HASH_SEQ_STATUS status;
	ShapeEntry *entry;

	/* every transaction of the apply worker ends here: mostly nothing to do */
	if (!shapes_unsettled)
		return;
	hash_seq_init(&status, shape_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (committed && entry->state == SHAPE_WRITTEN)
			entry->state = SHAPE_STORED;
		else if (entry->state != SHAPE_STORED)
			entry->state = SHAPE_UNKNOWN;
	}
	shapes_unsettled = false;
}

static void
shape_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		shape_states_settle(true);
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		shape_states_settle(false);
}

static void
shape_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		shape_states_settle(false);
}

/*
 * The shape of rel's rows, from the cache or computed now; queued for
 * writing (with a copy of the descriptor, in pending_cxt, the current
 * context) unless it is stored or queued already.
 */
static int64
record_shape(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	ShapeEntry *entry;
	bool		found;

	if (shape_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(ShapeEntry);
		shape_cache = hash_create("cosmosrep conflict shapes", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(shape_cache_invalidate, (Datum) 0);
		RegisterXactCallback(shape_xact_callback, NULL);
		RegisterSubXactCallback(shape_subxact_callback, NULL);
	}
	entry = hash_search(shape_cache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		entry->shape = cr_conflict_shape(RelationGetDescr(rel));
		entry->state = SHAPE_UNKNOWN;
	}
	if (entry->state == SHAPE_UNKNOWN)
	{
		PendingShape *ps = palloc(sizeof(PendingShape));

		ps->relid = relid;
		ps->shape = entry->shape;
		ps->desc = CreateTupleDescCopy(RelationGetDescr(rel));
		pending_shapes = lappend(pending_shapes, ps);
		entry->state = SHAPE_QUEUED;
		shapes_unsettled = true;
	}
	return entry->shape;
}

/*
 * Write the queued shapes to cosmosrep.conflict_shape (where they are
 * not there already), as arrays of the attributes' names, types, typmods,
 * lengths, by-value flags and alignments; a dropped attribute has type 0
 * and no name.
 */
static void
write_shapes(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[8] = {OIDOID, INT8OID, TEXTARRAYOID, OIDARRAYOID,
		INT4ARRAYOID, INT2ARRAYOID, BOOLARRAYOID, CHARARRAYOID};
	ListCell   *lc;

	foreach(lc, pending_shapes)
	{
		PendingShape *ps = lfirst(lc);
		TupleDesc	desc = ps->desc;
		int			n = desc->natts;
		Datum	   *names = palloc(sizeof(Datum) * n);
		bool	   *namenulls = palloc(sizeof(bool) * n);
		Datum	   *types = palloc(sizeof(Datum) * n);
		Datum	   *typmods = palloc(sizeof(Datum) * n);
		Datum	   *lens = palloc(sizeof(Datum) * n);
		Datum	   *byvals = palloc(sizeof(Datum) * n);
		Datum	   *aligns = palloc(sizeof(Datum) * n);
		int			dims[1] = {n};
		int			lbs[1] = {1};
		Datum		values[8];
		ShapeEntry *entry;

		for (int i = 0; i < n; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			namenulls[i] = att->attisdropped;
			names[i] = att->attisdropped ? (Datum) 0 :
				CStringGetTextDatum(NameStr(att->attname));
			types[i] = ObjectIdGetDatum(att->attisdropped ? InvalidOid : att->atttypid);
			typmods[i] = Int32GetDatum(att->atttypmod);
			lens[i] = Int16GetDatum(att->attlen);
			byvals[i] = BoolGetDatum(att->attbyval);
			aligns[i] = CharGetDatum(att->attalign);
		}
		values[0] = ObjectIdGetDatum(ps->relid);
		values[1] = Int64GetDatum(ps->shape);
		values[2] = PointerGetDatum(construct_md_array(names, namenulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
		values[3] = PointerGetDatum(construct_array(types, n, OIDOID, sizeof(Oid),
													true, TYPALIGN_INT));
		values[4] = PointerGetDatum(construct_array(typmods, n, INT4OID, sizeof(int32),
													true, TYPALIGN_INT));
		values[5] = PointerGetDatum(construct_array(lens, n, INT2OID, sizeof(int16),
													true, TYPALIGN_SHORT));
		values[6] = PointerGetDatum(construct_array(byvals, n, BOOLOID, sizeof(bool),
													true, TYPALIGN_CHAR));
		values[7] = PointerGetDatum(construct_array(aligns, n, CHAROID, 1,
													true, TYPALIGN_CHAR));
		(void) cr_catalog_write(&plan,
								"INSERT INTO cosmosrep.conflict_shape"
								" (relid, shape, attnames, atttypes, atttypmods,"
								"  attlens, attbyvals, attaligns)"
								" VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
								" ON CONFLICT (relid, shape) DO NOTHING",
								8, argtypes, values, NULL, SPI_OK_INSERT);
		entry = shape_cache ? hash_search(shape_cache, &ps->relid, HASH_FIND, NULL) : NULL;
		if (entry != NULL && entry->shape == ps->shape && entry->state == SHAPE_QUEUED)
			entry->state = SHAPE_WRITTEN;
	}
	pending_shapes = NIL;
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
	c->shape = record_shape(rel);
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
	Datum		kinds[lengthof(cr_conflict_kind_names)] = {0};
	Datum		resolutions[lengthof(cr_resolution_names)] = {0};
	const char *last_policy = NULL;
	MemoryContext oldctx;
	ListCell   *lc;

	if (pending_conflicts == NIL)
		return;
	/* called at commit, where no snapshot is set for the statements here */
	PushActiveSnapshot(GetTransactionSnapshot());
	oldctx = MemoryContextSwitchTo(pending_cxt);
	if (pending_shapes != NIL)
		write_shapes();
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
		/* a tentative entry waits for the arbiter's resolution (feed.c) */
		bool		resolved = c->resolution != CR_RESOLUTION_PENDING &&
			c->resolution != CR_RESOLUTION_ERROR &&
			c->resolution != CR_RESOLUTION_TENTATIVE;

		if (kinds[c->kind] == (Datum) 0)
			kinds[c->kind] = CStringGetTextDatum(cr_conflict_kind_names[c->kind]);
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
		values[Anum_conflict_shape - 1] = Int64GetDatum(c->shape);
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
	pending_conflicts = NIL;
	pending_feed_entries = 0;
	MemoryContextReset(pending_cxt);
}

/*
 * Write the conflicts recorded so far if enough of them wait; called by
 * apply between changes.
 */
void
cr_flush_some_conflicts(void)
{
	if (list_length(pending_conflicts) >= cr_conflict_write_batch)
		cr_flush_conflicts();
}

/*
 * Forget the conflicts recorded and not yet written (a change undone),
 * and the shapes queued for them.
 */
void
cr_conflicts_forget(void)
{
	pending_conflicts = NIL;
	pending_shapes = NIL;
	pending_feed_entries = 0;
	if (shape_cache != NULL)
		shape_states_settle(false);
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
 * into the current context, the conflict's table in *relid and the
 * rows' shape in *shape; NULL if there is none.  Read without privilege
 * checks: the caller checks the user's.
 */
static HeapTupleHeader
conflict_row_datum(ItemPointer tid, const char *which, Oid *relid, int64 *shape)
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
		*shape = DatumGetInt64(slot_getattr(slot, Anum_conflict_shape, &isnull));
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
 * How to read rows of a stored shape: a descriptor with every attribute
 * of the shape (for deform_stored_row), and a registered one of the
 * attributes to show (not dropped; text, and always null, for a value
 * whose type no longer exists).  Cached per query in fn_extra.
 */
typedef struct StoredShape
{
	Oid			relid;
	int64		shape;
	TupleDesc	deform;			/* NULL: the shape is not stored */
	TupleDesc	show;
	int		   *shown;			/* attribute of deform behind each of show's */
	bool	   *type_gone;		/* per attribute of show */
} StoredShape;

/*
 * desc registered as a record type, as the type cache holds it: for the
 * backend's life (record types are never forgotten, and their descriptors
 * are not reference counted).
 */
static TupleDesc
registered_record_desc(TupleDesc desc)
{
	TupleDesc	registered;

	desc = BlessTupleDesc(desc);
	registered = lookup_rowtype_tupdesc(desc->tdtypeid, desc->tdtypmod);
	ReleaseTupleDesc(registered);
	return registered;
}

/*
 * The stored shape of relid's rows, read from cosmosrep.conflict_shape
 * (as its owner) into the context cxt, or with deform NULL if it is not
 * there.
 */
static StoredShape *
load_stored_shape(Oid relid, int64 shape, MemoryContext cxt)
{
	Oid			argtypes[2] = {OIDOID, INT8OID};
	Datum		values[2] = {ObjectIdGetDatum(relid), Int64GetDatum(shape)};
	MemoryContext callerctx = CurrentMemoryContext;
	StoredShape *ss = MemoryContextAllocZero(cxt, sizeof(StoredShape));

	ss->relid = relid;
	ss->shape = shape;
	SPI_connect();
	if (cr_catalog_query(NULL,
						 "SELECT attnames, atttypes, atttypmods, attlens, attbyvals, attaligns"
						 " FROM cosmosrep.conflict_shape"
						 " WHERE relid OPERATOR(pg_catalog.=) $1"
						 " AND shape OPERATOR(pg_catalog.=) $2",
						 2, argtypes, values, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shape of a conflict's rows");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	spidesc = SPI_tuptable->tupdesc;
		Datum	   *arrays[6];
		bool	   *arraynulls[6];
		int			counts[6];
		static const Oid elemtypes[6] = {TEXTOID, OIDOID, INT4OID, INT2OID, BOOLOID, CHAROID};
		int			natts;
		int			nshow = 0;
		MemoryContext spictx;

		for (int col = 0; col < 6; col++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(tup, spidesc, col + 1, &isnull);
			int16		typlen;
			bool		typbyval;
			char		typalign;

			if (isnull)
				elog(ERROR, "the shape of a conflict's rows is incomplete");
			get_typlenbyvalalign(elemtypes[col], &typlen, &typbyval, &typalign);
			deconstruct_array(DatumGetArrayTypeP(d), elemtypes[col], typlen, typbyval,
							  typalign, &arrays[col], &arraynulls[col], &counts[col]);
		}
		natts = counts[0];
		for (int col = 1; col < 6; col++)
			if (counts[col] != natts)
				elog(ERROR, "the shape of a conflict's rows is incomplete");

		spictx = MemoryContextSwitchTo(cxt);
		ss->deform = CreateTemplateTupleDesc(natts);
		ss->shown = palloc(sizeof(int) * Max(natts, 1));
		ss->type_gone = palloc0(sizeof(bool) * Max(natts, 1));
		for (int i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(ss->deform, i);
			Oid			typid = DatumGetObjectId(arrays[1][i]);

			/* what deforming needs; the type need not exist any more */
			att->attnum = i + 1;
			att->atttypid = typid;
			att->atttypmod = DatumGetInt32(arrays[2][i]);
			att->attlen = DatumGetInt16(arrays[3][i]);
			att->attbyval = DatumGetBool(arrays[4][i]);
			att->attalign = DatumGetChar(arrays[5][i]);
			att->attcacheoff = -1;
			att->attstorage = TYPSTORAGE_PLAIN;
			att->attisdropped = !OidIsValid(typid) || arraynulls[0][i];
			if (!att->attisdropped)
			{
				namestrcpy(&att->attname, TextDatumGetCString(arrays[0][i]));
				ss->shown[nshow++] = i;
			}
		}
		ss->show = CreateTemplateTupleDesc(nshow);
		for (int j = 0; j < nshow; j++)
		{
			Form_pg_attribute att = TupleDescAttr(ss->deform, ss->shown[j]);
			bool		exists = SearchSysCacheExists1(TYPEOID,
													   ObjectIdGetDatum(att->atttypid));

			ss->type_gone[j] = !exists;
			TupleDescInitEntry(ss->show, j + 1, NameStr(att->attname),
							   exists ? att->atttypid : TEXTOID,
							   exists ? att->atttypmod : -1, 0);
		}

		/*
		 * The rows are formed as records of the shown attributes, with
		 * the descriptor the type cache holds for that record type, which
		 * row_to_json reads them with.
		 */
		ss->show = registered_record_desc(ss->show);
		MemoryContextSwitchTo(spictx);
	}
	SPI_finish();
	MemoryContextSwitchTo(callerctx);
	return ss;
}

/*
 * The values of row, a tuple formed with the attributes of desc, into
 * values and nulls, as heap_deform_tuple reads them.  By hand: the datum
 * names its table's row type, whose descriptor is no longer the one it
 * was formed with, and no registered type describes it.
 */
static void
deform_stored_row(HeapTupleHeader row, TupleDesc desc, Datum *values, bool *nulls)
{
	int			natts = Min(HeapTupleHeaderGetNatts(row), desc->natts);
	bool		hasnulls = (row->t_infomask & HEAP_HASNULL) != 0;
	bits8	   *bp = row->t_bits;
	char	   *tp = (char *) row + row->t_hoff;
	uint32		off = 0;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		/* a tuple formed before an attribute was added lacks it */
		if (i >= natts || (hasnulls && att_isnull(i, bp)))
		{
			values[i] = (Datum) 0;
			nulls[i] = true;
			continue;
		}
		nulls[i] = false;
		off = att_align_pointer(off, att->attalign, att->attlen, tp + off);
		values[i] = fetchatt(att, tp + off);
		off = att_addlength_pointer(off, att->attlen, tp + off);
	}
}

/*
 * A row recorded with another shape than its table has now, as a record
 * of the attributes it was formed with (see StoredShape), or 0 if its
 * shape is not stored.
 */
static Datum
row_of_stored_shape(HeapTupleHeader row, StoredShape *ss)
{
	Datum	   *values;
	bool	   *nulls;
	Datum	   *showvalues;
	bool	   *shownulls;

	if (ss->deform == NULL ||
		HeapTupleHeaderGetNatts(row) > ss->deform->natts)
		return (Datum) 0;
	values = palloc(sizeof(Datum) * Max(ss->deform->natts, 1));
	nulls = palloc(sizeof(bool) * Max(ss->deform->natts, 1));
	deform_stored_row(row, ss->deform, values, nulls);
	showvalues = palloc(sizeof(Datum) * Max(ss->show->natts, 1));
	shownulls = palloc(sizeof(bool) * Max(ss->show->natts, 1));
	for (int j = 0; j < ss->show->natts; j++)
	{
		showvalues[j] = values[ss->shown[j]];
		shownulls[j] = nulls[ss->shown[j]] || ss->type_gone[j];
	}
	return HeapTupleGetDatum(heap_form_tuple(ss->show, showvalues, shownulls));
}

/*
 * The attributes of relid's rows of the stored shape shape, numbered as
 * the table's attributes were when the rows were recorded (a dropped one
 * is attisdropped and has no name; a type may no longer exist), in the
 * current memory context; NULL if the shape is not stored.  For the feed,
 * which writes such rows as rows of the table (feed.c).
 */
TupleDesc
cr_conflict_stored_shape(Oid relid, int64 shape)
{
	return load_stored_shape(relid, shape, CurrentMemoryContext)->deform;
}

/*
 * The values of row, a composite datum recorded with the attributes of
 * desc (cr_conflict_stored_shape), into values and nulls; they point into
 * row.
 */
void
cr_conflict_deform_stored(Datum row, TupleDesc desc, Datum *values, bool *nulls)
{
	HeapTupleHeader tuple = DatumGetHeapTupleHeader(row);

	if (HeapTupleHeaderGetNatts(tuple) > desc->natts)
		elog(ERROR, "a conflict's row has more attributes than its stored shape");
	deform_stored_row(tuple, desc, values, nulls);
}

/*
 * cosmosrep.conflict_row(entry, which): the local, remote or winner row
 * of the conflict entry at ctid entry of cosmosrep.conflict, as jsonb,
 * decoded from the composite datum stored when it was detected, or NULL.
 * A row of the table's current shape is read with its row type; one
 * recorded before the table's columns changed, with its stored shape
 * (the columns it had, by the types they had).  cosmosrep.conflicts
 * reads each entry's rows with it.  It takes where the entry is, not its
 * bytes, so that no caller can make it decode bytes of their own, and
 * answers only a user who may read the table and whom its row-level
 * security does not apply to.  (A C name of its own: the function took
 * a conflict id before.)
 */
Datum
cosmosrep_conflict_row_at(PG_FUNCTION_ARGS)
{
	Oid			relid;
	int64		shape = 0;
	HeapTupleHeader row = conflict_row_datum((ItemPointer) PG_GETARG_POINTER(0),
											 text_to_cstring(PG_GETARG_TEXT_PP(1)),
											 &relid, &shape);
	Relation	rel;
	bool		same_shape;
	Datum		json;

	if (row == NULL || pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		PG_RETURN_NULL();
	rel = try_table_open(relid, AccessShareLock);
	if (rel == NULL)
		PG_RETURN_NULL();
	same_shape = cr_conflict_shape(RelationGetDescr(rel)) == shape &&
		HeapTupleHeaderGetTypeId(row) == rel->rd_rel->reltype;
	table_close(rel, AccessShareLock);
	if (same_shape)
		json = DirectFunctionCall1(row_to_json, PointerGetDatum(row));
	else
	{
		StoredShape *ss = NULL;
		ListCell   *lc;
		Datum		record;

		foreach(lc, (List *) fcinfo->flinfo->fn_extra)
		{
			StoredShape *cached = lfirst(lc);

			if (cached->relid == relid && cached->shape == shape)
				ss = cached;
		}
		if (ss == NULL)
		{
			MemoryContext oldctx;

			ss = load_stored_shape(relid, shape, fcinfo->flinfo->fn_mcxt);
			oldctx = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
			fcinfo->flinfo->fn_extra = lappend((List *) fcinfo->flinfo->fn_extra, ss);
			MemoryContextSwitchTo(oldctx);
		}
		record = row_of_stored_shape(row, ss);
		if (record == (Datum) 0)
			PG_RETURN_NULL();
		json = DirectFunctionCall1(row_to_json, record);
	}
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
										CStringGetDatum(TextDatumGetCString(json))));
}

/*
 * Call fn(tup, desc, arg) for every waiting entry (resolved_at IS NULL)
 * of key in relid's feed, as the latest snapshot sees them: a scan of the
 * partial index conflict_waiting.  A direct scan rather than a prepared
 * statement: cosmosrep.conflict grows from empty within a heal, and a
 * plan of this lookup made before it was analyzed took the index on
 * conflict_id, reading every waiting entry for each one, which made a
 * heal under a resolver quadratic.
 */
void
cr_conflict_waiting_scan(Oid relid, bytea *key,
						 void (*fn) (HeapTuple tup, TupleDesc desc, void *arg),
						 void *arg)
{
	Oid			nspid = cr_schema_oid();
	Relation	rel = table_open(get_relname_relid("conflict", nspid), AccessShareLock);
	Snapshot	snapshot;
	ScanKeyData skey[2];
	SysScanDesc scan;
	HeapTuple	tup;

	/* the entries this transaction wrote last are seen too */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetLatestSnapshot());

	/* by the table's column numbers, which systable_beginscan maps */
	ScanKeyInit(&skey[0], SPI_fnumber(RelationGetDescr(rel), "relid"), BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&skey[1], SPI_fnumber(RelationGetDescr(rel), "key"), BTEqualStrategyNumber,
				F_BYTEAEQ, PointerGetDatum(key));
	scan = systable_beginscan(rel, get_relname_relid("conflict_waiting", nspid), true,
							  snapshot, 2, skey);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		fn(tup, RelationGetDescr(rel), arg);
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
}

/* a waiting entry's remote row, as cr_feed_rows collects them */
typedef struct FeedRow
{
	int64		id;
	Datum		row;
} FeedRow;

/* what cr_feed_rows collects of the waiting entries of a key */
typedef struct FeedRows
{
	Oid			rowtype;
	int64		shape;
	List	   *rows;			/* of FeedRow */
} FeedRows;

static void
collect_feed_row(HeapTuple tup, TupleDesc desc, void *arg)
{
	FeedRows   *fr = arg;
	bool		isnull;
	Datum		d = heap_getattr(tup, SPI_fnumber(desc, "remote_row"), desc, &isnull);
	FeedRow    *r;

	if (isnull ||
		strcmp(TextDatumGetCString(heap_getattr(tup, SPI_fnumber(desc, "resolution"),
												desc, &isnull)),
			   cr_resolution_names[CR_RESOLUTION_TENTATIVE]) == 0 ||
		DatumGetInt64(heap_getattr(tup, SPI_fnumber(desc, "shape"), desc, &isnull)) != fr->shape)
		return;
	r = palloc(sizeof(FeedRow));
	r->id = DatumGetInt64(heap_getattr(tup, SPI_fnumber(desc, "conflict_id"), desc, &isnull));
	r->row = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	if (HeapTupleHeaderGetTypeId((HeapTupleHeader) DatumGetPointer(r->row)) == fr->rowtype)
		fr->rows = lappend(fr->rows, r);
}

static int
feed_row_cmp(const ListCell *a, const ListCell *b)
{
	int64		x = ((FeedRow *) lfirst(a))->id;
	int64		y = ((FeedRow *) lfirst(b))->id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The remote rows of the key of relid that wait in the feed (pending and
 * error entries), oldest first, as an array of rowtype: the conflicting
 * versions a resolver is shown.  Only rows of the table's current shape
 * (rows recorded before its columns changed cannot be passed as its row
 * type), and none where row-level security of the table applies to the
 * current user (the owner, under FORCE ROW LEVEL SECURITY).  Read without
 * privilege checks; the caller has relid open.
 */
Datum
cr_feed_rows(Oid relid, bytea *key, Oid rowtype)
{
	FeedRows	fr = {rowtype, 0, NIL};
	Relation	rel;
	Datum	   *rows;
	int			n = 0;
	ListCell   *lc;

	if (check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return PointerGetDatum(construct_empty_array(rowtype));
	rel = table_open(relid, NoLock);
	fr.shape = cr_conflict_shape(RelationGetDescr(rel));
	table_close(rel, NoLock);

	/* entries this transaction recorded count too, whatever the grouping */
	if (pending_feed_entries > 0)
		cr_flush_conflicts();

	cr_conflict_waiting_scan(relid, key, collect_feed_row, &fr);
	if (fr.rows == NIL)
		return PointerGetDatum(construct_empty_array(rowtype));
	list_sort(fr.rows, feed_row_cmp);
	rows = palloc(sizeof(Datum) * list_length(fr.rows));
	foreach(lc, fr.rows)
		rows[n++] = ((FeedRow *) lfirst(lc))->row;
	return PointerGetDatum(construct_array(rows, n, rowtype, -1, false, TYPALIGN_DOUBLE));
}

/*
 * The history's settings: what is recorded and how long it stays.
 */
void
cr_conflict_log_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.conflict_retention",
							"How long resolved conflicts stay in cosmosrep.conflicts.",
							"Pending and error entries stay until they are resolved.",
							&cr_conflict_retention_s,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.conflict_write_batch",
							"How many recorded conflicts an apply worker holds before it writes them to cosmosrep.conflict.",
							"They are written before every commit too; more uses more memory per worker, fewer writes more often.",
							&cr_conflict_write_batch,
							1000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("cosmosrep.record_resolved_conflicts",
							 "Whether conflicts that a policy resolved are recorded in cosmosrep.conflicts.",
							 "Off, they are only counted in replication_status; pending and error entries (the feed) are always recorded.",
							 &cr_record_resolved_conflicts,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
}
