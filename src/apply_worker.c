/*-------------------------------------------------------------------------
 *
 * apply_worker.c
 *	  The apply worker: streams one peer region's changes and applies them.
 *
 * NOTES
 *	  One apply worker runs per (database, peer region).  It connects to
 *	  the peer in replication mode and runs START_REPLICATION on the slot
 *	  "cr_<peer>_<local>" from the position stored in the replication origin
 *	  "cosmosrep_<peer>".  Each remote transaction is applied whole inside
 *	  one local transaction that commits with replorigin_session_origin_lsn
 *	  set to the remote commit's end, so the origin advances atomically with
 *	  the data: after a crash of either side the stream restarts exactly
 *	  after the last applied transaction (exactly once).  Consecutive
 *	  remote transactions share one local transaction, a group (see
 *	  handle_commit); while catching up a backlog the worker reads the
 *	  stream a millisecond at a time, so that groups fill (see
 *	  BACKLOG_AGE_MS).
 *
 *	  This file owns the worker's life: the connection, the stream loop,
 *	  BEGIN and COMMIT and the groups, feedback, and what the worker
 *	  reports in its peer status (through launcher.c's functions).  What
 *	  each change does is in cr_apply_change.c and apply_message.c, the map
 *	  of the peer's relations in apply_relation.c.
 *
 *	  Streamed transactions (docs/design.md, "Streamed transactions"): the
 *	  worker asks for them (START_REPLICATION option streaming), and
 *	  applies one at a time as its blocks arrive, alone in a local
 *	  transaction of its own (the open group commits first), each of its
 *	  subtransactions in an internal subtransaction, so that an abort of
 *	  either is a rollback.  What arrives meanwhile and does not belong to
 *	  it waits in the queue (apply_spill.c): whole transactions are
 *	  applied after it, in the same local transaction when it commits,
 *	  which commits with the origin's progress at its end; another
 *	  streamed transaction is spilled and applied whole at its commit.
 *	  A failure while a streamed transaction is applied as it arrives
 *	  makes the next worker spill it and apply it at its commit.
 *
 *	  Feedback: every second, and when the peer asks, the worker reports
 *	  as flushed the end of the last applied group whose local commit the
 *	  WAL writer has flushed (or, once everything applied is flushed and no
 *	  transaction is open, everything received), so the peer's slot
 *	  retains what is not yet safe here.
 *
 *	  Memory: CrApplyContext lives as long as the worker (relation map, the
 *	  list of local commits not yet flushed);
 *	  CrApplyTransactionContext holds the executor state of each table for
 *	  one local transaction (a group) and is reset at its commit;
 *	  CrApplyMessageContext is reset after every protocol message.
 *
 * IDENTIFICATION
 *	  src/apply_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "lib/ilist.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/logicalproto.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "apply.h"
#include "apply_internal.h"
#include "catalog.h"
#include "conflict.h"
#include "launcher.h"
#include "names.h"
#include "peers.h"
#include "protocol.h"
#include "remote.h"

#define UNFLUSHED_WAIT_MS		10

/* the most cosmosrep.apply_group_size allows */
#define CR_MAX_GROUP_SIZE		10000

/*
 * A group (the remote transactions applied in one local transaction) holds
 * at most cosmosrep.apply_group_size.  A group whose newest remote transaction
 * committed at the peer more than BACKLOG_AGE_MS ago belongs to a backlog:
 * before committing it when the stream runs dry, the worker sleeps
 * BACKLOG_WAIT_MS on its latch and reads what arrived meanwhile.  Those
 * transactions are late already; reading them a millisecond at a time
 * fills the groups (each local commit wakes the WAL writer, a kill() that
 * costs more than applying a row) and spares the walsender a wake-up of
 * this worker with every send().
 */

/*
 * A remote transaction whose changes failed cosmosrep.apply_attempts
 * times in a row
 * (each failure stops the worker, which the launcher restarts with
 * backoff) is applied once more change by change, each in a
 * subtransaction: a change that user code rejects again goes to the
 * conflicts feed as an error entry, and the stream goes on behind it.
 * So are the transactions after it, until the stream runs dry (a cause
 * that rejects one change often rejects its neighbours), each committed
 * on its own.
 */
#define BACKLOG_AGE_MS			1000
#define BACKLOG_WAIT_MS			1

/* settings (cr_apply_define_settings) */
static int	cr_apply_group_size = 100;
static int	cr_apply_attempts = 3;
static int	cr_apply_feedback_interval_ms = 1000;
static int	cr_apply_timeout_ms = 60000;
static bool cr_apply_streaming = true;

