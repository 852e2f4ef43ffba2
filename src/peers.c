/*-------------------------------------------------------------------------
 *
 * peers.c
 *	  The status of each peer link, in shared memory.
 *
 * NOTES
 *	  One entry per (database, peer region): what its apply worker reports
 *	  (state, positions, counters, latencies, the last error, the peer's
 *	  stable version) and what the launcher needs to start it (its pid,
 *	  the backoff).  An entry outlives its worker, so that the last error
 *	  survives a restart.  Every write goes through the functions below,
 *	  which keep the locking rule peers.h states; apply_worker.c writes
 *	  through the cr_peer_status_* functions, launcher.c claims, pauses and
 *	  frees entries, and stability.c, staleness.c, consistency.c and
 *	  status.c read.  This file calls nothing of cosmosrep's but the
 *	  LWLock it uses.
 *
 * IDENTIFICATION
 *	  src/peers.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "peers.h"
#include "shmem.h"

const char *const CrPeerStateNames[] = {
	[CR_PEER_STOPPED] = "stopped",
	[CR_PEER_PAUSED] = "paused",
	[CR_PEER_CONNECTING] = "connecting",
	[CR_PEER_CATCHING_UP] = "catching up",
	[CR_PEER_STREAMING] = "streaming",
	[CR_PEER_UNREACHABLE] = "unreachable",
	[CR_PEER_ERROR] = "error",
};

/* the table of entries, under CR_LWLOCK_WORKERS */
static CrPeerStatus *peers = NULL;

Size
cr_peers_shmem_size(void)
{
	return MAXALIGN(mul_size(sizeof(CrPeerStatus), CR_MAX_PEERS));
}

/* from the shmem startup hook, with AddinShmemInitLock held */
void
cr_peers_shmem_init(void)
{
	bool		found;

	peers = ShmemInitStruct("cosmosrep peers", cr_peers_shmem_size(), &found);
	if (!found)
	{
		memset(peers, 0, cr_peers_shmem_size());
		for (int i = 0; i < CR_MAX_PEERS; i++)
			SpinLockInit(&peers[i].mutex);
	}
}

CrPeerStatus *
cr_peer_status(int index)
{
	cr_require_preload();
	return &peers[index];
}

int
cr_peer_status_count(void)
{
	return CR_MAX_PEERS;
}

/*
 * The status of region peer_id's apply in database dboid, or NULL; the
 * caller holds the workers' lock.
 */
CrPeerStatus *
cr_peer_status_of(Oid dboid, int peer_id)
{
	for (int i = 0; i < CR_MAX_PEERS; i++)
	{
		CrPeerStatus *ps = &peers[i];

		if (ps->in_use && ps->dboid == dboid && ps->peer_id == peer_id)
			return ps;
	}
	return NULL;
}

/* ----------------------------------------------------------------
 * Peer status: every write goes through these functions
 *
 * The fields of CrPeerStatus under CR_LWLOCK_WORKERS (in_use, dboid,
 * peer_id, pid, failures, next_start) are written holding it exclusively;
 * the others holding the entry's mutex, by the apply worker that owns the
 * entry while it runs (cr_peer_status_* below), or by the launcher while
 * no worker runs (pid 0, CR_LWLOCK_WORKERS held exclusively).
 * ----------------------------------------------------------------
 */

/*
 * Make ps, a free entry, the status of region peer_id in this database,
 * with no worker and nothing applied.  Caller holds CR_LWLOCK_WORKERS
 * exclusively.
 */
void
cr_peer_status_init(CrPeerStatus *ps, int peer_id)
{
	Assert(LWLockHeldByMeInMode(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE));
	ps->in_use = true;
	ps->dboid = MyDatabaseId;
	ps->peer_id = peer_id;
	ps->pid = 0;
	ps->failures = 0;
	ps->next_start = 0;
	SpinLockAcquire(&ps->mutex);
	ps->state = CR_PEER_STOPPED;
	ps->received_lsn = ps->applied_lsn = ps->peer_end_lsn = InvalidXLogRecPtr;
	ps->last_commit_time = ps->last_applied_at = ps->last_message_at = 0;
	ps->transactions_applied = ps->changes_applied = ps->conflicts = 0;
	ps->latency_next = ps->latency_count = 0;
	ps->last_error[0] = '\0';
	ps->last_error_at = 0;
	ps->stable_version = 0;
	ps->protocol_version = 0;
	SpinLockRelease(&ps->mutex);
}

