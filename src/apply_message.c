/*-------------------------------------------------------------------------
 *
 * apply_message.c
 *	  The MESSAGEs of the apply stream: what each prefix does here.
 *
 * NOTES
 *	  Besides row changes, a region sends logical decoding MESSAGEs: a
 *	  truncate, the rows of a table it enabled, failover and write-region
 *	  changes, conflicts resolved, DDL of multi-region tables (enable,
 *	  policy, disable; and schema changes as statements), and its stable
 *	  version.  message_kinds says, by prefix, whether each is
 *	  transactional and what applies it; cr_handle_message refuses a
 *	  message out of place or of an unknown kind.
 *
 *	  The content of each is read by the file that owns its subject
 *	  (ddl.c, failover.c, feed.c, tables.c) or here (truncate, rows, stable
 *	  version), inside the local transaction the worker opened
 *	  (apply_worker.c), like a statement.
 *
 *	  Spill files (the end of this file): what the worker keeps of the
 *	  stream to apply later while it applies a streamed transaction as it
 *	  arrives.
 *
 *	  The apply worker applies one streamed transaction at a time as it
 *	  arrives (apply_worker.c, docs/design.md "Streamed transactions").
 *	  What it cannot apply yet is kept here, as the CopyData messages it
 *	  came in, in temporary files (BufFile: memory up to a block, then
 *	  disk), one record per CopyData message:
 *
 *	  - the queue: every CopyData message that arrives while a streamed
 *		transaction is applied and does not belong to it (whole
 *		transactions, stable versions, the STREAM COMMIT of another
 *		streamed transaction), in arrival order, applied once the
 *		streamed transaction commits or aborts;
 *	  - one spill per other streamed transaction (found by xid): the
 *		blocks of a streamed transaction that began while another was
 *		applied (or whose direct apply failed), applied whole at its
 *		STREAM COMMIT, in commit order, like a transaction decoded whole.
 *
 *	  The output plugin starts a CopyData message whenever the
 *	  subtransaction of the messages changes (protocol.h), so each record
 *	  of a spill belongs to one subtransaction.  A subtransaction's abort
 *	  discards every record from its first on: in the stream, what follows
 *	  the first change of a subtransaction until its abort belongs to it
 *	  or to subtransactions inside it, and its abort comes before anything
 *	  after.  Discarded records stay in the file and are skipped when it is
 *	  read.
 *
 *	  Memory: everything here lives in CrApplyContext until the spill is
 *	  closed; the files are temporary files of the worker, removed when it
 *	  closes them or exits (a worker that stops loses its spills with its
 *	  open transaction, and the peer sends both again).
 *
 * IDENTIFICATION
 *	  src/apply_message.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq/pqformat.h"
#include "nodes/makefuncs.h"
#include "storage/buffile.h"
#include "storage/lmgr.h"
#include "replication/logicalproto.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "apply_internal.h"
#include "catalog.h"
#include "conflict.h"
#include "ddl.h"
#include "ddl_names.h"
#include "failover.h"
#include "feed.h"
#include "hlc.h"
#include "names.h"
#include "protocol.h"
#include "run_as.h"
#include "tables.h"
#include "tombstone.h"

/*
 * A truncate at version V made in the peer region: every row older than V
 * goes, rows newer than V (written concurrently, in any region) stay, and
 * V becomes the table's horizon here, so that older rows arriving later
 * are not applied.  Runs as the table's owner, like every change.
 */
