/*-------------------------------------------------------------------------
 *
 * output_plugin.c
 *	  Logical decoding output plugin: what a region sends to its peers.
 *
 * NOTES
 *	  The plugin lives in cosmosrep's shared library, so a slot created with
 *	  plugin 'cosmosrep' loads it (and since PostgreSQL 15.19 the server
 *	  must list it in output_plugin_libraries).  It decides what to send;
 *	  protocol.c decides how.
 *
 *	  - Only changes that originated in this region are sent: anything
 *		applied by an apply worker or copied during a join carries a
 *		replication origin and is filtered out, so a full mesh never loops.
 *	  - Only multi-region tables are sent: a table is multi-region when it
 *		has cosmosrep's version and base columns, which only enable_table
 *		adds.  The answer is cached per relation and dropped by relcache
 *		invalidation, like pgoutput's RelationSyncCache.
 *	  - A relation's schema is sent before its first change and again
 *		after each invalidation.
 *	  - A change of a partition is sent as a change of the partitioned
 *		table at the top of its tree, converted to its columns, as core's
 *		publish_via_partition_root does: regions whose partitions differ
 *		in names or bounds still name the same table, and the receiver
 *		routes the row into its own partition.
 *	  - Empty transactions are not sent: BEGIN is written with the first
 *		change or DDL message of a transaction.
 *	  - A transaction travels in as few CopyData messages as possible (a
 *		CopyData message may hold several protocol messages): its
 *		messages collect in a pending buffer that is written when it
 *		reaches CR_WRITE_CHUNK bytes and at COMMIT.  A single-row
 *		transaction is one CopyData, so one send() at the walsender and
 *		one wake-up of the apply worker; a large one is streamed in
 *		chunks, so the buffer does not grow with the transaction.
 *	  - The row trigger's delete message is held until the delete it
 *		belongs to, whose key tuple then carries the delete's version,
 *		base and configuration.
 *	  - Before the first row of a relation written under a configuration
 *		(CR_CONFIG_COLUMN) since the session began or the relation was
 *		invalidated, that configuration is sent as a policy change, read
 *		from cosmosrep.policy_history (a user catalog table) with the
 *		historic snapshot: a region that ships a row written under a
 *		policy change it received from another region ships the change
 *		before it, so every receiver knows the configuration of every
 *		row it decides (conflict.c), whichever region it heard from
 *		first.
 *	  - A transaction that outgrows logical_decoding_work_mem is streamed
 *		while it runs, when the apply worker asked for it (option
 *		streaming, protocol version 3): the reorder buffer calls the
 *		stream callbacks with blocks of its changes, each sent between
 *		STREAM START and STREAM STOP, then STREAM COMMIT or STREAM ABORT
 *		(docs/design.md, "Streamed transactions").  What a streamed
 *		transaction needs is sent in it: the RELATION of each table and
 *		the configuration of its rows are sent again in each streamed
 *		transaction that changes it, and never count as sent for the
 *		transactions decoded whole, which the receiver may apply before or
 *		after the streamed one.  The row trigger's delete message kept from one block waits
 *		in the transaction's own state for the next.
 *	  - TRUNCATE is not sent as such: the truncate trigger's message, which
 *		carries the truncate's version, is (see row_trigger.c); so are the
 *		DDL and enable-time rows messages of tables.c.
 *
 *	  Memory: per-change allocations go to "cosmosrep change" context,
 *	  reset after every change; the pending buffer lives in the decoding
 *	  context and is freed after a write if very large rows made it grow;
 *	  the relation cache, with its slots and
 *	  an unpinned copy of each tuple descriptor (pinning one per change
 *	  costs resource owner bookkeeping that grows with the transaction),
 *	  lives in its own context for the life of the decoding session.
 *
 * IDENTIFICATION
 *	  src/output_plugin.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/tupconvert.h"
#include "commands/defrem.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "catalog.h"
#include "names.h"
#include "protocol.h"
#include "row_trigger.h"
#include "signing.h"
#include "tables.h"

/* the tuple of a decoded change; PostgreSQL 17 dropped ReorderBufferTupleBuf */
#if PG_VERSION_NUM >= 170000
#define CR_CHANGE_TUPLE(t)	(t)
#else
#define CR_CHANGE_TUPLE(t)	((t) ? &(t)->tuple : NULL)
#endif

