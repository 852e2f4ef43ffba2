/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Worker management: the supervisor, one launcher per database, and
 *	  the shared memory that tracks them and their apply workers.
 *
 * NOTES
 *	  Three kinds of background worker:
 *
 *	  - the supervisor (static, one per instance, no database) looks at
 *		pg_database and starts a launcher for every database that may hold
 *		a cosmosrep region;
 *	  - a launcher (dynamic, one per database) exits at once where there is
 *		no cosmosrep region, and otherwise starts one apply worker per peer
 *		region that is not paused, stops the workers of removed or paused
 *		peers, and restarts failed workers with exponential backoff;
 *	  - apply workers (apply_worker.c).
 *
 *	  A database without a region is looked at again after
 *	  CR_RECHECK_INTERVAL, or at once when a transaction that changed the
 *	  region configuration commits (cr_wake_launcher_at_commit).
 *
 *	  Shared state: the database table and the peer status table, both
 *	  under CR_LWLOCK_WORKERS (see CrPeerStatus for the fields under the
 *	  per-entry spinlock).  This file alone writes the peer status: the
 *	  apply worker and membership.c call its cr_peer_status_* functions.  A launcher records its own pid and clears it at
 *	  exit; a second launcher for the same database leaves at once.  An
 *	  apply worker's pid is written by the launcher that started it, after
 *	  WaitForBackgroundWorkerStartup, and cleared by the worker at exit, so
 *	  a launcher never starts a second worker for one peer.  A pid whose
 *	  process is gone (it died before its pid was recorded) is cleared on
 *	  the next pass.  After a crash the postmaster re-initialises shared memory and
 *	  the supervisor starts everything again.
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "conflict.h"
#include "launcher.h"
#include "names.h"
#include "shmem.h"
#include "stability.h"

#define CR_RECHECK_INTERVAL_MS	10000
#define CR_LAUNCHER_NAPTIME_MS	1000

/* the longest wait before a failed apply worker starts again */
static int	cr_apply_restart_max_delay_ms = 30000;

static CrPeerStatus *peer_status_of(Oid dboid, int peer_id);
static void peer_status_init(CrPeerStatus *ps, int peer_id);
static void peer_status_set_paused(CrPeerStatus *ps);

const char *const CrPeerStateNames[] = {
	[CR_PEER_STOPPED] = "stopped",
	[CR_PEER_PAUSED] = "paused",
	[CR_PEER_CONNECTING] = "connecting",
	[CR_PEER_CATCHING_UP] = "catching up",
	[CR_PEER_STREAMING] = "streaming",
	[CR_PEER_UNREACHABLE] = "unreachable",
	[CR_PEER_ERROR] = "error",
};

typedef struct CrDatabaseEntry
{
	Oid			dboid;			/* InvalidOid if unused */
	pid_t		launcher_pid;	/* 0 if none runs */
	TimestampTz recheck_at;		/* no launcher before then */
} CrDatabaseEntry;

typedef struct CrWorkerShared
{
	Latch	   *supervisor_latch;	/* under CR_LWLOCK_WORKERS */
	CrDatabaseEntry databases[CR_MAX_DATABASES];
	CrPeerStatus peers[CR_MAX_PEERS];
} CrWorkerShared;

static CrWorkerShared *WorkerShared = NULL;
static bool wake_at_commit_registered = false;
static bool wake_at_commit = false;

static void start_worker(const char *name, const char *function, Oid dboid,
						 int arg, pid_t *pid);
static CrDatabaseEntry *database_entry(Oid dboid, bool create);
static void supervisor_scan(void);
static void launcher_exit(int code, Datum arg);
static void launcher_cycle(void);
static void launcher_stability(void);
static void wake_launcher_xact_callback(XactEvent event, void *arg);

Size
cr_launcher_shmem_size(void)
{
	return MAXALIGN(sizeof(CrWorkerShared));
}