static void
apply_truncate(const char *content, Size size)
{
	const char *cursor = content;
	const char *end = content + size;
	const char *nspname = cr_message_name_field(&cursor, end, "truncate");
	const char *relname = cr_message_name_field(&cursor, end, "truncate");
	int64		version = cr_message_int_field(&cursor, end, "truncate", 1, PG_INT64_MAX);
	Oid			relid;
	CrUserContext user;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int			rc;

	cr_message_end(cursor, end, "truncate");
	cr_hlc_observe(version);

	cr_exec_close_all();
	cr_apply_check_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	relid = RangeVarGetRelid(makeRangeVar(pstrdup(nspname), pstrdup(relname), -1),
							 RowExclusiveLock, true);
	if (!OidIsValid(relid))
	{
		/* renamed here by a schema change the peer has not had yet */
		relid = cr_ddl_former_table(nspname, relname);
		if (OidIsValid(relid))
			LockRelationOid(relid, RowExclusiveLock);
	}
	if (!OidIsValid(relid) || cr_get_table_config(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" truncated in region \"%s\" is not multi-region in this region",
						nspname, relname, CrPeerName),
				 errhint("Create the table and enable it in every region; replication from \"%s\" resumes then.",
						 CrPeerName)));

	cr_switch_to_owner(cr_relation_owner(relid), &user);
	values[0] = Int64GetDatum(version);
	SPI_connect();
	/* a partitioned table's rows are in its partitions: no ONLY */
	rc = SPI_execute_with_args(psprintf("DELETE FROM %s%s WHERE %s OPERATOR(pg_catalog.<) $1",
										get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ?
										"" : "ONLY ",
										quote_qualified_identifier(nspname, relname),
										CR_VERSION_COLUMN),
							   1, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not apply truncate: %s", SPI_result_code_string(rc));
	cr_changes_in_transaction += SPI_processed;
	SPI_finish();
	cr_restore_user(&user);

	cr_tombstone_truncate(relid, version);
	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * The rows a table held when the peer enabled it: RELATION and INSERT
 * messages inside one MESSAGE, applied like any remote insert.
 */
static void
apply_rows(const char *content, Size size)
{
	StringInfoData inner;

	inner.data = (char *) content;
	inner.len = size;
	inner.maxlen = size;
	inner.cursor = 0;
	while (inner.cursor < inner.len)
	{
		char		action = inner.data[inner.cursor];

		if (action != LOGICAL_REP_MSG_RELATION && action != LOGICAL_REP_MSG_INSERT)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid message type \"%c\" in the rows of an enabled table from region \"%s\"",
							action, CrPeerName)));
		cr_apply_dispatch(&inner);
	}
}

/* a message other than a row change, applied like a statement */
static void
statement_begin(void)
{
	cr_apply_check_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
statement_end(void)
{
	PopActiveSnapshot();
	CommandCounterIncrement();
}

static void
apply_failover_message(const CrMessage *msg)
{
	statement_begin();
	cr_failover_apply_message(msg->content, msg->size);
	statement_end();
}

static void
apply_writes_message(const CrMessage *msg)
{
	statement_begin();
	cr_write_regions_apply_message(msg->content, msg->size);
	statement_end();
}

static void
apply_resolved_message(const CrMessage *msg)
{
	/* entries this group recorded are marked too */
	cr_flush_conflicts();
	statement_begin();
	cr_feed_apply_resolved(msg->content, msg->size, CrPeerName);
	statement_end();
}

/*
 * A peer's stable version.  Between transactions: it holds here once what
 * came before it is committed, at once or when the open group commits.
 */
static void
apply_stable_message(const CrMessage *msg)
{
	const char *cursor = msg->content;
	const char *end = msg->content + msg->size;

	int64		version = cr_message_int_field(&cursor, end, "stable version",
												   0, PG_INT64_MAX);

	cr_message_end(cursor, end, "stable version");
	cr_apply_stable_version(version);
}

static void
apply_ddl_message(const CrMessage *msg)
{
	cr_exec_close_all();
	statement_begin();
	cr_table_apply_ddl(msg->content, msg->size, CrPeerName);
	statement_end();
}

/* a schema change of a multi-region table, as its statement (ddl.c) */
static void
apply_statement_message(const CrMessage *msg)
{
	cr_exec_close_all();
	statement_begin();
	cr_ddl_apply_statement(msg->content, msg->size, CrPeerName);
	statement_end();
}

static void
apply_truncate_message(const CrMessage *msg)
{
	apply_truncate(msg->content, msg->size);
}

static void
apply_rows_message(const CrMessage *msg)
{
	apply_rows(msg->content, msg->size);
}

/*
 * The MESSAGEs of the stream, by prefix: whether each is transactional
 * (inside BEGIN and COMMIT) and what applies it.
 */
static const struct
{
	const char *prefix;
	bool		transactional;
	void		(*apply) (const CrMessage *msg);
}			message_kinds[] =
{
	{CR_TRUNCATE_MESSAGE_PREFIX, true, apply_truncate_message},
	{CR_ROWS_MESSAGE_PREFIX, true, apply_rows_message},
	{CR_FAILOVER_MESSAGE_PREFIX, true, apply_failover_message},
	{CR_WRITES_MESSAGE_PREFIX, true, apply_writes_message},
	{CR_RESOLVED_MESSAGE_PREFIX, true, apply_resolved_message},
	{CR_DDL_MESSAGE_PREFIX, true, apply_ddl_message},
	{CR_STATEMENT_MESSAGE_PREFIX, true, apply_statement_message},
	{CR_STABLE_MESSAGE_PREFIX, false, apply_stable_message},
};

void
cr_handle_message(StringInfo s)
{
	CrMessage	msg;

	cr_read_message(s, &msg);
	for (int i = 0; i < lengthof(message_kinds); i++)
	{
		if (strcmp(msg.prefix, message_kinds[i].prefix) != 0)
			continue;
		if (msg.transactional != message_kinds[i].transactional ||
			msg.transactional != cr_in_remote_transaction)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("message \"%s\" from region \"%s\" is out of place",
							msg.prefix, CrPeerName),
					 errdetail("It is %s and arrived %s a transaction.",
							   msg.transactional ? "transactional" : "not transactional",
							   cr_in_remote_transaction ? "inside" : "outside")));
		message_kinds[i].apply(&msg);
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("unrecognized message \"%s\" from region \"%s\"",
					msg.prefix, CrPeerName)));
}