MemoryContext CrApplyContext = NULL;
MemoryContext CrApplyMessageContext = NULL;
MemoryContext CrApplyTransactionContext = NULL;
char	   *CrPeerName = NULL;
char	   *CrPeerDsn = NULL;
PGconn	   *CrPeerSqlConn = NULL;
bool		cr_in_remote_transaction = false;
int			cr_changes_in_transaction = 0;
int			cr_conflicts_in_transaction = 0;
bool		cr_local_writes_in_transaction = false;

static CrPeerStatus *MyPeer = NULL;
static PGconn *PeerConn = NULL;

static XLogRecPtr remote_final_lsn = InvalidXLogRecPtr; /* of the open one */
static bool in_change = false;	/* applying a row change */
static XLogRecPtr careful_lsn = InvalidXLogRecPtr;	/* the one that failed */
static bool careful = false;	/* applying change by change */
/* the remote transactions applied in the open local transaction */
static int	group_transactions = 0;
static XLogRecPtr group_end_lsn = InvalidXLogRecPtr;
static TimestampTz *group_commit_times;	/* CR_MAX_GROUP_SIZE, in CrApplyContext */
static int64 *group_latencies;	/* as many */
static bool group_waited = false;	/* waited for more since the last read */
static bool applied_since_start = false;
/* the peer's stable version received since the open group began, 0 if none */
static int64 group_stable_version = 0;
static XLogRecPtr last_received = InvalidXLogRecPtr;
static XLogRecPtr last_applied_end = InvalidXLogRecPtr;

/* applying the queue of a streamed transaction (apply_stream.c) */
bool		cr_apply_replaying = false;

/*
 * Local commits of groups not yet known to be flushed, oldest first: the
 * end of the local commit record and the remote end LSN the group applied.
 * Feedback reports as flushed (flushed_lsn, which never goes back) the
 * remote end of the newest one the WAL writer has flushed, as core's apply
 * worker does; forcing the flush here would stall the stream for an fsync.
 */
typedef struct CommitMapping
{
	dlist_node	node;
	XLogRecPtr	local_end;
	XLogRecPtr	remote_end;
} CommitMapping;

static dlist_head commit_mappings = DLIST_STATIC_INIT(commit_mappings);
static XLogRecPtr flushed_lsn = InvalidXLogRecPtr;
static TimestampTz last_feedback = 0;
/* when the stream last brought a message; whether the peer was asked since */
static TimestampTz last_recv_time = 0;
static bool ping_sent = false;

static void apply_worker_exit(int code, Datum arg);
static void group_joined(XLogRecPtr end_lsn, TimestampTz committime);
static void send_feedback(bool force, bool request_reply);
static void commit_group(void);
static void commit_with_local_writes(void);
static void batch_flush(void);
static void publish_stable_version(void);

/* at exit: close the connections, and the worker no longer runs */
static void
apply_worker_exit(int code, Datum arg)
{
	if (PeerConn)
	{
		PQfinish(PeerConn);
		PeerConn = NULL;
	}
	if (CrPeerSqlConn)
	{
		PQfinish(CrPeerSqlConn);
		CrPeerSqlConn = NULL;
	}
	cr_peer_status_worker_exit(MyPeer);
}

/* ----------------------------------------------------------------
 * Protocol message handlers
 * ----------------------------------------------------------------
 */

static void
handle_begin(StringInfo s)
{
	LogicalRepBeginData begin;

	logicalrep_read_begin(s, &begin);
	cr_apply_remote_begin(begin.final_lsn);
}

/*
 * A remote transaction whose changes and failures count under final_lsn
 * (its commit record, or for a streamed transaction applied as it arrives
 * a key of its own) begins: in the open group's local transaction, or a
 * new one.
 */
void
cr_apply_remote_begin(XLogRecPtr final_lsn)
{
	if (cr_in_remote_transaction)
		elog(ERROR, "BEGIN inside a transaction from region \"%s\"", CrPeerName);
	remote_final_lsn = final_lsn;
	cr_batch_transaction = remote_final_lsn;
	if (remote_final_lsn == careful_lsn)
		careful = true;
	/* the next transaction of a group shares the open local transaction */
	if (group_transactions == 0)
	{
		/* a worker sets the time now() reports itself */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		MemoryContextSwitchTo(CrApplyMessageContext);
	}
	cr_in_remote_transaction = true;
}

/*
 * A remote transaction is complete.  It joins the group of remote
 * transactions applied in the open local transaction, which commits when
 * a read of the stream brings no further message (apply_loop) or the
 * group is full: consecutive single-row transactions of a backlog then
 * share one local commit, while a transaction that arrives alone commits
 * at once.
 *
 * Each remote transaction is still applied whole and in commit order, and
 * the origin advances to the group's last end LSN atomically with the
 * data, so exactly-once and consistent prefix hold.
 */