/*
 * Mark ps paused: its peer is paused or gone and no worker runs for it.
 * Caller holds CR_LWLOCK_WORKERS exclusively.
 */
void
cr_peer_status_set_paused(CrPeerStatus *ps)
{
	Assert(LWLockHeldByMeInMode(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE));
	Assert(ps->pid == 0);
	SpinLockAcquire(&ps->mutex);
	ps->state = CR_PEER_PAUSED;
	SpinLockRelease(&ps->mutex);
}

/* the apply worker's state (connecting, catching up, streaming...) */
void
cr_peer_status_set_state(CrPeerStatus *ps, CrPeerState state)
{
	SpinLockAcquire(&ps->mutex);
	ps->state = state;
	SpinLockRelease(&ps->mutex);
}

/* the protocol version the peer streams in */
void
cr_peer_status_set_protocol_version(CrPeerStatus *ps, int version)
{
	SpinLockAcquire(&ps->mutex);
	ps->protocol_version = version;
	SpinLockRelease(&ps->mutex);
}

/*
 * Remember why the apply worker stops.  An error while connecting means
 * the peer cannot be reached; any other is an error of the stream or of
 * apply.
 */
void
cr_peer_status_set_error(CrPeerStatus *ps, const char *message)
{
	SpinLockAcquire(&ps->mutex);
	strlcpy(ps->last_error, message, CR_ERROR_LEN);
	ps->last_error_at = GetCurrentTimestamp();
	ps->state = ps->state == CR_PEER_CONNECTING ?
		CR_PEER_UNREACHABLE : CR_PEER_ERROR;
	SpinLockRelease(&ps->mutex);
}

/*
 * A change of the remote transaction ending at final_lsn failed: count
 * the attempts at that transaction (a new one starts the count afresh).
 */
void
cr_peer_status_record_failure(CrPeerStatus *ps, XLogRecPtr final_lsn)
{
	SpinLockAcquire(&ps->mutex);
	if (ps->failed_lsn != final_lsn)
		ps->failed_attempts = 0;
	ps->failed_lsn = final_lsn;
	ps->failed_attempts++;
	SpinLockRelease(&ps->mutex);
}

/*
 * The remote transaction whose changes failed at least attempts times in
 * a row, or InvalidXLogRecPtr.
 */
XLogRecPtr
cr_peer_status_failed_transaction(CrPeerStatus *ps, int attempts)
{
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	SpinLockAcquire(&ps->mutex);
	if (ps->failed_attempts >= attempts)
		lsn = ps->failed_lsn;
	SpinLockRelease(&ps->mutex);
	return lsn;
}

/*
 * A message of the stream arrived: received is how far the stream got,
 * peer_end the end of the peer's WAL.  A keepalive between transactions
 * (set_progress) also says whether the worker catches up or streams:
 * applied_end is the end of what it applied.
 */
void
cr_peer_status_record_received(CrPeerStatus *ps, XLogRecPtr received,
							   XLogRecPtr peer_end, bool set_progress,
							   XLogRecPtr applied_end)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&ps->mutex);
	ps->received_lsn = received;
	ps->peer_end_lsn = Max(ps->peer_end_lsn, peer_end);
	ps->last_message_at = now;
	if (set_progress)
		ps->state = ps->peer_end_lsn > applied_end &&
			ps->peer_end_lsn > received ?
			CR_PEER_CATCHING_UP : CR_PEER_STREAMING;
	SpinLockRelease(&ps->mutex);
}

/*
 * A group of ntransactions remote transactions committed here at now:
 * the end of the last one (applied_lsn) and its origin commit time, the
 * changes and conflicts they held, and the latency of each (latencies,
 * microseconds), into the ring.  Applying again ends the error that
 * stopped the link (it is logged), and past the transaction that failed,
 * the next failure counts anew.
 */
