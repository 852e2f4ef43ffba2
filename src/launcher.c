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
#include "feed.h"
#include "launcher.h"
#include "names.h"
#include "peers.h"
#include "shmem.h"
#include "stability.h"

PG_FUNCTION_INFO_V1(cosmosrep_config_changed);

#define CR_RECHECK_INTERVAL_MS	10000
#define CR_LAUNCHER_NAPTIME_MS	1000

/* the longest wait before a failed apply worker starts again */
static int	cr_apply_restart_max_delay_ms = 30000;



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
	static bool was_arbiter = false;
	List	   *regions;
	ListCell   *lc;
	bool		have_local = false;
	bool		is_arbiter = false;
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
		/* a region prepared for an upgrade applies nothing (upgrade.c) */
		if (have_local && cr_upgrade_prepared())
		{
			foreach(lc, regions)
				((CrRegion *) lfirst(lc))->paused = true;
		}
		is_arbiter = have_local && cr_arbiter_region_id() == cr_local_region_id(true);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	/* a new arbiter resolves what no arbiter resolved (feed.c) */
	if (is_arbiter && !was_arbiter)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		cr_feed_take_over();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	was_arbiter = is_arbiter;

	if (!have_local)
	{
		/* no region here (any more): stop, and let the supervisor look again */
		MemoryContextSwitchTo(oldctx);
		MemoryContextDelete(cyclectx);
		proc_exit(0);
	}

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);

	/* stop workers whose peer is gone or paused */
	for (int i = 0; i < cr_peer_status_count(); i++)
	{
		CrPeerStatus *ps = cr_peer_status(i);
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
				cr_peer_status_set_paused(ps);
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
		for (int i = 0; i < cr_peer_status_count(); i++)
		{
			CrPeerStatus *p = cr_peer_status(i);

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
			ps = cr_peer_status(index);
			cr_peer_status_init(ps, r->id);
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

/*
 * Statement trigger on the configuration tables: tells every backend (and
 * the workers) that the configuration changed, at commit.  Any user may
 * attach a trigger function to a table of their own (PostgreSQL checks
 * EXECUTE when the trigger is created, not when it fires): it refuses to
 * run on any table but cosmosrep's own.
 */
Datum
cosmosrep_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cosmosrep.config_changed() must be called as a trigger")));
	if (RelationGetNamespace(trigdata->tg_relation) != cr_schema_oid())
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cosmosrep.config_changed() fired on table \"%s\", which does not belong to cosmosrep",
						RelationGetRelationName(trigdata->tg_relation)),
				 errdetail("The function runs only as a trigger of cosmosrep's configuration tables."),
				 errhint("Drop the trigger.")));

	CacheInvalidateRelcache(trigdata->tg_relation);
	cr_wake_launcher_at_commit();
	PG_RETURN_POINTER(NULL);
}