static void
handle_commit(StringInfo s)
{
	LogicalRepCommitData commit;

	logicalrep_read_commit(s, &commit);
	cr_apply_remote_commit(commit.end_lsn, commit.committime);
}

/*
 * The remote transaction ending at end_lsn, committed at the peer at
 * committime, is applied: it joins the group (see handle_commit).
 */
void
cr_apply_remote_commit(XLogRecPtr end_lsn, TimestampTz committime)
{
	if (!cr_in_remote_transaction)
		elog(ERROR, "COMMIT without BEGIN from region \"%s\"", CrPeerName);

	cr_in_remote_transaction = false;
	group_joined(end_lsn, committime);
	if (group_transactions >= cr_apply_group_size || careful)
		commit_group();
}

/* commit the open group, if it may commit now (commit_group) */
void
cr_apply_group_commit(void)
{
	commit_group();
}

/*
 * Between records of a spill or the queue, which may take longer to apply
 * than the peer's wal_sender_timeout: report to the peer (at most once per
 * cosmosrep.apply_feedback_interval), so that its walsender, which waits
 * for a reply, does not take this worker for gone.
 */
void
cr_apply_keep_alive(void)
{
	CHECK_FOR_INTERRUPTS();
	send_feedback(false, false);
}

/* whether the open group holds no remote transaction */
bool
cr_apply_group_empty(void)
{
	return group_transactions == 0;
}

/*
 * A remote transaction ending at end_lsn, committed at the peer at
 * committime, is applied in the open group.  Those of the queue, which
 * committed before the streamed transaction they follow, leave the group's
 * end where it is; the group outgrows its size only while the queue is
 * applied (the latency samples then keep the newest times).
 */
static void
group_joined(XLogRecPtr end_lsn, TimestampTz committime)
{
	group_end_lsn = Max(group_end_lsn, end_lsn);
	if (group_transactions < CR_MAX_GROUP_SIZE)
		group_transactions++;
	group_commit_times[group_transactions - 1] = committime;
}

/*
 * Commit the local transaction of the current group, if one is open and
 * no remote transaction is half applied in it.  Each remote transaction
 * of the group adds its own latency sample (origin commit to this local
 * commit).
 */
static void
commit_group(void)
{
	TimestampTz last_commit_time;
	TimestampTz now;
	CommitMapping *mapping;

	/*
	 * never in the middle of a remote transaction: it is applied whole;
	 * nor while the queue is applied after a streamed transaction, which
	 * commits with all of it
	 */
	if (group_transactions == 0 || cr_in_remote_transaction || cr_apply_replaying)
		return;

	last_commit_time = group_commit_times[group_transactions - 1];
	batch_flush();
	cr_exec_close_all();
	replorigin_session_origin_lsn = group_end_lsn;
	replorigin_session_origin_timestamp = last_commit_time;
	if (cr_local_writes_in_transaction)
		commit_with_local_writes();
	else
		CommitTransactionCommand();
	MemoryContextSwitchTo(CrApplyMessageContext);
	mapping = MemoryContextAlloc(CrApplyContext, sizeof(CommitMapping));
	mapping->local_end = XactLastCommitEnd;
	mapping->remote_end = group_end_lsn;
	dlist_push_tail(&commit_mappings, &mapping->node);
	last_applied_end = group_end_lsn;
	/* table and database statistics, at most once a second */
	pgstat_report_stat(false);

	/* the worker works: the next failure starts the backoff afresh */
	if (!applied_since_start)
	{
		applied_since_start = true;
		cr_peer_status_reset_backoff(MyPeer);
	}

	now = GetCurrentTimestamp();
	for (int i = 0; i < group_transactions; i++)
		group_latencies[i] = Max(0, now - group_commit_times[i]);
	cr_peer_status_record_commit(MyPeer, group_end_lsn, last_commit_time, now,
								 group_transactions, group_latencies,
								 cr_changes_in_transaction,
								 cr_conflicts_in_transaction);

	group_transactions = 0;
	group_waited = false;
	publish_stable_version();
	cr_changes_in_transaction = 0;
	cr_conflicts_in_transaction = 0;
}

/*
 * Commit a group in which the arbiter wrote resolutions (apply_change.c),
 * writes of this region that the other regions must receive.  Decoding
 * skips every transaction whose commit record names a replication origin,
 * so this one commits without the peer's origin, and the origin's
 * progress is advanced in memory just after the commit rather than by
 * the commit record.  A crash before the next checkpoint therefore
 * applies the group again: every change in it then meets a row or
 * tombstone that already holds it (an equal version, or a resolution
 * that has seen it) and changes nothing.
 */