void
cr_launcher_shmem_init(void)
{
	bool		found;

	WorkerShared = ShmemInitStruct("cosmosrep workers",
								   cr_launcher_shmem_size(), &found);
	if (!found)
	{
		memset(WorkerShared, 0, cr_launcher_shmem_size());
		for (int i = 0; i < CR_MAX_PEERS; i++)
			SpinLockInit(&WorkerShared->peers[i].mutex);
	}
}

/*
 * Register the supervisor; called from _PG_init while preloading.
 */
void
cr_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "cosmosrep");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "cosmosrep_supervisor_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "cosmosrep supervisor");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "cosmosrep supervisor");
	RegisterBackgroundWorker(&bgw);
}

/*
 * The launcher's setting; cr_apply_define_settings calls this, as the
 * setting is about apply workers.
 */
void
cr_launcher_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.apply_restart_max_delay",
							"The longest wait before an apply worker that failed starts again.",
							"The wait doubles with each failure from 1s, up to this; it starts afresh once the worker applies a transaction.",
							&cr_apply_restart_max_delay_ms,
							30000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

CrPeerStatus *
cr_peer_status(int index)
{
	cr_require_preload();
	return &WorkerShared->peers[index];
}

int
cr_peer_status_count(void)
{
	return CR_MAX_PEERS;
}

/*
 * Start a dynamic worker and wait until it runs; *pid is 0 when it could
 * not be started (no free slot, or it exited at once).
 */
static void
start_worker(const char *name, const char *function, Oid dboid, int arg,
			 pid_t *pid)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "cosmosrep");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "%s", name);
	bgw.bgw_main_arg = Int32GetDatum(arg);
	memcpy(bgw.bgw_extra, &dboid, sizeof(Oid));
	bgw.bgw_notify_pid = MyProcPid;

	*pid = 0;
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("out of background worker slots for \"%s\"", name),
				 errhint("You might need to increase \"%s\".", "max_worker_processes")));
		return;
	}
	if (WaitForBackgroundWorkerStartup(handle, pid) != BGWH_STARTED)
		*pid = 0;
}

/* the entry of a database; caller holds CR_LWLOCK_WORKERS exclusively */
static CrDatabaseEntry *
database_entry(Oid dboid, bool create)
{
	CrDatabaseEntry *free_entry = NULL;

	Assert(LWLockHeldByMe(cr_shmem_lwlock(CR_LWLOCK_WORKERS)));
	for (int i = 0; i < CR_MAX_DATABASES; i++)
	{
		CrDatabaseEntry *e = &WorkerShared->databases[i];

		if (e->dboid == dboid)
			return e;
		if (e->dboid == InvalidOid && free_entry == NULL)
			free_entry = e;
	}
	if (create && free_entry != NULL)
	{
		free_entry->dboid = dboid;
		free_entry->launcher_pid = 0;
		free_entry->recheck_at = 0;
		return free_entry;
	}
	return NULL;
}

/* ----------------------------------------------------------------
 * Supervisor
 * ----------------------------------------------------------------
 */

/*
 * Start a launcher for every connectable database that has none and whose
 * recheck time has come.
 */
static void
supervisor_scan(void)
{
	List	   *dboids = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext scanctx = AllocSetContextCreate(TopMemoryContext,
												  "cosmosrep supervisor scan",
												  ALLOCSET_SMALL_SIZES);
	MemoryContext oldctx;

	/* a worker sets the time now() reports itself */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		/* the list must outlive the transaction */
		if (db->datallowconn && !db->datistemplate)
		{
			oldctx = MemoryContextSwitchTo(scanctx);
			dboids = lappend_oid(dboids, db->oid);
			MemoryContextSwitchTo(oldctx);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();

	foreach(lc, dboids)
	{
		Oid			dboid = lfirst_oid(lc);
		CrDatabaseEntry *entry;
		bool		start = false;
		pid_t		pid;

		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
		entry = database_entry(dboid, true);
		/* a launcher that died without cleaning up left a stale pid */
		if (entry && entry->launcher_pid > 0 && kill(entry->launcher_pid, 0) != 0)
			entry->launcher_pid = 0;
		if (entry && entry->launcher_pid == 0 && entry->recheck_at <= now)
		{
			start = true;
			entry->recheck_at = TimestampTzPlusMilliseconds(now, CR_RECHECK_INTERVAL_MS);
		}
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));

		/* the launcher records its own pid, and clears it when it exits */
		if (start)
			start_worker("cosmosrep launcher", "cosmosrep_launcher_main", dboid, 0, &pid);
	}
	MemoryContextDelete(scanctx);
}