typedef struct CrRelSyncEntry
{
	Oid			relid;			/* hash key */
	bool		valid;			/* false after an invalidation */
	bool		replicated;		/* has cosmosrep's columns */
	bool		schema_sent;
	AttrNumber	version_att;
	AttrNumber	base_att;
	AttrNumber	config_att;
	AttrNumber	seen_att;
	Bitmapset  *columns;		/* the columns sent, NULL: all (protocol.h) */
	int64		config_sent;	/* the configuration last sent, or 0 */
	TransactionId stream_xid;	/* the streamed transaction that has its
								 * RELATION */
	TransactionId stream_config_xid;	/* and the one, and configuration, */
	int64		stream_config_sent; /* of the configuration last streamed */
	TupleDesc	desc;			/* unpinned copy, in RelSyncContext */
	TupleTableSlot *heap_slot;	/* decoded tuples are stored here... */
	TupleTableSlot *new_slot;	/* ...and copied here to be sent, */
	TupleTableSlot *old_slot;	/* where the delete's version is set */
	Oid			root_relid;		/* the table sent: relid, or for a partition
								 * the partitioned table at the top */
	AttrMap    *root_map;		/* partition's columns to the root's, or
								 * NULL when they are alike */
	TupleTableSlot *root_new_slot;	/* the converted rows, with the root's */
	TupleTableSlot *root_old_slot;	/* descriptor, if root_relid != relid */
	TupleDesc	root_desc;
} CrRelSyncEntry;

/*
 * The pending buffer is written whenever it holds CR_WRITE_CHUNK bytes
 * (protocol.h); one that rows larger than a chunk made grow past
 * CR_PENDING_KEEP is freed once written.  (The walsender's own output
 * buffer keeps whatever size the largest write gave it.)
 */
#define CR_PENDING_KEEP		(1024 * 1024)

typedef struct CrDecodingData
{
	MemoryContext change_context;	/* reset after every callback */
	StringInfoData pending;		/* messages not yet written, in ctx->context */
	bool		begin_written;	/* BEGIN of the current transaction pending
								 * or written */
	bool		have_delete_base;
	CrDeleteBase delete_base;	/* from the row trigger, for the next delete */
	bytea	   *delete_seen;	/* and what that delete had seen */
	bool		streaming;		/* the worker asked for streaming */
	bool		in_stream;		/* in a block of a streamed transaction */
	bool		block_started;	/* its STREAM START is pending or written */
	TransactionId stream_xid;	/* the toplevel transaction of the block */
	TransactionId pending_xid;	/* the (sub)transaction of the messages
								 * pending in a block */
} CrDecodingData;

/*
 * A streamed transaction's state between its blocks (in the toplevel
 * ReorderBufferTXN's output_plugin_private, in the decoding context): whether
 * a block of it was sent, and the row trigger's delete message that the
 * last block ended with.
 */
typedef struct CrStreamTxn
{
	bool		sent;
	bool		have_delete_base;
	CrDeleteBase delete_base;
	bytea	   *delete_seen;
} CrStreamTxn;

/* relation cache; survives across transactions of one decoding session */
static HTAB *RelSyncCache = NULL;
static MemoryContext RelSyncContext = NULL;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void cr_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
					   bool is_init);
static void cr_shutdown(LogicalDecodingContext *ctx);
static void cr_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void cr_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					  XLogRecPtr commit_lsn);
static void cr_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					  Relation rel, ReorderBufferChange *change);
static void cr_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					   XLogRecPtr message_lsn, bool transactional,
					   const char *prefix, Size message_size,
					   const char *message);
static bool cr_filter_by_origin(LogicalDecodingContext *ctx,
								RepOriginId origin_id);
static void cr_stream_start(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void cr_stream_stop(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void cr_stream_abort(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
							XLogRecPtr abort_lsn);
static void cr_stream_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
							 XLogRecPtr commit_lsn);
static void cr_stream_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
							   int nrelations, Relation relations[],
							   ReorderBufferChange *change);

static CrRelSyncEntry *get_rel_sync_entry(Relation rel);
static void rel_sync_invalidate(Datum arg, Oid relid);
static StringInfo pending_begin(LogicalDecodingContext *ctx,
								ReorderBufferTXN *txn);