static void
commit_with_local_writes(void)
{
	RepOriginId origin = replorigin_session_origin;

	replorigin_session_origin = InvalidRepOriginId;
	CommitTransactionCommand();
	replorigin_session_origin = origin;
	replorigin_session_advance(group_end_lsn, XactLastCommitEnd);
	cr_local_writes_in_transaction = false;
}

/* the peer's stable version received before now holds here */
static void
publish_stable_version(void)
{
	if (group_stable_version == 0)
		return;
	cr_peer_status_set_stable_version(MyPeer, group_stable_version);
	group_stable_version = 0;
}

/* the open group belongs to a backlog (see BACKLOG_AGE_MS) */
static bool
group_in_backlog(void)
{
	return group_transactions > 0 && !cr_in_remote_transaction &&
		TimestampDifferenceExceeds(group_commit_times[group_transactions - 1],
								   GetCurrentTimestamp(), BACKLOG_AGE_MS);
}

/*
 * A peer's stable version.  Between transactions: it holds here once what
 * came before it is committed, at once or when the open group commits.
 */
void
cr_apply_stable_version(int64 version)
{
	group_stable_version = version;
	if (group_transactions == 0)
		publish_stable_version();
}

/* a change, TRUNCATE or DDL message must come between BEGIN and COMMIT */
void
cr_apply_check_in_transaction(void)
{
	if (!cr_in_remote_transaction)
		elog(ERROR, "change outside a transaction from region \"%s\"", CrPeerName);
}

/*
 * Write the inserts still in a batch, as changes: a failure counts against
 * the remote transaction of the row being written (cr_batch_failing),
 * which may be an earlier one of the group, so that the change-by-change
 * mode is used for the transaction that holds the row.
 */
static void
batch_flush(void)
{
	bool		was_in_change = in_change;

	in_change = true;
	cr_batch_flush();
	in_change = was_in_change;
}

/* one protocol message of the stream */
void
cr_apply_dispatch(StringInfo s)
{
	LogicalRepMsgType action = pq_getmsgbyte(s);

	/*
	 * Only inserts join a batch; anything else sees its rows written, and
	 * so does the change-by-change mode, whose subtransactions must not
	 * hold the rows of earlier transactions of the group.
	 */
	if ((action != LOGICAL_REP_MSG_INSERT || careful) &&
		action != LOGICAL_REP_MSG_BEGIN && action != LOGICAL_REP_MSG_COMMIT)
		batch_flush();
	switch (action)
	{
		case LOGICAL_REP_MSG_BEGIN:
			handle_begin(s);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			handle_commit(s);
			break;
		case LOGICAL_REP_MSG_RELATION:
			cr_handle_relation(s);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			if (!cr_in_remote_transaction)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("row change outside a transaction from region \"%s\"",
								CrPeerName)));
			if (careful)
				cr_apply_change_carefully(action, s);
			else
			{
				in_change = true;
				cr_batch_allowed = action == LOGICAL_REP_MSG_INSERT;
				cr_apply_change(action, s);
				cr_batch_allowed = false;
				in_change = false;
				cr_flush_some_conflicts();
			}
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			cr_handle_message(s);
			/* the rows of an enabled table it held */
			batch_flush();
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid message type \"%c\" from region \"%s\"",
							action, CrPeerName)));
	}
}

/* ----------------------------------------------------------------
 * Stream loop
 * ----------------------------------------------------------------
 */

/*
 * Tell the peer how far we have received and safely applied.
 */
static void
send_feedback(bool force, bool request_reply)
{
	TimestampTz now = GetCurrentTimestamp();
	XLogRecPtr	local_flush;
	dlist_mutable_iter iter;
	StringInfoData buf;

	if (!force && !TimestampDifferenceExceeds(last_feedback, now, cr_apply_feedback_interval_ms) &&
		(dlist_is_empty(&commit_mappings) ||
		 dlist_head_element(CommitMapping, node, &commit_mappings)->local_end > GetFlushRecPtr(NULL)))
		return;

	/*
	 * What we applied is safe once its local commit record is flushed.  When
	 * the peer asks for a reply (a walsender shutting down waits for it),
	 * flush the last commit rather than make it wait for the WAL writer.
	 */
	if (force && !dlist_is_empty(&commit_mappings))
		XLogFlush(dlist_tail_element(CommitMapping, node, &commit_mappings)->local_end);
	local_flush = GetFlushRecPtr(NULL);
	dlist_foreach_modify(iter, &commit_mappings)
	{
		CommitMapping *mapping = dlist_container(CommitMapping, node, iter.cur);

		if (mapping->local_end > local_flush)
			break;
		flushed_lsn = Max(flushed_lsn, mapping->remote_end);
		dlist_delete(iter.cur);
		pfree(mapping);
	}
	/* with everything applied and flushed, all that was received is safe */
	if (dlist_is_empty(&commit_mappings) && !cr_in_remote_transaction &&
		group_transactions == 0)
		flushed_lsn = Max(flushed_lsn, last_received);

	initStringInfo(&buf);
	pq_sendbyte(&buf, 'r');
	pq_sendint64(&buf, last_received);	/* write */
	pq_sendint64(&buf, flushed_lsn);	/* flush */
	pq_sendint64(&buf, flushed_lsn);	/* apply */
	pq_sendint64(&buf, now);
	pq_sendbyte(&buf, request_reply ? 1 : 0);
	if (PQputCopyData(PeerConn, buf.data, buf.len) <= 0 || PQflush(PeerConn))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send feedback to region \"%s\": %s",
						CrPeerName, PQerrorMessage(PeerConn))));
	pfree(buf.data);
	last_feedback = now;
}

