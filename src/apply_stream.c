/*-------------------------------------------------------------------------
 *
 * apply_stream.c
 *	  Streamed transactions at the apply worker: the one applied as it
 *	  arrives, and the routing of every CopyData message while it is open.
 *
 * NOTES
 *	  The apply worker applies one streamed transaction at a time as it
 *	  arrives (apply_worker.c, docs/design.md "Streamed transactions"), in
 *	  a local transaction of its own, each of its subtransactions in an
 *	  internal subtransaction.  Everything else that arrives meanwhile goes
 *	  to the queue, and another streamed transaction to a spill of its own
 *	  (apply_spill.c); at STREAM COMMIT the queue follows the streamed
 *	  transaction in the same local transaction, and a spilled one is
 *	  applied whole.  A streamed transaction that cannot be applied as it
 *	  arrives (a truncate or a change of columns while the queue holds
 *	  anything, or any failure) makes the worker stop; the next one spills
 *	  it (cr_stream_spill_after_failure).
 *
 * IDENTIFICATION
 *	  src/apply_stream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "libpq/pqformat.h"
#include "replication/logicalproto.h"
#include "utils/memutils.h"

#include "apply_internal.h"
#include "protocol.h"

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