static void pending_relation(CrDecodingData *data, CrRelSyncEntry *entry,
							 Relation rel);
static void pending_write(LogicalDecodingContext *ctx, bool force);
static TupleTableSlot *tuple_slot(CrRelSyncEntry *entry, HeapTuple tuple,
								  TupleTableSlot *slot);
static void rel_sync_drop_slots(CrRelSyncEntry *entry);

/* the protocol version of this session's stream (cr_startup) */
static int	stream_protocol_version = CR_PROTOCOL_VERSION;

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = cr_startup;
	cb->begin_cb = cr_begin;
	cb->change_cb = cr_change;
	cb->message_cb = cr_message;
	cb->commit_cb = cr_commit;
	cb->filter_by_origin_cb = cr_filter_by_origin;
	cb->shutdown_cb = cr_shutdown;
	cb->stream_start_cb = cr_stream_start;
	cb->stream_stop_cb = cr_stream_stop;
	cb->stream_abort_cb = cr_stream_abort;
	cb->stream_commit_cb = cr_stream_commit;
	cb->stream_change_cb = cr_change;
	cb->stream_message_cb = cr_message;
	cb->stream_truncate_cb = cr_stream_truncate;
}

static void
cr_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	CrDecodingData *data = palloc0(sizeof(CrDecodingData));
	MemoryContext oldctx;
	ListCell   *lc;
	bool		have_version = false;

	data->change_context = AllocSetContextCreate(ctx->context,
												 "cosmosrep change",
												 ALLOCSET_DEFAULT_SIZES);
	oldctx = MemoryContextSwitchTo(ctx->context);
	initStringInfo(&data->pending);
	MemoryContextSwitchTo(oldctx);
	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;

	foreach(lc, ctx->output_plugin_options)
	{
		DefElem    *elem = lfirst(lc);

		if (strcmp(elem->defname, "protocol_version") == 0)
		{
			int			version = pg_strtoint32(defGetString(elem));

			/*
			 * The stream of every version this library writes is the same
			 * (protocol.h); a peer that asks for one it does not write is
			 * told which it does, and an apply worker of this library asks
			 * for the next older one (apply_worker.c).  The errcode is
			 * that of 0.1's refusal, which apply workers recognize.
			 */
			if (version < cr_min_protocol_version || version > CR_PROTOCOL_VERSION)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cosmosrep protocol version %d is not supported, this region writes versions %d to %d",
								version, cr_min_protocol_version, CR_PROTOCOL_VERSION),
						 version < cr_min_protocol_version ?
						 errhint("Upgrade cosmosrep in the region that asked, or lower cosmosrep.min_protocol_version in this region.") :
						 errhint("Upgrade cosmosrep in this region.")));
			have_version = true;
			stream_protocol_version = version;
		}
		else if (strcmp(elem->defname, "streaming") == 0)
			data->streaming = defGetBoolean(elem);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized cosmosrep option \"%s\"", elem->defname)));
	}
	if (!is_init && !have_version)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cosmosrep option \"protocol_version\" is missing")));

	/*
	 * The reorder buffer streams only if asked to (logical.c turns
	 * ctx->streaming on because the stream callbacks exist): a worker that
	 * did not ask, or reads an older version, receives whole transactions.
	 */
	data->streaming = data->streaming &&
		stream_protocol_version >= CR_PROTOCOL_STREAMING_VERSION;
	ctx->streaming = ctx->streaming && data->streaming;

	if (RelSyncCache == NULL)
	{
		HASHCTL		ctl;

		RelSyncContext = AllocSetContextCreate(CacheMemoryContext,
											   "cosmosrep relation sync cache",
											   ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CrRelSyncEntry);
		ctl.hcxt = RelSyncContext;
		RelSyncCache = hash_create("cosmosrep relation sync cache", 128, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(rel_sync_invalidate, (Datum) 0);
	}
}

static void
cr_shutdown(LogicalDecodingContext *ctx)
{
	/* the relcache callback cannot be unregistered: keep the (empty) hash */
	if (RelSyncCache != NULL)
	{
		HASH_SEQ_STATUS status;
		CrRelSyncEntry *entry;

		hash_seq_init(&status, RelSyncCache);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			rel_sync_drop_slots(entry);
			hash_search(RelSyncCache, &entry->relid, HASH_REMOVE, NULL);
		}
	}
}