void
cosmosrep_supervisor_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	WorkerShared->supervisor_latch = MyLatch;
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		supervisor_scan();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 CR_LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ----------------------------------------------------------------
 * Launcher (one per database)
 * ----------------------------------------------------------------
 */

static void
launcher_exit(int code, Datum arg)
{
	CrDatabaseEntry *entry;

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	entry = database_entry(MyDatabaseId, false);
	if (entry && entry->launcher_pid == MyProcPid)
		entry->launcher_pid = 0;
	if (entry)
		entry->recheck_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														code == 0 ? CR_RECHECK_INTERVAL_MS : 1000);
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
}

/*
 * One pass of the launcher: compare the regions with the running apply
 * workers and start or stop workers.  Returns with no transaction open.
 */
static void
launcher_cycle(void)
{
	List	   *regions;
	ListCell   *lc;
	bool		have_local = false;
	MemoryContext cyclectx = AllocSetContextCreate(TopMemoryContext,
												   "cosmosrep launcher cycle",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldctx = MemoryContextSwitchTo(cyclectx);
	TimestampTz now = GetCurrentTimestamp();

	/* a worker sets the time now() reports itself */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	regions = NIL;
	if (OidIsValid(get_namespace_oid(COSMOSREP_SCHEMA, true)) &&
		OidIsValid(get_relname_relid("region", cr_schema_oid())))
	{
		regions = cr_get_regions();
		foreach(lc, regions)
			have_local |= ((CrRegion *) lfirst(lc))->is_local;
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	if (!have_local)
	{
		/* no region here (any more): stop, and let the supervisor look again */
		MemoryContextSwitchTo(oldctx);
		MemoryContextDelete(cyclectx);
		proc_exit(0);
	}

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);

	/* stop workers whose peer is gone or paused */
	for (int i = 0; i < CR_MAX_PEERS; i++)
	{
		CrPeerStatus *ps = &WorkerShared->peers[i];
		bool		wanted = false;

		if (!ps->in_use || ps->dboid != MyDatabaseId)
			continue;
		foreach(lc, regions)
		{
			CrRegion   *r = lfirst(lc);

			if (r->id == ps->peer_id && !r->is_local && !r->paused)
				wanted = true;
		}
		if (!wanted)
		{
			if (ps->pid > 0)
				kill(ps->pid, SIGTERM);
			else
			{
				bool		gone = true;

				foreach(lc, regions)
					gone &= ((CrRegion *) lfirst(lc))->id != ps->peer_id;
				peer_status_set_paused(ps);
				if (gone)
					ps->in_use = false;
			}
		}
	}
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));

	/* start workers for peers that have none */
	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);
		CrPeerStatus *ps = NULL;
		int			index = -1;
		pid_t		pid;

		if (r->is_local || r->paused)
			continue;

		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
		for (int i = 0; i < CR_MAX_PEERS; i++)
		{
			CrPeerStatus *p = &WorkerShared->peers[i];

			if (p->in_use && p->dboid == MyDatabaseId && p->peer_id == r->id)
			{
				ps = p;
				index = i;
				break;
			}
			if (!p->in_use && index < 0)
				index = i;
		}
		if (ps == NULL && index >= 0)
		{
			ps = &WorkerShared->peers[index];
			peer_status_init(ps, r->id);
		}
		/* a worker that died before its pid was recorded left a stale one */
		if (ps != NULL && ps->pid > 0 && kill(ps->pid, 0) != 0)
			ps->pid = 0;
		if (ps == NULL || ps->pid != 0 || ps->next_start > now)
		{
			LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
			continue;
		}
		/* the backoff grows with each start that fails, until one streams */
		ps->next_start = TimestampTzPlusMilliseconds(now,
													 Min(cr_apply_restart_max_delay_ms,
														 1000 << Min(ps->failures, 12)));
		ps->failures++;
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));

		start_worker("cosmosrep apply", "cosmosrep_apply_main", MyDatabaseId,
					 index, &pid);
		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
		if (pid != 0 && kill(pid, 0) == 0 && ps->pid == 0)
			ps->pid = pid;
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	}

	MemoryContextSwitchTo(oldctx);
	MemoryContextDelete(cyclectx);
}