/*
 * The wait event set of the stream loop, for the worker's whole life (the
 * peer's socket does not change while the worker runs): building a set
 * per wait, as WaitLatchOrSocket does, costs five system calls, and the
 * worker waits once per transaction when it keeps up with the peer.
 */
static WaitEventSet *
stream_wait_set(void)
{
	WaitEventSet *waitset;

#if PG_VERSION_NUM >= 170000
	waitset = CreateWaitEventSet(NULL, 3);
#else
	waitset = CreateWaitEventSet(CrApplyContext, 3);
#endif
	AddWaitEventToSet(waitset, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(waitset, WL_SOCKET_READABLE, PQsocket(PeerConn), NULL, NULL);
	AddWaitEventToSet(waitset, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	return waitset;
}

/*
 * An XLogData message: a whole small transaction, or a chunk of a large
 * one, whose protocol messages are applied one by one, each in
 * CrApplyMessageContext.
 */
static void
stream_xlog_data(StringInfo s)
{
	XLogRecPtr	start = pq_getmsgint64(s);
	XLogRecPtr	end = pq_getmsgint64(s);

	(void) pq_getmsgint64(s);	/* send time */
	last_received = Max(last_received, start);
	cr_peer_status_record_received(MyPeer, last_received, end, false,
								   InvalidXLogRecPtr);

	cr_stream_route(s);
}

/*
 * A keepalive: how far the peer's WAL goes, and whether the worker
 * catches up or streams.  Returns whether the peer asks for a reply.
 */
static bool
stream_keepalive(StringInfo s)
{
	XLogRecPtr	end = pq_getmsgint64(s);
	bool		reply;

	(void) pq_getmsgint64(s);	/* send time */
	reply = pq_getmsgbyte(s);
	last_received = Max(last_received, end);
	cr_peer_status_record_received(MyPeer, last_received, end,
								   !cr_in_remote_transaction, last_applied_end);
	return reply;
}

/*
 * Read and apply every message the connection holds now, without
 * waiting; the number read.  An error if the peer ended the stream or the
 * connection broke.
 */
static int
stream_read(void)
{
	int			len;
	int			processed = 0;
	char	   *buf = NULL;

	if (!PQconsumeInput(PeerConn))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("lost connection to region \"%s\": %s",
						CrPeerName, PQerrorMessage(PeerConn))));

	while ((len = PQgetCopyData(PeerConn, &buf, 1)) > 0)
	{
		StringInfoData s;
		char		kind;
		bool		reply = false;

		s.data = buf;
		s.len = len;
		s.cursor = 0;
		s.maxlen = -1;
		kind = pq_getmsgbyte(&s);
		if (kind == 'w')
			stream_xlog_data(&s);
		else if (kind == 'k')
			reply = stream_keepalive(&s);
		PQfreemem(buf);
		buf = NULL;
		processed++;
		if (reply)
			send_feedback(true, false);
	}
	if (len == -1)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("region \"%s\" ended the replication stream", CrPeerName)));
	if (len == -2)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read from region \"%s\": %s",
						CrPeerName, PQerrorMessage(PeerConn))));
	return processed;
}

/* wait BACKLOG_WAIT_MS for more of a backlog, once since the last read */
static void
stream_wait_backlog(void)
{
	int			rc;

	group_waited = true;
	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   BACKLOG_WAIT_MS, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Everything read is committed: wait for the stream or the latch.  What
 * was applied is reported once its commit is flushed (by the WAL writer):
 * look again soon while commits are unflushed, for a writer that waits for
 * this region (synchronous_commit = remote_apply, consistency level
 * strong).
 */
static bool
stream_wait_idle(WaitEventSet *waitset)
{
	WaitEvent	event;
	int			rc;

	rc = WaitEventSetWait(waitset,
						  dlist_is_empty(&commit_mappings) ? cr_apply_feedback_interval_ms : UNFLUSHED_WAIT_MS,
						  &event, 1, PG_WAIT_EXTENSION);
	if (rc == 1 && (event.events & WL_LATCH_SET))
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}

	/*
	 * Idle for a whole wait: report the statistics the last commits left
	 * pending (after a commit they are reported at most once a second,
	 * measured by commit times, which do not move while idle).
	 */
	if (rc == 0 && !IsTransactionState())
		pgstat_report_stat(true);
	return rc == 0;
}