static void
rel_sync_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	CrRelSyncEntry *entry;

	if (RelSyncCache == NULL)
		return;
	/* a partitioned table's invalidation covers its partitions' entries */
	hash_seq_init(&status, RelSyncCache);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (!OidIsValid(relid) || entry->relid == relid || entry->root_relid == relid)
			entry->valid = false;
}

static CrRelSyncEntry *
get_rel_sync_entry(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	bool		found;
	CrRelSyncEntry *entry = hash_search(RelSyncCache, &relid, HASH_ENTER, &found);

	if (!found)
	{
		entry->stream_xid = InvalidTransactionId;
		entry->desc = NULL;
		entry->columns = NULL;
		entry->root_relid = InvalidOid;
	}
	if (!found || !entry->valid)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		MemoryContext oldctx;
		CrColumns	columns;
		bool		has_columns;

		rel_sync_drop_slots(entry);
		has_columns = cr_find_columns(desc, &columns);
		entry->version_att = columns.version;
		entry->base_att = columns.base;
		entry->config_att = columns.config;
		entry->seen_att = columns.seen;
		/*
		 * Multi-region: cosmosrep's columns, which only enable_table adds
		 * (through apply too), and a configuration history.  Anyone may
		 * create a table with columns of these names; without the history
		 * check its rows would reach every region.
		 */
		entry->root_relid = cr_partition_root(relid);
		entry->replicated = has_columns &&
			cr_get_policy_history(entry->root_relid, 0) != NULL;
		entry->schema_sent = false;
		entry->config_sent = 0;
		entry->stream_xid = InvalidTransactionId;
		entry->stream_config_xid = InvalidTransactionId;
		if (entry->replicated)
		{
			/* a copy is not reference counted: no resource owner bookkeeping */
			oldctx = MemoryContextSwitchTo(RelSyncContext);
			entry->desc = CreateTupleDescCopy(desc);
			entry->heap_slot = MakeSingleTupleTableSlot(entry->desc, &TTSOpsHeapTuple);
			entry->new_slot = MakeSingleTupleTableSlot(entry->desc, &TTSOpsVirtual);
			entry->old_slot = MakeSingleTupleTableSlot(entry->desc, &TTSOpsVirtual);
			/* a version 2 stream has no _cr_seen (protocol.h) */
			entry->columns = stream_protocol_version < 3 ?
				cr_columns_without(entry->desc, entry->seen_att) : NULL;
			if (entry->root_relid != relid)
			{
				Relation	root = RelationIdGetRelation(entry->root_relid);

				if (!RelationIsValid(root))
					elog(ERROR, "could not open relation with OID %u", entry->root_relid);
				entry->root_desc = CreateTupleDescCopy(RelationGetDescr(root));
				RelationClose(root);
#if PG_VERSION_NUM >= 160000
				entry->root_map = build_attrmap_by_name_if_req(entry->desc,
															   entry->root_desc, false);
#else
				entry->root_map = build_attrmap_by_name_if_req(entry->desc,
															   entry->root_desc);
#endif
				entry->root_new_slot = MakeSingleTupleTableSlot(entry->root_desc,
																&TTSOpsVirtual);
				entry->root_old_slot = MakeSingleTupleTableSlot(entry->root_desc,
																&TTSOpsVirtual);
			}
			MemoryContextSwitchTo(oldctx);
		}
		entry->valid = true;
	}
	return entry;
}

static void
rel_sync_drop_slots(CrRelSyncEntry *entry)
{
	if (entry->desc == NULL)
		return;
	ExecDropSingleTupleTableSlot(entry->heap_slot);
	ExecDropSingleTupleTableSlot(entry->new_slot);
	ExecDropSingleTupleTableSlot(entry->old_slot);
	FreeTupleDesc(entry->desc);
	entry->desc = NULL;
	bms_free(entry->columns);
	entry->columns = NULL;
	if (entry->root_relid != entry->relid && OidIsValid(entry->root_relid))
	{
		ExecDropSingleTupleTableSlot(entry->root_new_slot);
		ExecDropSingleTupleTableSlot(entry->root_old_slot);
		if (entry->root_map)
			free_attrmap(entry->root_map);
		FreeTupleDesc(entry->root_desc);
		entry->root_map = NULL;
	}
}