/* ----------------------------------------------------------------
 * Streamed transactions (apply_worker.c's NOTES, docs/design.md)
 * ----------------------------------------------------------------
 */

static TransactionId direct_xid = InvalidTransactionId; /* applied as it
														 * arrives */
static List *direct_subxids = NIL;	/* its subtransactions with an internal
									 * subtransaction here, outermost first */
static bool in_block = false;	/* between STREAM START and STREAM STOP */
static CrSpill *block_spill = NULL; /* the block's spill, NULL if direct */
static TransactionId spill_after_failure = InvalidTransactionId;
static StringInfoData spill_buf;	/* records read back, in CrApplyContext */

static void stream_route(StringInfo s);
static bool is_truncate_message(StringInfo s);

/* the streamed transaction applied as it arrives, or InvalidTransactionId */
TransactionId
cr_stream_direct_xid(void)
{
	return direct_xid;
}

/* spill streamed transaction xid, whose direct apply failed, next time */
void
cr_stream_spill_after_failure(TransactionId xid)
{
	spill_after_failure = xid;
}

/* a CopyData message of the stream, s at its first protocol message */
void
cr_stream_route(StringInfo s)
{
	if (spill_buf.data == NULL)
	{
		MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);

		initStringInfo(&spill_buf);
		MemoryContextSwitchTo(oldctx);
	}
	stream_route(s);
}

/* the protocol messages of a CopyData message, applied one by one */
static void
apply_messages(StringInfo s)
{
	while (s->cursor < s->len)
	{
		cr_apply_dispatch(s);
		MemoryContextSwitchTo(CrApplyMessageContext);
		MemoryContextReset(CrApplyMessageContext);
	}
}

/*
 * A change of subtransaction xid of the streamed transaction applied as it
 * arrives: a subtransaction not seen before begins an internal
 * subtransaction inside the innermost one, so that its abort rolls back
 * what followed its first change.  The tables close first, so that what
 * each level opens belongs to its resource owner.
 */
static void
direct_subtransaction(TransactionId xid)
{
	MemoryContext oldctx;

	if (xid == direct_xid || list_member_oid(direct_subxids, (Oid) xid))
		return;
	cr_exec_close_all();
	BeginInternalSubTransaction(NULL);
	oldctx = MemoryContextSwitchTo(CrApplyContext);
	direct_subxids = lappend_oid(direct_subxids, (Oid) xid);
	MemoryContextSwitchTo(oldctx);
	MemoryContextSwitchTo(CrApplyMessageContext);
}