/*
 * After a wait that nothing ended: a peer silent for cosmosrep.apply_timeout
 * is taken for gone (the connection is dropped, and the launcher starts
 * the worker again); silent for half of it, it is asked for a reply, which
 * a walsender that is alive sends at once.  As core's apply worker does
 * with wal_receiver_timeout.
 */
static void
stream_check_timeout(void)
{
	TimestampTz now;

	if (cr_apply_timeout_ms <= 0)
		return;
	now = GetCurrentTimestamp();
	if (now >= TimestampTzPlusMilliseconds(last_recv_time, cr_apply_timeout_ms))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("terminating the connection to region \"%s\" due to timeout",
						CrPeerName),
				 errdetail("Nothing arrived from it for %d ms (cosmosrep.apply_timeout).",
						   cr_apply_timeout_ms)));
	if (!ping_sent &&
		now >= TimestampTzPlusMilliseconds(last_recv_time, cr_apply_timeout_ms / 2))
	{
		send_feedback(true, true);
		ping_sent = true;
	}
}

/*
 * The stream loop: read what arrived, apply it, commit, report, wait.
 */
static void
apply_loop(void)
{
	WaitEventSet *waitset = stream_wait_set();

	for (;;)
	{
		int			processed;

		CHECK_FOR_INTERRUPTS();
		Assert(CurrentMemoryContext == CrApplyMessageContext);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		processed = stream_read();

		/*
		 * While messages keep coming, read on without sleeping, and the
		 * remote transactions they complete join the open group.  Once a
		 * read brings nothing, the group's local transaction commits, unless
		 * it belongs to a backlog and has not waited yet since the last read.
		 */
		send_feedback(false, false);
		if (processed > 0)
		{
			group_waited = false;
			last_recv_time = GetCurrentTimestamp();
			ping_sent = false;
			continue;
		}
		if (!group_waited && group_in_backlog())
		{
			stream_wait_backlog();
			continue;
		}
		commit_group();
		careful = false;
		if (stream_wait_idle(waitset))
			stream_check_timeout();
	}
}

/*
 * The worker's process: signals, the database connection, its memory
 * contexts, and the settings every change runs under.
 */
static void
apply_worker_setup(Oid dboid)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	before_shmem_exit(apply_worker_exit, (Datum) 0);

	CrApplyContext = AllocSetContextCreate(TopMemoryContext, "cosmosrep apply",
										   ALLOCSET_DEFAULT_SIZES);
	CrApplyMessageContext = AllocSetContextCreate(CrApplyContext,
												  "cosmosrep apply message",
												  ALLOCSET_DEFAULT_SIZES);
	CrApplyTransactionContext = AllocSetContextCreate(CrApplyContext,
													  "cosmosrep apply transaction",
													  ALLOCSET_DEFAULT_SIZES);
	group_commit_times = MemoryContextAlloc(CrApplyContext,
											sizeof(TimestampTz) * CR_MAX_GROUP_SIZE);
	group_latencies = MemoryContextAlloc(CrApplyContext,
										 sizeof(int64) * CR_MAX_GROUP_SIZE);

	/* rows from other regions keep their versions: no local row trigger */
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	/* values are parsed, and keys of the peer's rows written, as peers send them */
	cr_pin_text_formats(PGC_S_OVERRIDE, GUC_ACTION_SET);
}

/*
 * Read who the peer and this region are (exits if the peer is gone), map
 * nothing yet, and take the peer's replication origin for this session.
 * Returns where the stream starts: after the last transaction applied.
 * The slot's and this region's names go to *slot_name and *local_name,
 * in CrApplyContext.
 */