static bool
cr_filter_by_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	return origin_id != InvalidRepOriginId;
}

static void
cr_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	CrDecodingData *data = ctx->output_plugin_private;

	Assert(data->pending.len == 0);
	data->begin_written = false;
	data->have_delete_base = false;
}

/*
 * The pending buffer, with the transaction's BEGIN in it or already
 * written: messages of the transaction are appended to it.
 */
static StringInfo
pending_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	CrDecodingData *data = ctx->output_plugin_private;

	if (data->in_stream)
	{
		if (!data->block_started)
		{
			ReorderBufferTXN *top = txn->toptxn ? txn->toptxn : txn;
			CrStreamTxn *st = top->output_plugin_private;

			/* cr_write_xid is set: the message after STREAM START has it */
			cr_write_stream_start(&data->pending, top->xid, !st->sent);
			data->pending_xid = cr_write_xid;
			data->block_started = true;
			st->sent = true;
		}
		return &data->pending;
	}
	if (!data->begin_written)
	{
		cr_write_begin(&data->pending, txn);
		data->begin_written = true;
	}
	return &data->pending;
}

/*
 * In a block of a streamed transaction, the messages that follow belong
 * to (sub)transaction xid: they carry it, and they start a CopyData
 * message of their own if the pending ones belong to another, so that
 * the receiver can spill and discard a subtransaction's messages by
 * CopyData message.
 */
static void
stream_set_xid(LogicalDecodingContext *ctx, TransactionId xid)
{
	CrDecodingData *data = ctx->output_plugin_private;

	if (!data->in_stream)
		return;
	if (data->block_started && data->pending_xid != xid && data->pending.len > 0)
		pending_write(ctx, true);
	cr_write_xid = xid;
	data->pending_xid = xid;
}

/*
 * The configuration a row of rel was written under, as a policy change,
 * before the first such row since the last one sent: see the NOTES.
 */
static void
pending_config(CrDecodingData *data, CrRelSyncEntry *entry, Relation rel,
			   TupleTableSlot *row, XLogRecPtr lsn)
{
	bool		isnull;
	Datum		d = slot_getattr(row, entry->config_att, &isnull);
	CrTableConfig *config;
	StringInfoData buf;
	int64	   *sent = &entry->config_sent;

	/* in a streamed block: what this transaction sent (see the NOTES) */
	if (data->in_stream)
	{
		if (entry->stream_config_xid != data->stream_xid)
		{
			entry->stream_config_xid = data->stream_xid;
			entry->stream_config_sent = 0;
		}
		sent = &entry->stream_config_sent;
	}
	/* configuration 0 (a row written without the trigger) has no history */
	if (isnull || DatumGetInt64(d) == *sent || DatumGetInt64(d) == 0)
		return;
	config = cr_get_policy_history(RelationGetRelid(rel), DatumGetInt64(d));
	if (config != NULL)
	{
		initStringInfo(&buf);
		cr_build_ddl_message(&buf, CR_DDL_ALTER_POLICY, rel, config);
		cr_write_message(&data->pending, lsn, true, CR_DDL_MESSAGE_PREFIX,
						 buf.len, buf.data);
	}
	*sent = DatumGetInt64(d);
}

/* RELATION before the first change of a relation since its invalidation */
static void
pending_relation(CrDecodingData *data, CrRelSyncEntry *entry, Relation rel)
{
	if (data->in_stream)
	{
		/* in every streamed transaction that changes it (see the NOTES) */
		if (entry->stream_xid == data->stream_xid)
			return;
		cr_write_relation(&data->pending, rel, entry->columns);
		entry->stream_xid = data->stream_xid;
		return;
	}
	if (entry->schema_sent)
		return;
	cr_write_relation(&data->pending, rel, entry->columns);
	entry->schema_sent = true;
}

/*
 * Write the pending messages as one CopyData message, if there are any
 * and either force is set or they fill a chunk.  Called from a callback
 * that may write.
 */