/*
 * The messages of a block of a streamed transaction, which carry their
 * (sub)transaction's xid after their type: applied with the xid taken out
 * (the type is written over its last byte, so that the handlers read the
 * message as any other).  direct: of the transaction applied as it
 * arrives, whose subtransactions get their own (else a spilled one, read
 * back whole at its commit).
 */
static void
apply_block_messages(StringInfo s, bool direct)
{
	while (s->cursor < s->len)
	{
		char		action = pq_getmsgbyte(s);
		TransactionId xid;

		if (action == LOGICAL_REP_MSG_STREAM_START)
		{
			(void) pq_getmsgint(s, 4);
			(void) pq_getmsgbyte(s);
			continue;
		}
		xid = pq_getmsgint(s, 4);
		if (direct)
			direct_subtransaction(xid);

		/*
		 * A table's columns that change in the transaction applied as it
		 * arrives would be the columns of what the queue holds, sent
		 * before: that transaction is applied at its commit instead, by
		 * the next worker (apply_worker.c records the failure).
		 */
		if (direct && action == LOGICAL_REP_MSG_RELATION &&
			!cr_spill_queue_empty() && cr_relation_changes(s))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("streamed transaction %u of region \"%s\" changes the columns of a table while transactions it must follow wait",
							direct_xid, CrPeerName),
					 errdetail("It is applied at its commit instead.")));

		/*
		 * So is one that truncates a table: the rows that the queue holds
		 * for it are older than the truncate and would count as conflicts
		 * with it (the truncate horizon has no history of writes seen).
		 */
		if (direct && action == LOGICAL_REP_MSG_MESSAGE &&
			!cr_spill_queue_empty() && is_truncate_message(s))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("streamed transaction %u of region \"%s\" truncates a table while transactions it must follow wait",
							direct_xid, CrPeerName),
					 errdetail("It is applied at its commit instead.")));
		s->cursor--;
		s->data[s->cursor] = action;
		cr_apply_dispatch(s);
		MemoryContextSwitchTo(CrApplyMessageContext);
		MemoryContextReset(CrApplyMessageContext);
	}
}

/* whether the MESSAGE at s (its type byte consumed) is a truncate */
static bool
is_truncate_message(StringInfo s)
{
	StringInfoData peek = *s;

	(void) pq_getmsgbyte(&peek);	/* flags */
	(void) pq_getmsgint64(&peek);	/* lsn */
	return strcmp(pq_getmsgstring(&peek), CR_TRUNCATE_MESSAGE_PREFIX) == 0;
}

/*
 * The (sub)transaction of a block's CopyData message: the xid of its
 * first message after any STREAM START.
 */
static TransactionId
block_record_xid(StringInfo s)
{
	StringInfoData peek = *s;

	if (pq_getmsgbyte(&peek) == LOGICAL_REP_MSG_STREAM_START)
	{
		TransactionId xid = pq_getmsgint(&peek, 4);

		(void) pq_getmsgbyte(&peek);
		if (peek.cursor >= peek.len)
			return xid;
		(void) pq_getmsgbyte(&peek);
	}
	return pq_getmsgint(&peek, 4);
}

/*
 * The first block of streamed transaction xid arrives and nothing else is
 * applied as it arrives: it will be.  The open group commits first (an
 * abort must not take it along), and the transaction is the only remote
 * one in its local transaction until its end.
 */
static void
direct_begin(TransactionId xid)
{
	cr_apply_group_commit();
	Assert(cr_apply_group_empty() && !cr_in_remote_transaction);
	/* a failure counts against the streamed transaction (apply_worker.c) */
	cr_apply_remote_begin(CR_STREAM_FAILURE_KEY(xid));
	direct_xid = xid;
	direct_subxids = NIL;
}

/* the streamed transaction applied as it arrives is over */
static void
direct_end(void)
{
	list_free(direct_subxids);
	direct_subxids = NIL;
	direct_xid = InvalidTransactionId;
}

/*
 * Apply what waited in the queue while a streamed transaction was applied,
 * in arrival order, in the open local transaction if the streamed one
 * committed (none commits before all of it is applied), else in a new one.
 */
static void
replay_queue(void)
{
	CrSpill    *queue = cr_spill_queue_take();

	if (queue != NULL)
	{
		cr_apply_replaying = true;
		while (cr_spill_read(queue, &spill_buf))
		{
			stream_route(&spill_buf);
			cr_apply_keep_alive();
		}
		cr_spill_close(queue);
	}
	cr_apply_replaying = false;
}