static XLogRecPtr
apply_worker_attach(char **slot_name, char **local_name)
{
	CrRegion   *peer;
	char	   *origin_name;
	RepOriginId originid;
	XLogRecPtr	startpos;

	MemoryContextSwitchTo(CrApplyContext);
	/* a worker sets the time now() reports itself */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	peer = cr_get_region_by_id(MyPeer->peer_id);
	if (peer == NULL)
		proc_exit(0);
	/* what outlives this transaction goes to CrApplyContext */
	MemoryContextSwitchTo(CrApplyContext);
	CrPeerName = pstrdup(peer->name);
	cr_relmap_init();
	CrPeerDsn = pstrdup(peer->dsn);
	*local_name = pstrdup(cr_get_region_by_id(cr_local_region_id(false))->name);
	origin_name = cr_origin_name(CrPeerName);
	*slot_name = cr_slot_name(CrPeerName, *local_name);
	originid = replorigin_by_name(origin_name, true);
	if (originid == InvalidRepOriginId)
		originid = replorigin_create(origin_name);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(CrApplyContext);
	pgstat_report_appname(psprintf("cosmosrep apply from %s", CrPeerName));

#if PG_VERSION_NUM >= 160000
	replorigin_session_setup(originid, 0);
#else
	replorigin_session_setup(originid);
#endif
	replorigin_session_origin = originid;
	/* flushed, as a previous worker's last commits may not be yet */
	startpos = replorigin_session_get_progress(true);
	last_applied_end = startpos;
	last_received = startpos;
	flushed_lsn = startpos;
	return startpos;
}

/*
 * A connection to the peer, in replication mode or not, with TCP
 * keepalives that notice a peer gone silent in about
 * cosmosrep.apply_timeout (the dsn may set its own).
 */
PGconn *
cr_apply_connect(bool replication, const char *appname)
{
	int			timeout_s = cr_apply_timeout_ms / 1000;

	if (cr_apply_timeout_ms <= 0)
		return cr_remote_connect(CrPeerDsn, replication, appname, CrPeerName);
	return cr_remote_connect_keepalives(CrPeerDsn, replication, appname, CrPeerName,
										Max(1, timeout_s / 2), Max(1, timeout_s / 6), 3);
}

/*
 * Whether res is an output plugin's refusal of the protocol version asked
 * for: its errcode and the start of its message, the same in 0.1 and now.
 */
static bool
is_version_refusal(const PGresult *res)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	return sqlstate != NULL && strcmp(sqlstate, "0A000") == 0 &&
		message != NULL && strncmp(message, "cosmosrep protocol version ", 27) == 0;
}

/*
 * Connect to the peer and start streaming from its slot at startpos, in
 * the newest protocol version both sides know: ask for CR_PROTOCOL_VERSION
 * and, while the peer refuses a version as not supported
 * (is_version_refusal), for the next older one down to
 * cosmosrep.min_protocol_version.  A peer that refuses them all is an
 * error that names the versions, in replication_status; the launcher
 * retries with backoff, so an upgrade of either side resumes the stream.
 */
static void
stream_start(const char *slot_name, const char *local_name, XLogRecPtr startpos)
{
	PGresult   *res;
	int			version;

	cr_peer_status_set_state(MyPeer, CR_PEER_CONNECTING);
	PeerConn = cr_apply_connect(true, cr_origin_name(local_name));
	/* reached: from here on a failure is an error, not unreachable */
	cr_peer_status_set_state(MyPeer, CR_PEER_CATCHING_UP);
	cr_peer_status_set_protocol_version(MyPeer, 0);
	for (version = CR_PROTOCOL_VERSION;; version--)
	{
		/*
		 * Streaming of large transactions, if this version has it; after
		 * the version, which a plugin that knows no streaming refuses
		 * first (0.1 stops at the first option it does not know).
		 */
		char	   *sql = psprintf("START_REPLICATION SLOT %s LOGICAL %X/%X (protocol_version '%d'%s)",
								   slot_name, LSN_FORMAT_ARGS(startpos), version,
								   cr_apply_streaming && version >= CR_PROTOCOL_STREAMING_VERSION ?
								   ", streaming 'on'" : "");

		res = cr_remote_exec_any(PeerConn, sql, CrPeerName);
		if (res != NULL && PQresultStatus(res) == PGRES_COPY_BOTH)
			break;
		/* not a refusal of the version: the error as any query's */
		if (res == NULL || !is_version_refusal(res))
			cr_remote_fail(PeerConn, res, sql, CrPeerName);
		if (version <= cr_min_protocol_version)
		{
			char	   *msg = cr_remote_result_message(res);

			PQclear(res);
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("region \"%s\" writes no cosmosrep protocol version this region reads (%d to %d): %s",
							CrPeerName, cr_min_protocol_version,
							CR_PROTOCOL_VERSION, msg),
					 errhint("Upgrade cosmosrep in region \"%s\", or lower cosmosrep.min_protocol_version in this region.",
							 CrPeerName)));
		}
		ereport(LOG,
				(errmsg("region \"%s\" does not write cosmosrep protocol version %d, asking for version %d",
						CrPeerName, version, version - 1)));
		PQclear(res);
	}
	PQclear(res);
	cr_peer_status_set_protocol_version(MyPeer, version);
	last_recv_time = GetCurrentTimestamp();

	ereport(LOG,
			(errmsg("cosmosrep apply worker streaming from region \"%s\" at %X/%X in protocol version %d",
					CrPeerName, LSN_FORMAT_ARGS(startpos), version)));
}