static void
pending_write(LogicalDecodingContext *ctx, bool force)
{
	CrDecodingData *data = ctx->output_plugin_private;

	if (data->pending.len == 0 || (!force && data->pending.len < CR_WRITE_CHUNK))
		return;
	OutputPluginPrepareWrite(ctx, true);
	appendBinaryStringInfo(ctx->out, data->pending.data, data->pending.len);
	OutputPluginWrite(ctx, true);

	if (data->pending.maxlen > CR_PENDING_KEEP)
	{
		/* large rows made it grow: give that memory back */
		MemoryContext oldctx = MemoryContextSwitchTo(ctx->context);

		pfree(data->pending.data);
		initStringInfo(&data->pending);
		MemoryContextSwitchTo(oldctx);
	}
	else
		resetStringInfo(&data->pending);
}

static void
cr_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		  XLogRecPtr commit_lsn)
{
	CrDecodingData *data = ctx->output_plugin_private;

	if (!data->begin_written)
	{
		/* nothing of ours in it; let the slot advance past it anyway */
		OutputPluginUpdateProgress(ctx, true);
		return;
	}
	cr_write_commit(&data->pending, txn, commit_lsn);
	pending_write(ctx, true);
	data->begin_written = false;
}

/*
 * Deform a decoded tuple into one of the entry's virtual slots, whose
 * values the caller may then change.  The values point into the tuple.
 */
static TupleTableSlot *
tuple_slot(CrRelSyncEntry *entry, HeapTuple tuple, TupleTableSlot *slot)
{
	TupleTableSlot *heapslot = entry->heap_slot;

	ExecStoreHeapTuple(tuple, heapslot, false);
	slot_getallattrs(heapslot);
	ExecClearTuple(slot);
	memcpy(slot->tts_values, heapslot->tts_values,
		   sizeof(Datum) * heapslot->tts_nvalid);
	memcpy(slot->tts_isnull, heapslot->tts_isnull,
		   sizeof(bool) * heapslot->tts_nvalid);
	ExecStoreVirtualTuple(slot);
	ExecClearTuple(heapslot);
	return slot;
}

/*
 * A row of entry's relation as the row to send: itself, or for a
 * partition the row in the columns of the table at its top, in rootslot.
 */
static TupleTableSlot *
root_row(CrRelSyncEntry *entry, TupleTableSlot *row, TupleTableSlot *rootslot)
{
	if (row == NULL || entry->root_relid == entry->relid)
		return row;
	if (entry->root_map == NULL)
	{
		/* alike: the same values under the root's descriptor */
		ExecClearTuple(rootslot);
		memcpy(rootslot->tts_values, row->tts_values,
			   sizeof(Datum) * row->tts_tupleDescriptor->natts);
		memcpy(rootslot->tts_isnull, row->tts_isnull,
			   sizeof(bool) * row->tts_tupleDescriptor->natts);
		return ExecStoreVirtualTuple(rootslot);
	}
	return execute_attr_map_slot(entry->root_map, row, rootslot);
}