void
cr_peer_status_record_commit(CrPeerStatus *ps, XLogRecPtr applied_lsn,
							 TimestampTz last_commit_time, TimestampTz now,
							 int ntransactions, const int64 *latencies,
							 int changes, int conflicts)
{
	int			first;

	SpinLockAcquire(&ps->mutex);
	ps->applied_lsn = applied_lsn;
	ps->last_commit_time = last_commit_time;
	ps->last_applied_at = now;
	ps->transactions_applied += ntransactions;
	ps->changes_applied += changes;
	ps->conflicts += conflicts;
	/* the ring takes the group's samples in at most two pieces */
	first = Min(ntransactions, CR_LATENCY_SAMPLES - ps->latency_next);
	memcpy(&ps->latency_us[ps->latency_next], latencies, sizeof(int64) * first);
	memcpy(ps->latency_us, latencies + first,
		   sizeof(int64) * (ntransactions - first));
	ps->latency_next = (ps->latency_next + ntransactions) % CR_LATENCY_SAMPLES;
	ps->latency_count = Min(ps->latency_count + ntransactions, CR_LATENCY_SAMPLES);
	if (ps->failed_attempts > 0 && applied_lsn >= ps->failed_lsn)
		ps->failed_attempts = 0;
	ps->last_error[0] = '\0';
	ps->last_error_at = 0;
	SpinLockRelease(&ps->mutex);
}

/* the peer's stable version, applied here (it never goes back) */
void
cr_peer_status_set_stable_version(CrPeerStatus *ps, int64 version)
{
	SpinLockAcquire(&ps->mutex);
	ps->stable_version = Max(ps->stable_version, version);
	SpinLockRelease(&ps->mutex);
}

/* the apply worker applies: the next failure starts the backoff afresh */
void
cr_peer_status_reset_backoff(CrPeerStatus *ps)
{
	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	ps->failures = 0;
	ps->next_start = 0;
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
}

/*
 * The apply worker owning ps exits: it no longer runs, and unless it
 * stopped on an error, it is stopped.
 */
void
cr_peer_status_worker_exit(CrPeerStatus *ps)
{
	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	if (ps->pid == MyProcPid)
		ps->pid = 0;
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	SpinLockAcquire(&ps->mutex);
	if (ps->state != CR_PEER_ERROR && ps->state != CR_PEER_UNREACHABLE)
		ps->state = CR_PEER_STOPPED;
	SpinLockRelease(&ps->mutex);
}

/*
 * Stop the apply worker of region peer_id in this database, if one runs,
 * and keep the launcher from starting another one for hold_off_ms.
 * Whether the region has a status entry; cr_peer_worker_pid says when
 * the worker is gone.
 */
bool
cr_peer_status_stop_worker(int peer_id, int hold_off_ms)
{
	CrPeerStatus *ps;

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	ps = cr_peer_status_of(MyDatabaseId, peer_id);
	if (ps != NULL)
	{
		ps->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 hold_off_ms);
		if (ps->pid > 0)
			kill(ps->pid, SIGTERM);
	}
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	return ps != NULL;
}


/*
 * The last stable version of region peer_id applied in database dboid,
 * or 0 if none is known.
 */
int64
cr_peer_stable_version(Oid dboid, int peer_id)
{
	int64		stable = 0;
	CrPeerStatus *ps;

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_SHARED);
	ps = cr_peer_status_of(dboid, peer_id);
	if (ps != NULL)
	{
		SpinLockAcquire(&ps->mutex);
		stable = ps->stable_version;
		SpinLockRelease(&ps->mutex);
	}
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	return stable;
}

/* the pid of the apply worker of region peer_id in database dboid, or 0 */
pid_t
cr_peer_worker_pid(Oid dboid, int peer_id)
{
	pid_t		pid = 0;
	CrPeerStatus *ps;

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_SHARED);
	ps = cr_peer_status_of(dboid, peer_id);
	if (ps != NULL)
		pid = ps->pid;
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	return pid;
}

/*
 * How long region peer_id's changes have waited here, in ms, as
 * replication_status shows it: 0 when everything it sent is applied;
 * without a worker that streams (stopped, unreachable, failing), the time
 * since it was last heard from at least.  A region never heard from is
 * as far behind as can be.
 */
int64
cr_peer_lag_ms(Oid dboid, int peer_id)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		lag = PG_INT64_MAX;
	CrPeerStatus *ps;

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_SHARED);
	ps = cr_peer_status_of(dboid, peer_id);
	if (ps != NULL)
	{
		SpinLockAcquire(&ps->mutex);
		lag = 0;
		if (ps->peer_end_lsn > Max(ps->received_lsn, ps->applied_lsn))
			lag = (now - ps->last_commit_time) / 1000;
		if (ps->state != CR_PEER_STREAMING && ps->state != CR_PEER_CATCHING_UP)
			lag = Max(lag, (now - ps->last_message_at) / 1000);
		SpinLockRelease(&ps->mutex);
	}
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	return lag;
}