/*
 * STREAM COMMIT of a streamed transaction that was spilled: read back and
 * applied whole, like a transaction decoded whole, in its place in commit
 * order.  Not in the open group, unless the queue is applied.
 */
static void
apply_spilled(TransactionId xid, LogicalRepCommitData *commit)
{
	CrSpill    *spill = cr_spill_forget(xid);

	cr_apply_group_commit();
	cr_apply_remote_begin(commit->commit_lsn);
	if (spill != NULL)
	{
		while (cr_spill_read(spill, &spill_buf))
		{
			apply_block_messages(&spill_buf, false);
			cr_apply_keep_alive();
		}
		cr_spill_close(spill);
	}
	cr_apply_remote_commit(commit->end_lsn, commit->committime);
	cr_apply_group_commit();
}

/*
 * STREAM COMMIT or STREAM ABORT (each a CopyData message of its own).  Of
 * the transaction applied as it arrives: its subtransactions end, then
 * the queue is applied, and the local transaction commits, or after an
 * abort of the whole transaction, rolls back before the queue is applied.
 * Of a spilled one: an abort discards it at once, a commit is applied in
 * its place (in the queue, while one is applied as it arrives).
 */
static void
stream_end(StringInfo s)
{
	char		action = s->data[s->cursor];
	StringInfoData peek = *s;
	TransactionId xid;
	TransactionId subxid;
	LogicalRepCommitData commit;

	(void) pq_getmsgbyte(&peek);
	if (action == LOGICAL_REP_MSG_STREAM_ABORT)
	{
		logicalrep_read_stream_abort(&peek, &xid, &subxid);
		if (xid != direct_xid)
		{
			CrSpill    *spill = cr_spill_lookup(xid, false);

			if (spill != NULL && subxid == xid)
				cr_spill_close(cr_spill_forget(xid));
			else if (spill != NULL)
				cr_spill_abort_sub(spill, subxid);
			return;
		}
		if (subxid != xid)
		{
			int			keep = 0;
			ListCell   *lc;

			/* roll back its level and those inside it */
			foreach(lc, direct_subxids)
			{
				if ((TransactionId) lfirst_oid(lc) == subxid)
					break;
				keep++;
			}
			if (keep == list_length(direct_subxids))
				return;			/* none of it was applied */
			cr_exec_close_all();
			while (list_length(direct_subxids) > keep)
			{
				RollbackAndReleaseCurrentSubTransaction();
				direct_subxids = list_truncate(direct_subxids,
											   list_length(direct_subxids) - 1);
			}
			MemoryContextSwitchTo(CrApplyMessageContext);
			return;
		}
		ereport(DEBUG1,
				(errmsg("cosmosrep discards streamed transaction %u of region \"%s\"",
						xid, CrPeerName)));
		cr_exec_close_all();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(CrApplyMessageContext);
		cr_changes_in_transaction = 0;
		cr_conflicts_in_transaction = 0;
		cr_local_writes_in_transaction = false;
		cr_in_remote_transaction = false;
		direct_end();
		replay_queue();
		return;
	}

	xid = logicalrep_read_stream_commit(&peek, &commit);
	if (xid != direct_xid)
	{
		if (TransactionIdIsValid(direct_xid))
			cr_spill_queue_append(s->data + s->cursor, s->len - s->cursor);
		else
			apply_spilled(xid, &commit);
		return;
	}
	/* the tables close first: a subtransaction's resource owner goes */
	cr_exec_close_all();
	while (direct_subxids != NIL)
	{
		ReleaseCurrentSubTransaction();
		direct_subxids = list_truncate(direct_subxids,
									   list_length(direct_subxids) - 1);
	}
	MemoryContextSwitchTo(CrApplyMessageContext);
	direct_end();
	/* nothing commits before the queue is applied too */
	cr_apply_replaying = true;
	cr_apply_remote_commit(commit.end_lsn, commit.committime);
	replay_queue();
	cr_apply_group_commit();
}