/*
 * The status of region peer_id's apply in database dboid, or NULL; the
 * caller holds the workers' lock.
 */
static CrPeerStatus *
peer_status_of(Oid dboid, int peer_id)
{
	for (int i = 0; i < CR_MAX_PEERS; i++)
	{
		CrPeerStatus *ps = &WorkerShared->peers[i];

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
static void
peer_status_init(CrPeerStatus *ps, int peer_id)
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
	SpinLockRelease(&ps->mutex);
}

/*
 * Mark ps paused: its peer is paused or gone and no worker runs for it.
 * Caller holds CR_LWLOCK_WORKERS exclusively.
 */
static void
peer_status_set_paused(CrPeerStatus *ps)
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
	ps = peer_status_of(MyDatabaseId, peer_id);
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
	ps = peer_status_of(dboid, peer_id);
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
	ps = peer_status_of(dboid, peer_id);
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
	ps = peer_status_of(dboid, peer_id);
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

/*
 * Every cosmosrep.stability_interval: announce this region's stable
 * version to the others, purge the tombstones every region has applied
 * past (stability.c) and the conflicts older than their retention.
 */
static void
launcher_stability(void)
{
	static TimestampTz last_announced = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(last_announced, now, cr_stability_interval_ms))
		return;
	last_announced = now;
	/* a worker sets the time now() reports itself */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	cr_stability_announce();
	(void) cr_stability_purge();
	cr_conflict_purge_history();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

void
cosmosrep_launcher_main(Datum arg)
{
	Oid			dboid;
	CrDatabaseEntry *entry;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/* one launcher per database: leave if another one runs */
	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	entry = database_entry(MyDatabaseId, true);
	if (entry == NULL ||
		(entry->launcher_pid > 0 && entry->launcher_pid != MyProcPid &&
		 kill(entry->launcher_pid, 0) == 0))
	{
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
		proc_exit(0);
	}
	entry->launcher_pid = MyProcPid;
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	before_shmem_exit(launcher_exit, (Datum) 0);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		AcceptInvalidationMessages();
		launcher_cycle();
		launcher_stability();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(CR_LAUNCHER_NAPTIME_MS, cr_stability_interval_ms),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ----------------------------------------------------------------
 * Waking the workers when the configuration changes
 * ----------------------------------------------------------------
 */

static void
wake_launcher_xact_callback(XactEvent event, void *arg)
{
	CrDatabaseEntry *entry;

	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		wake_at_commit = false;
		return;
	}
	if (event != XACT_EVENT_COMMIT)
		return;
	wake_at_commit = false;

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	entry = database_entry(MyDatabaseId, true);
	if (entry)
	{
		entry->recheck_at = 0;
		if (entry->launcher_pid > 0)
			kill(entry->launcher_pid, SIGUSR1);
	}
	if (WorkerShared->supervisor_latch)
		SetLatch(WorkerShared->supervisor_latch);
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
}

/*
 * Make the launcher of this database look at the configuration as soon as
 * the current transaction commits.
 */
void
cr_wake_launcher_at_commit(void)
{
	if (!cr_loaded_at_startup)
		return;
	if (!wake_at_commit_registered)
	{
		RegisterXactCallback(wake_launcher_xact_callback, NULL);
		wake_at_commit_registered = true;
	}
	wake_at_commit = true;
}