static void
cr_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
		  ReorderBufferChange *change)
{
	CrDecodingData *data = ctx->output_plugin_private;
	CrRelSyncEntry *entry = get_rel_sync_entry(rel);
	MemoryContext oldctx;
	TupleTableSlot *newslot = NULL;
	TupleTableSlot *oldslot = NULL;
	HeapTuple	newtuple = CR_CHANGE_TUPLE(change->data.tp.newtuple);
	HeapTuple	oldtuple = CR_CHANGE_TUPLE(change->data.tp.oldtuple);
	StringInfo	out;
	Relation	partition = NULL;

	if (!entry->replicated)
		return;
	stream_set_xid(ctx, change->txn->xid);
	/* a partition's change is sent as one of the table at its top */
	if (entry->root_relid != RelationGetRelid(rel))
	{
		partition = rel;
		rel = RelationIdGetRelation(entry->root_relid);
		if (!RelationIsValid(rel))
			elog(ERROR, "could not open relation with OID %u", entry->root_relid);
	}

	oldctx = MemoryContextSwitchTo(data->change_context);
	if (newtuple)
		newslot = tuple_slot(entry, newtuple, entry->new_slot);
	if (oldtuple)
		oldslot = tuple_slot(entry, oldtuple, entry->old_slot);

	out = pending_begin(ctx, txn);
	pending_relation(data, entry, rel);
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			pending_config(data, entry, rel, newslot, change->lsn);
			cr_write_insert(out, rel, root_row(entry, newslot, entry->root_new_slot),
							entry->columns);
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			pending_config(data, entry, rel, newslot, change->lsn);
			cr_write_update(out, rel, root_row(entry, oldslot, entry->root_old_slot),
							root_row(entry, newslot, entry->root_new_slot), entry->columns);
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			if (oldslot == NULL)
				elog(ERROR, "delete on table \"%s\" has no old key",
					 RelationGetRelationName(rel));
			/* the key tuple carries the delete's version and base */
			if (data->have_delete_base &&
				data->delete_base.relid == entry->relid)
			{
				oldslot->tts_values[entry->version_att - 1] =
					Int64GetDatum(data->delete_base.version);
				oldslot->tts_isnull[entry->version_att - 1] = false;
				oldslot->tts_values[entry->base_att - 1] =
					Int64GetDatum(data->delete_base.base_version);
				oldslot->tts_isnull[entry->base_att - 1] = false;
				oldslot->tts_values[entry->config_att - 1] =
					Int64GetDatum(data->delete_base.config_version);
				oldslot->tts_isnull[entry->config_att - 1] = false;
				if (entry->seen_att > 0)
				{
					oldslot->tts_values[entry->seen_att - 1] = PointerGetDatum(data->delete_seen);
					oldslot->tts_isnull[entry->seen_att - 1] = false;
				}
				pending_config(data, entry, rel, oldslot, change->lsn);
			}
			data->have_delete_base = false;
			cr_write_delete(out, rel, root_row(entry, oldslot, entry->root_old_slot),
							entry->columns);
			break;
		default:
			elog(ERROR, "unexpected change action %d", (int) change->action);
	}
	MemoryContextSwitchTo(oldctx);
	MemoryContextReset(data->change_context);
	if (partition != NULL)
		RelationClose(rel);
	pending_write(ctx, false);
}

static void
cr_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		   XLogRecPtr message_lsn, bool transactional, const char *prefix,
		   Size message_size, const char *message)
{
	CrDecodingData *data = ctx->output_plugin_private;

	if (strncmp(prefix, CR_MESSAGE_PREFIX_ROOT, strlen(CR_MESSAGE_PREFIX_ROOT)) != 0)
		return;

	/* only what cosmosrep wrote on this server goes on (signing.c) */
	if (!cr_message_authentic(prefix, message, message_size, transactional))
	{
		ereport(LOG,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cosmosrep skipped a logical message with prefix \"%s\" that cosmosrep did not write",
						prefix),
				 errdetail("The message at %X/%X was written with pg_logical_emit_message() or altered; it is not sent to other regions.",
						   LSN_FORMAT_ARGS(message_lsn))));
		return;
	}
	message_size -= CR_MESSAGE_TAG_SIZE;

	if (!transactional)
	{
		/*
		 * Decoded at its place in the WAL, between transactions: a peer
		 * that receives it has received every transaction committed
		 * before it.
		 */
		if (strcmp(prefix, CR_STABLE_MESSAGE_PREFIX) == 0)
		{
			Assert(data->pending.len == 0);
			cr_write_message(&data->pending, message_lsn, false, prefix,
							 message_size, message);
			pending_write(ctx, true);
		}
		return;
	}

	if (strcmp(prefix, CR_DELETE_BASE_PREFIX) == 0)
	{
		Size		seen_size = message_size - sizeof(CrDeleteBase);

		if (message_size < sizeof(CrDeleteBase) || seen_size % sizeof(int64) != 0)
			elog(ERROR, "unexpected size %zu of message \"%s\"",
				 message_size, prefix);
		memcpy(&data->delete_base, message, sizeof(CrDeleteBase));
		if (data->delete_seen != NULL)
			pfree(data->delete_seen);
		data->delete_seen = MemoryContextAlloc(ctx->context, VARHDRSZ + seen_size);
		SET_VARSIZE(data->delete_seen, VARHDRSZ + seen_size);
		memcpy(VARDATA(data->delete_seen), message + sizeof(CrDeleteBase), seen_size);
		data->have_delete_base = true;
	}
	else if (strcmp(prefix, CR_DDL_MESSAGE_PREFIX) == 0 ||
			 strcmp(prefix, CR_TRUNCATE_MESSAGE_PREFIX) == 0 ||
			 strcmp(prefix, CR_ROWS_MESSAGE_PREFIX) == 0 ||
			 strcmp(prefix, CR_FAILOVER_MESSAGE_PREFIX) == 0 ||
			 strcmp(prefix, CR_RESOLVED_MESSAGE_PREFIX) == 0 ||
			 strcmp(prefix, CR_WRITES_MESSAGE_PREFIX) == 0 ||
			 strcmp(prefix, CR_STATEMENT_MESSAGE_PREFIX) == 0)
	{
		stream_set_xid(ctx, txn->xid);
		cr_write_message(pending_begin(ctx, txn), message_lsn, true, prefix,
						 message_size, message);
		pending_write(ctx, false);
	}
}