/*
 * The first CopyData message of a block (it starts with STREAM START):
 * the block belongs to the transaction applied as it arrives, to a
 * spilled one, or begins one of either kind.
 */
static void
block_start(StringInfo s)
{
	StringInfoData peek = *s;
	TransactionId xid;

	(void) pq_getmsgbyte(&peek);
	xid = pq_getmsgint(&peek, 4);
	in_block = true;
	block_spill = NULL;
	if (xid == direct_xid)
		return;
	block_spill = cr_spill_lookup(xid, false);
	if (block_spill != NULL)
		return;
	if (TransactionIdIsValid(direct_xid) || xid == spill_after_failure)
		block_spill = cr_spill_lookup(xid, true);
	else
		direct_begin(xid);
}

/*
 * A CopyData message of the stream (s at its first protocol message):
 * applied now, or kept to apply later (see the NOTES).
 */
static void
stream_route(StringInfo s)
{
	const char *data = s->data + s->cursor;
	int			len = s->len - s->cursor;

	if (len <= 0)
		return;
	if (!in_block && data[0] == LOGICAL_REP_MSG_STREAM_START)
		block_start(s);
	if (in_block)
	{
		if (len == 1 && data[0] == LOGICAL_REP_MSG_STREAM_STOP)
		{
			in_block = false;
			block_spill = NULL;
		}
		else if (block_spill != NULL)
			cr_spill_append(block_spill, block_record_xid(s), data, len);
		else
			apply_block_messages(s, true);
		return;
	}
	if (data[0] == LOGICAL_REP_MSG_STREAM_COMMIT ||
		data[0] == LOGICAL_REP_MSG_STREAM_ABORT)
	{
		stream_end(s);
		return;
	}
	if (TransactionIdIsValid(direct_xid))
	{
		cr_spill_queue_append(data, len);
		return;
	}

	/*
	 * A large transaction does not join the open group: the group's small
	 * transactions would wait for all of its chunks.
	 */
	if (!cr_in_remote_transaction && len >= CR_WRITE_CHUNK)
		cr_apply_group_commit();
	apply_messages(s);
}

/* ----------------------------------------------------------------
 * Spill files of streamed transactions (see the NOTES)
 * ----------------------------------------------------------------
 */

/* a range of a spill's records that a subtransaction's abort discarded */
typedef struct SpillRange
{
	int64		start;
	int64		end;
} SpillRange;

/* where a subtransaction's first record is */
typedef struct SpillSub
{
	TransactionId xid;
	int64		start;
} SpillSub;

struct CrSpill
{
	TransactionId xid;			/* hash key; InvalidTransactionId: the queue */
	BufFile    *file;
	int64		written;		/* bytes written */
	int64		read;			/* bytes read, once reading */
	bool		reading;
	List	   *subs;			/* of SpillSub, in the order they began */
	List	   *discarded;		/* of SpillRange */
};

/* an entry of the table of spilled streamed transactions */
typedef struct SpillEntry
{
	TransactionId xid;			/* hash key */
	CrSpill    *spill;
} SpillEntry;

static HTAB *spills = NULL;
static CrSpill *queue = NULL;

static CrSpill *
spill_new(TransactionId xid)
{
	MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
	CrSpill    *sp = palloc0(sizeof(CrSpill));

	sp->xid = xid;
	/* not tied to a transaction: a spill outlives local commits */
	sp->file = BufFileCreateTemp(true);
	MemoryContextSwitchTo(oldctx);
	return sp;
}

/* append a record: a CopyData message's protocol messages */
static void
spill_write(CrSpill *sp, const char *data, int len)
{
	int32		reclen = len;

	Assert(!sp->reading);
	BufFileWrite(sp->file, &reclen, sizeof(reclen));
	BufFileWrite(sp->file, unconstify(char *, data), len);
	sp->written += sizeof(reclen) + len;
}

/* keep a CopyData message that arrived while a streamed one is applied */
void
cr_spill_queue_append(const char *data, int len)
{
	if (queue == NULL)
		queue = spill_new(InvalidTransactionId);
	spill_write(queue, data, len);
}

/* whether nothing waits in the queue */
bool
cr_spill_queue_empty(void)
{
	return queue == NULL;
}