/*
 * If the changes of one remote transaction failed cosmosrep.apply_attempts
 * times in a row, apply it change by change this time.
 */
static void
apply_careful_setup(void)
{
	XLogRecPtr	failed = cr_peer_status_failed_transaction(MyPeer, 1);

	if (CR_IS_STREAM_FAILURE_KEY(failed))
	{
		cr_stream_spill_after_failure((TransactionId) failed);
		ereport(LOG,
				(errmsg("cosmosrep applies streamed transaction %u of region \"%s\" at its commit",
						(TransactionId) failed, CrPeerName),
				 errdetail("Applying it as it arrived failed.")));
		return;
	}
	careful_lsn = cr_peer_status_failed_transaction(MyPeer, cr_apply_attempts);
	if (!XLogRecPtrIsInvalid(careful_lsn))
		ereport(LOG,
				(errmsg("cosmosrep applies the transaction of region \"%s\" ending at %X/%X change by change",
						CrPeerName, LSN_FORMAT_ARGS(careful_lsn)),
				 errdetail("Its changes failed %d times; a change that fails again goes to cosmosrep.conflict_feed.",
						   cr_apply_attempts)));
}

/*
 * The worker stops on an error: it goes to the peer status, and a change
 * that failed counts an attempt at its transaction.
 */
static void
apply_worker_failed(void)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(CrApplyContext);
	edata = CopyErrorData();
	cr_peer_status_set_error(MyPeer, edata->message);
	/* a streamed transaction that fails as it arrives is spilled next time */
	if (TransactionIdIsValid(cr_stream_direct_xid()) &&
		edata->sqlerrcode != ERRCODE_CONNECTION_FAILURE)
		cr_peer_status_record_failure(MyPeer, CR_STREAM_FAILURE_KEY(cr_stream_direct_xid()));
	else if (in_change)
		cr_peer_status_record_failure(MyPeer,
									  XLogRecPtrIsInvalid(cr_batch_failing) ?
									  remote_final_lsn : cr_batch_failing);
	FreeErrorData(edata);
}

/*
 * The apply worker's settings; called from _PG_init.  The restart delay of
 * failed apply workers belongs to launcher.c, which starts them.
 */
void
cr_apply_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.apply_group_size",
							"How many remote transactions an apply worker commits in one local transaction.",
							"While catching up a backlog, consecutive remote transactions share one local commit; each is still applied whole.",
							&cr_apply_group_size,
							100, 1, CR_MAX_GROUP_SIZE,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.apply_attempts",
							"How many times a remote transaction may fail before it is applied change by change.",
							"Then a change that fails again goes to cosmosrep.conflict_feed and replication goes on.",
							&cr_apply_attempts,
							3, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.apply_feedback_interval",
							"How often an apply worker reports to the peer how far it applied.",
							"The peer's replication slot keeps what is not reported yet.",
							&cr_apply_feedback_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.apply_timeout",
							"How long an apply worker waits for a silent peer before it drops the connection and tries again.",
							"It asks the peer for a reply after half of it; 0 waits forever.",
							&cr_apply_timeout_ms,
							60000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("cosmosrep.apply_streaming",
							 "Whether apply workers ask peers to stream large transactions while they run.",
							 "A transaction that outgrows the peer's logical_decoding_work_mem is then sent and applied as it runs, and committed here with the peer's commit. A worker reads the setting when it connects.",
							 &cr_apply_streaming,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.min_protocol_version",
							"The oldest cosmosrep protocol version this region writes to peers and reads from them.",
							"Raise it once every region runs a cosmosrep that writes the newer version: a region left behind is then refused with an error in replication_status.",
							&cr_min_protocol_version,
							CR_PROTOCOL_VERSION_OLDEST, CR_PROTOCOL_VERSION_OLDEST,
							CR_PROTOCOL_VERSION,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	cr_launcher_define_settings();
}

/* the apply worker of the peer whose status entry is arg */
void
cosmosrep_apply_main(Datum arg)
{
	Oid			dboid;
	XLogRecPtr	startpos;
	char	   *slot_name;
	char	   *local_name;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	MyPeer = cr_peer_status(DatumGetInt32(arg));
	apply_worker_setup(dboid);

	PG_TRY();
	{
		startpos = apply_worker_attach(&slot_name, &local_name);
		stream_start(slot_name, local_name, startpos);
		apply_careful_setup();
		MemoryContextSwitchTo(CrApplyMessageContext);
		apply_loop();
	}
	PG_CATCH();
	{
		apply_worker_failed();
		PG_RE_THROW();
	}
	PG_END_TRY();
}