/*
 * A block of a streamed transaction starts: the delete message the last
 * block ended with comes back.  STREAM START is written with the block's
 * first message (pending_begin), so a block with nothing to send sends
 * nothing.
 */
static void
cr_stream_start(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	CrDecodingData *data = ctx->output_plugin_private;
	CrStreamTxn *st = txn->output_plugin_private;

	Assert(data->pending.len == 0 && !data->in_stream);
	if (st == NULL)
	{
		st = MemoryContextAllocZero(ctx->context, sizeof(CrStreamTxn));
		txn->output_plugin_private = st;
	}
	data->in_stream = true;
	data->block_started = false;
	data->stream_xid = txn->xid;
	data->have_delete_base = st->have_delete_base;
	data->delete_base = st->delete_base;
	data->delete_seen = st->delete_seen;
	st->delete_seen = NULL;
}

/*
 * A block ends: its messages are written, then STREAM STOP in a CopyData
 * message of its own (protocol.h); the delete message not yet used waits
 * in the transaction's state.
 */
static void
cr_stream_stop(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	CrDecodingData *data = ctx->output_plugin_private;
	CrStreamTxn *st = txn->output_plugin_private;

	if (data->block_started)
	{
		pending_write(ctx, true);
		cr_write_stream_stop(&data->pending);
		pending_write(ctx, true);
	}
	st->have_delete_base = data->have_delete_base;
	st->delete_base = data->delete_base;
	st->delete_seen = data->delete_seen;
	data->delete_seen = NULL;
	data->have_delete_base = false;
	data->in_stream = false;
	data->block_started = false;
	cr_write_xid = InvalidTransactionId;
}

/* free a streamed transaction's state once it ended */
static void
stream_txn_free(ReorderBufferTXN *txn)
{
	CrStreamTxn *st = txn->output_plugin_private;

	if (st == NULL)
		return;
	if (st->delete_seen != NULL)
		pfree(st->delete_seen);
	pfree(st);
	txn->output_plugin_private = NULL;
}

/*
 * A streamed transaction, or one of its subtransactions, aborted (or, with
 * an invalid abort_lsn, was found cut short by a crash of this server):
 * the receiver discards what it got of it, if it got anything.
 */
static void
cr_stream_abort(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				XLogRecPtr abort_lsn)
{
	CrDecodingData *data = ctx->output_plugin_private;
	ReorderBufferTXN *top = txn->toptxn ? txn->toptxn : txn;
	CrStreamTxn *st = top->output_plugin_private;

	if (st != NULL && st->sent)
	{
		cr_write_stream_abort(&data->pending, top->xid, txn->xid);
		pending_write(ctx, true);
	}
	if (top == txn)
		stream_txn_free(txn);
}

/*
 * A streamed transaction committed, after its last block: STREAM COMMIT,
 * which the receiver commits as it would a COMMIT.  One of which no block
 * held anything of ours sends nothing.
 */
static void
cr_stream_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				 XLogRecPtr commit_lsn)
{
	CrDecodingData *data = ctx->output_plugin_private;
	CrStreamTxn *st = txn->output_plugin_private;

	if (st != NULL && st->sent)
	{
		cr_write_stream_commit(&data->pending, txn, commit_lsn);
		pending_write(ctx, true);
	}
	else
		OutputPluginUpdateProgress(ctx, true);
	stream_txn_free(txn);
}

/* core's TRUNCATE is not sent (the truncate trigger's message is) */
static void
cr_stream_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				   int nrelations, Relation relations[],
				   ReorderBufferChange *change)
{
}