/*
 * The queue, to be read and closed by the caller; a new one starts empty.
 * NULL if nothing was queued.
 */
CrSpill *
cr_spill_queue_take(void)
{
	CrSpill    *q = queue;

	queue = NULL;
	return q;
}

/* the spill of streamed transaction xid, made if create, or NULL */
CrSpill *
cr_spill_lookup(TransactionId xid, bool create)
{
	bool		found;
	SpillEntry *entry;

	if (spills == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(TransactionId);
		ctl.entrysize = sizeof(SpillEntry);
		ctl.hcxt = CrApplyContext;
		spills = hash_create("cosmosrep spilled transactions", 16, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(spills, &xid, create ? HASH_ENTER : HASH_FIND, &found);
	if (entry == NULL)
		return NULL;
	if (!found)
		entry->spill = spill_new(xid);
	return entry->spill;
}

/*
 * Take streamed transaction xid's spill out of the table (to be read and
 * closed, or closed, by the caller); NULL if none.
 */
CrSpill *
cr_spill_forget(TransactionId xid)
{
	CrSpill    *sp = cr_spill_lookup(xid, false);

	if (sp != NULL)
		hash_search(spills, &xid, HASH_REMOVE, NULL);
	return sp;
}

/* append a record of subtransaction subxid (or the transaction itself) */
void
cr_spill_append(CrSpill *sp, TransactionId subxid, const char *data, int len)
{
	ListCell   *lc;
	bool		known = subxid == sp->xid;

	foreach(lc, sp->subs)
		if (((SpillSub *) lfirst(lc))->xid == subxid)
			known = true;
	if (!known)
	{
		MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
		SpillSub   *sub = palloc(sizeof(SpillSub));

		sub->xid = subxid;
		sub->start = sp->written;
		sp->subs = lappend(sp->subs, sub);
		MemoryContextSwitchTo(oldctx);
	}
	spill_write(sp, data, len);
}

/*
 * Subtransaction subxid of sp's transaction aborted: discard its records
 * and those of every subtransaction that began after it (see the NOTES).
 */
void
cr_spill_abort_sub(CrSpill *sp, TransactionId subxid)
{
	int			i = 0;
	ListCell   *lc;

	foreach(lc, sp->subs)
	{
		SpillSub   *sub = lfirst(lc);

		if (sub->xid == subxid)
		{
			MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
			SpillRange *range = palloc(sizeof(SpillRange));

			range->start = sub->start;
			range->end = sp->written;
			sp->discarded = lappend(sp->discarded, range);
			sp->subs = list_truncate(sp->subs, i);
			MemoryContextSwitchTo(oldctx);
			return;
		}
		i++;
	}
}

/*
 * Read sp's next record that no abort discarded into buf (reset first);
 * false at the end.  The first call ends the writing.
 */
bool
cr_spill_read(CrSpill *sp, StringInfo buf)
{
	for (;;)
	{
		int32		reclen;
		int64		start = sp->read;
		bool		discarded = false;
		ListCell   *lc;

		if (!sp->reading)
		{
			if (BufFileSeek(sp->file, 0, 0, SEEK_SET) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not rewind a cosmosrep spill file: %m")));
			sp->reading = true;
		}
		if (sp->read >= sp->written)
			return false;
		if (BufFileRead(sp->file, &reclen, sizeof(reclen)) != sizeof(reclen))
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a cosmosrep spill file: %m")));
		resetStringInfo(buf);
		enlargeStringInfo(buf, reclen);
		if (BufFileRead(sp->file, buf->data, reclen) != reclen)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a cosmosrep spill file: %m")));
		buf->len = reclen;
		buf->data[reclen] = '\0';
		buf->cursor = 0;
		sp->read += sizeof(reclen) + reclen;
		foreach(lc, sp->discarded)
		{
			SpillRange *range = lfirst(lc);

			if (start >= range->start && start < range->end)
				discarded = true;
		}
		if (!discarded)
			return true;
	}
}

/* close a spill taken out of the table or the queue, and free it */
void
cr_spill_close(CrSpill *sp)
{
	if (sp == NULL)
		return;
	BufFileClose(sp->file);
	list_free_deep(sp->subs);
	list_free_deep(sp->discarded);
	pfree(sp);
}
