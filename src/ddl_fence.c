/*-------------------------------------------------------------------------
 *
 * ddl_fence.c
 *	  The fence of a schema change: before a region changes a multi-region
 *	  table's definition, every other region stops writing the table and
 *	  this region applies everything they wrote to it.
 *
 * NOTES
 *	  A schema change travels in the change stream (ddl.c), so every
 *	  region applies it after the rows its region wrote before it.  Rows
 *	  that another region wrote at the same time are a different matter:
 *	  an ALTER COLUMN TYPE, a CHECK or a unique index that the new rows
 *	  break would fail where it arrives and stop replication, and two
 *	  regions changing one table at once (a rename and a drop of the same
 *	  column) would each fail on the other's.  So the region that makes
 *	  the change first fences the table in every other region
 *	  (cosmosrep.fence_table, called over libpq as the link role):
 *
 *	  1. the peer refuses further local writes of the table, with the
 *		 fence's error, until the change arrives from the fencing region
 *		 (or the fence expires after cosmosrep.ddl_fence_timeout);
 *	  2. it waits for the transactions that are writing the table (a SHARE
 *		 lock, taken and released, as CREATE INDEX waits for writers) and
 *		 answers with the end of its last commit that wrote multi-region
 *		 rows;
 *	  3. the fencing region waits until it has applied each peer's changes
 *		 up to that answer.
 *
 *	  Then the statement runs here against every row of every region, and
 *	  either fails here (refused where it was made, with PostgreSQL's own
 *	  error) or succeeds here and in every region it reaches, which all
 *	  hold the same rows of the table.  A peer that another region has
 *	  fenced, or that is making a change of the table itself, refuses the
 *	  fence: of two regions changing one table at once, at least one is
 *	  refused, and the error says by which region.  A region that cannot be
 *	  reached, or whose changes this region has not applied within the
 *	  timeout, refuses the change: a schema change needs every region of
 *	  the group, as pgactive's global DDL lock does, but it holds no lock,
 *	  stops only writes of the one table, and ends by itself if the
 *	  fencing region goes away.
 *
 *	  The fences live in shared memory (a slot per fenced table, at most
 *	  CR_MAX_FENCES); the row trigger reads one atomic counter and looks
 *	  further only while some fence exists.  A region's own change in
 *	  progress is a fence of its own region, held by the backend until its
 *	  transaction ends; it refuses other regions' fences, not writes.
 *
 * IDENTIFICATION
 *	  src/ddl_fence.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "storage/lmgr.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "ddl_fence.h"
#include "names.h"
#include "remote.h"
#include "shmem.h"
#include "staleness.h"
#include "wait.h"

#define CR_MAX_FENCES 64

typedef struct FenceSlot
{
	Oid			dbid;
	Oid			relid;			/* InvalidOid: a free slot */
	int			region_id;		/* the region whose change it waits for */
	int			pid;			/* a change of this region: its backend */
	bool		stops_writes;	/* refuses local writes, not only changes */
	TimestampTz expires;
} FenceSlot;

/* what cr_fence_peers hands the caller, for cr_fence_end */
struct CrFence
{
	List	   *peers;			/* FencedPeer */
	char	   *unfence;		/* the call that lifts a peer's fence */
};

typedef struct FenceShared
{
	slock_t		mutex;
	pg_atomic_uint32 used;		/* slots in use, expired ones included */
	pg_atomic_uint64 last_change;	/* end of the last commit that made a
									 * replicated schema change here */
	FenceSlot	fences[CR_MAX_FENCES];
} FenceShared;

static FenceShared *fence_shared = NULL;

int			cr_ddl_fence_timeout_ms = 30000;

/* fences of other regions that this transaction's replayed changes lift */
typedef struct PendingLift
{
	Oid			relid;
	int			region_id;
} PendingLift;

static PendingLift pending_lifts[CR_MAX_FENCES];
static int	n_pending_lifts = 0;

/* this transaction changes a multi-region table's definition */
static bool changed_in_xact = false;

PG_FUNCTION_INFO_V1(cosmosrep_fence_table);
PG_FUNCTION_INFO_V1(cosmosrep_unfence_table);

Size
cr_fence_shmem_size(void)
{
	return MAXALIGN(sizeof(FenceShared));
}

/* from the shmem startup hook, with AddinShmemInitLock held */
void
cr_fence_shmem_init(void)
{
	bool		found;

	fence_shared = ShmemInitStruct("cosmosrep fences", cr_fence_shmem_size(), &found);
	if (!found)
	{
		memset(fence_shared, 0, sizeof(FenceShared));
		SpinLockInit(&fence_shared->mutex);
		pg_atomic_init_u32(&fence_shared->used, 0);
		pg_atomic_init_u64(&fence_shared->last_change, 0);
	}
}

void
cr_fence_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.ddl_fence_timeout",
							"How long a schema change of a multi-region table waits for the other regions, and how long their writes of the table stay fenced.",
							NULL,
							&cr_ddl_fence_timeout_ms,
							30000, 100, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* free a slot; the mutex is held */
static void
fence_free(FenceSlot *f)
{
	f->relid = InvalidOid;
	pg_atomic_fetch_sub_u32(&fence_shared->used, 1);
}

/*
 * Fence relid for region_id (pid: a change of this region, by that
 * backend), unless a live fence of another region holds it: then return
 * that region's id.  Returns 0 when fenced.
 */
static int
fence_add(Oid relid, int region_id, int pid, bool stops_writes)
{
	TimestampTz now = GetCurrentTimestamp();
	FenceSlot  *slot = NULL;
	int			holder = 0;

	SpinLockAcquire(&fence_shared->mutex);
	for (int i = 0; i < CR_MAX_FENCES; i++)
	{
		FenceSlot  *f = &fence_shared->fences[i];

		if (OidIsValid(f->relid) && f->expires <= now)
			fence_free(f);
		if (!OidIsValid(f->relid))
		{
			if (slot == NULL)
				slot = f;
			continue;
		}
		if (f->dbid != MyDatabaseId || f->relid != relid)
			continue;
		if (f->region_id != region_id)
			holder = f->region_id;
		else
		{
			slot = f;			/* the same region fences it again */
			stops_writes |= f->stops_writes;
		}
	}
	if (holder == 0 && slot != NULL)
	{
		if (!OidIsValid(slot->relid))
			pg_atomic_fetch_add_u32(&fence_shared->used, 1);
		slot->dbid = MyDatabaseId;
		slot->relid = relid;
		slot->region_id = region_id;
		slot->pid = pid;
		slot->stops_writes = stops_writes;
		slot->expires = TimestampTzPlusMilliseconds(now, cr_ddl_fence_timeout_ms);
	}
	SpinLockRelease(&fence_shared->mutex);
	if (holder == 0 && slot == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many multi-region tables are being changed at once"),
				 errdetail("At most %d schema changes can wait for the regions at a time.",
						   CR_MAX_FENCES),
				 errhint("Retry the schema change.")));
	return holder;
}

/*
 * Whether this backend's transaction fenced relid already: -1 no, 0 yes,
 * 1 yes and the other regions' writes of it are stopped.
 */
static int
own_fence(Oid relid, int local_id)
{
	int			result = -1;

	SpinLockAcquire(&fence_shared->mutex);
	for (int i = 0; i < CR_MAX_FENCES; i++)
	{
		FenceSlot  *f = &fence_shared->fences[i];

		if (OidIsValid(f->relid) && f->dbid == MyDatabaseId && f->relid == relid &&
			f->region_id == local_id && f->pid == MyProcPid)
			result = f->stops_writes ? 1 : 0;
	}
	SpinLockRelease(&fence_shared->mutex);
	return result;
}

/* remove the fences of relid that match region_id (and pid, if not 0) */
static void
fence_remove(Oid relid, int region_id, int pid)
{
	SpinLockAcquire(&fence_shared->mutex);
	for (int i = 0; i < CR_MAX_FENCES; i++)
	{
		FenceSlot  *f = &fence_shared->fences[i];

		if (OidIsValid(f->relid) && f->dbid == MyDatabaseId &&
			(relid == InvalidOid || f->relid == relid) &&
			f->region_id == region_id && (pid == 0 || f->pid == pid))
			fence_free(f);
	}
	SpinLockRelease(&fence_shared->mutex);
}

/* the error of a table that another region is changing */
static void
report_changing(Oid relid, int region_id, const char *hint)
{
	CrRegion   *region = cr_get_region_by_id(region_id);

	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("multi-region table \"%s\" is being changed by region \"%s\"",
					get_rel_name(relid), region ? region->name : "?"),
			 errdetail("A schema change stops the other regions' writes of the table until it reaches them."),
			 errhint("%s", hint)));
}

/*
 * Before a local write of the multi-region table root: refuse it while
 * another region's schema change of it is on its way here.
 */
void
cr_fence_check_write(Oid root)
{
	TimestampTz now;
	int			holder = 0;
	int			local_id;

	if (fence_shared == NULL || pg_atomic_read_u32(&fence_shared->used) == 0)
		return;
	local_id = cr_local_region_id(false);
	now = GetCurrentTimestamp();
	SpinLockAcquire(&fence_shared->mutex);
	for (int i = 0; i < CR_MAX_FENCES; i++)
	{
		FenceSlot  *f = &fence_shared->fences[i];

		if (OidIsValid(f->relid) && f->expires <= now)
			fence_free(f);
		else if (OidIsValid(f->relid) && f->dbid == MyDatabaseId && f->relid == root &&
				 f->stops_writes && f->region_id != local_id)
			holder = f->region_id;
	}
	SpinLockRelease(&fence_shared->mutex);
	if (holder != 0)
		report_changing(root, holder, "Retry the transaction.");
}

/*
 * The multi-region table schema.name, for the fence functions: looked up
 * without privilege checks (the link role, which alone may call them, has
 * USAGE only on the schemas where tables were enabled), without locking
 * it (writers of it hold locks the fence waits for).
 */
static Oid
fenced_table(text *schema, text *name)
{
	char	   *nspname = text_to_cstring(schema);
	char	   *relname = text_to_cstring(name);
	Oid			nspid = get_namespace_oid(nspname, true);
	Oid			relid = OidIsValid(nspid) ? get_relname_relid(relname, nspid) : InvalidOid;

	if (!OidIsValid(relid) || cr_get_table_config(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("multi-region table \"%s.%s\" does not exist in this region",
						nspname, relname),
				 errhint("If another region renamed it, retry once that change has arrived here.")));
	return relid;
}

/*
 * cosmosrep.fence_table(schema, name, region, stop_writes): called by a
 * region that is about to change the table (as its link role).  Fence the
 * table for it and return how far that region must apply this one's
 * changes: with stop_writes, once the transactions writing the table have
 * ended, the end of the last commit here that wrote multi-region rows;
 * otherwise the end of the last commit here that changed a multi-region
 * table's definition.
 */
Datum
cosmosrep_fence_table(PG_FUNCTION_ARGS)
{
	Oid			relid;
	int			region_id = PG_GETARG_INT16(2);
	bool		stop_writes = PG_GETARG_BOOL(3);
	int			holder;
	int			local_id;

	cr_require_preload();
	relid = fenced_table(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	local_id = cr_local_region_id(false);
	if (region_id == local_id || cr_get_region_by_id(region_id) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("region id %d is not another region of this group", region_id)));
	holder = fence_add(relid, region_id, 0, stop_writes);
	if (holder != 0)
		report_changing(relid, holder, "Retry the schema change when that one is done.");
	if (!stop_writes)
		PG_RETURN_LSN((XLogRecPtr) pg_atomic_read_u64(&fence_shared->last_change));

	/* wait for the writers that passed the fence, within the timeout */
	PG_TRY();
	{
		char		timeout[32];

		snprintf(timeout, sizeof(timeout), "%d", cr_ddl_fence_timeout_ms);
		(void) set_config_option("lock_timeout", timeout, PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
		LockRelationOid(relid, ShareLock);
		UnlockRelationOid(relid, ShareLock);
	}
	PG_CATCH();
	{
		fence_remove(relid, region_id, 0);
		PG_RE_THROW();
	}
	PG_END_TRY();
	PG_RETURN_LSN(cr_staleness_last_write_commit());
}

/* cosmosrep.unfence_table(schema, name, region): the change did not happen */
Datum
cosmosrep_unfence_table(PG_FUNCTION_ARGS)
{
	Oid			relid;

	cr_require_preload();
	relid = fenced_table(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1));
	fence_remove(relid, PG_GETARG_INT16(2), 0);
	PG_RETURN_VOID();
}

/* a peer fenced by this backend's change in progress */
typedef struct FencedPeer
{
	CrRegion   *region;
	PGconn	   *conn;
	XLogRecPtr	lsn;
} FencedPeer;

/* the call that fences (or unfences) the table in a peer, for this region */
static char *
fence_call(const char *function, const char *nspname, const char *relname,
		   const char *more)
{
	return psprintf("SELECT cosmosrep.%s(%s, %s, %d::pg_catalog.int2%s)", function,
					quote_literal_cstr(nspname), quote_literal_cstr(relname),
					cr_local_region_id(false), more);
}

/*
 * Fence the table in one peer, then wait until this region has applied
 * the peer's changes up to its answer.  A peer's refusal is this
 * statement's error.
 */
static void
fence_peer(FencedPeer *p, const char *nspname, const char *relname, bool stop_writes,
		   TimestampTz deadline)
{
	char	   *sql = fence_call("fence_table", nspname, relname,
								 stop_writes ? ", true" : ", false");
	PGresult   *res;
	RepOriginId origin;

	p->conn = cr_remote_connect(p->region->dsn, false, "cosmosrep schema change",
								p->region->name);
	res = cr_remote_exec_any(p->conn, sql, p->region->name);
	if (res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state && strcmp(state, "55P03") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("%s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)),
					 errdetail("Region \"%s\" refused to stop its writes of the table for this schema change.",
							   p->region->name),
					 errhint("Retry the schema change when that one is done.")));
		if (state && strcmp(state, "42883") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("region \"%s\" cannot take part in a schema change of multi-region table \"%s\"",
							p->region->name, relname),
					 errdetail("Its cosmosrep has no cosmosrep.fence_table()."),
					 errhint("Finish upgrading every region to cosmosrep 0.2 first.")));
	}
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
		cr_remote_fail(p->conn, res, sql, p->region->name);
	p->lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
											 CStringGetDatum(PQgetvalue(res, 0, 0))));
	PQclear(res);

	origin = replorigin_by_name(cr_origin_name(p->region->name), true);
	for (;;)
	{
		XLogRecPtr	applied = origin == InvalidRepOriginId ? InvalidXLogRecPtr :
			replorigin_get_progress(origin, false);

		if (applied >= p->lsn)
			return;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("schema change of multi-region table \"%s\" timed out waiting for region \"%s\"",
							relname, p->region->name),
					 errdetail(stop_writes ?
							   "This region has applied the changes of region \"%s\" up to %X/%X, not up to %X/%X, where its writes of the table end." :
							   "This region has applied the changes of region \"%s\" up to %X/%X, not up to %X/%X, where its last schema change ends.",
							   p->region->name, LSN_FORMAT_ARGS(applied),
							   LSN_FORMAT_ARGS(p->lsn)),
					 errhint("Retry when the region has caught up (cosmosrep.replication_status), or raise cosmosrep.ddl_fence_timeout.")));
		cr_sleep_ms(10);
	}
}

/*
 * Lift the peers' fences after the change failed (or was not made): sent
 * without waiting for an answer, as this runs while an error is being
 * handled; a peer that does not get it lifts the fence when it expires.
 * Then close the connections.
 */
static void
release_peers(List *peers, const char *unfence, bool lift)
{
	ListCell   *lc;

	foreach(lc, peers)
	{
		FencedPeer *p = lfirst(lc);

		if (p->conn == NULL)
			continue;
		if (lift && PQstatus(p->conn) == CONNECTION_OK && !PQisBusy(p->conn) &&
			PQsendQuery(p->conn, unfence))
			(void) PQflush(p->conn);
		PQfinish(p->conn);
		p->conn = NULL;
	}
}

/*
 * Before this region changes the multi-region table relid: fence it here
 * (refused if another region's change is on its way) and in every other
 * region, and apply their schema changes, and with stop_writes everything
 * they wrote.  Returns what cr_fence_end needs once the statement ran or
 * failed.
 */
CrFence *
cr_fence_peers(Oid relid, const char *nspname, const char *relname, bool stop_writes)
{
	int			local_id = cr_local_region_id(false);
	int			holder;
	int			own;
	CrFence    *state;
	ListCell   *lc;
	TimestampTz deadline;

	if (fence_shared == NULL)
		return NULL;

	/*
	 * An earlier change of the table in this transaction fenced it already.
	 * If that fence did not stop writes and this change needs it to, the
	 * wait for the other regions' writes cannot end: applying them needs
	 * the lock that the earlier change holds.
	 */
	own = own_fence(relid, local_id);
	if (own > 0 || (own == 0 && !stop_writes))
		return NULL;
	if (own == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a change of multi-region table \"%s\" that checks its rows must come first in its transaction",
						relname),
				 errdetail("It waits until this region has applied the other regions' writes of the table, which this transaction's earlier change of the table holds up."),
				 errhint("Run it in a transaction of its own, or before the other changes of the table.")));
	/* another region's change on its way here: wait for it, as for a lock */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), cr_ddl_fence_timeout_ms);
	while ((holder = fence_add(relid, local_id, MyProcPid, false)) != 0)
	{
		if (GetCurrentTimestamp() >= deadline)
			report_changing(relid, holder, "Retry the schema change when that one is done.");
		cr_sleep_ms(10);
	}
	changed_in_xact = true;

	state = palloc0(sizeof(CrFence));
	state->unfence = fence_call("unfence_table", nspname, relname, "");
	foreach(lc, cr_get_regions_cached())
	{
		CrRegion   *r = lfirst(lc);
		FencedPeer *p;

		if (r->is_local)
			continue;
		p = palloc0(sizeof(FencedPeer));
		p->region = r;
		state->peers = lappend(state->peers, p);
	}
	PG_TRY();
	{
		foreach(lc, state->peers)
			fence_peer(lfirst(lc), nspname, relname, stop_writes, deadline);
	}
	PG_CATCH();
	{
		release_peers(state->peers, state->unfence, true);
		fence_remove(relid, local_id, MyProcPid);
		PG_RE_THROW();
	}
	PG_END_TRY();
	/* later changes of the table in this transaction need no fence */
	(void) fence_add(relid, local_id, MyProcPid, stop_writes);
	return state;
}

/*
 * The statement ran (failed: false) or failed: close the connections; if
 * it failed, lift the peers' fences.  On success the change itself lifts
 * them where it arrives.
 */
void
cr_fence_end(CrFence *fence, bool failed)
{
	if (fence != NULL)
		release_peers(fence->peers, fence->unfence, failed);
}

/*
 * A schema change of relid from region_id was replayed here: its fence is
 * lifted when this transaction commits.
 */
void
cr_fence_lift_at_commit(Oid relid, int region_id)
{
	if (n_pending_lifts < CR_MAX_FENCES)
	{
		pending_lifts[n_pending_lifts].relid = relid;
		pending_lifts[n_pending_lifts].region_id = region_id;
		n_pending_lifts++;
	}
}

/*
 * The end of a transaction: lift the fences its replayed changes lifted
 * (on commit), and end this backend's own changes in progress.
 */
void
cr_fence_xact_event(XactEvent event)
{
	if (fence_shared == NULL ||
		(event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT))
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		for (int i = 0; i < n_pending_lifts; i++)
			fence_remove(pending_lifts[i].relid, pending_lifts[i].region_id, 0);
		if (changed_in_xact)
		{
			uint64		last = pg_atomic_read_u64(&fence_shared->last_change);

			while (XactLastCommitEnd > last &&
				   !pg_atomic_compare_exchange_u64(&fence_shared->last_change, &last,
												   XactLastCommitEnd))
				;
		}
	}
	n_pending_lifts = 0;
	changed_in_xact = false;
	if (pg_atomic_read_u32(&fence_shared->used) == 0)
		return;
	SpinLockAcquire(&fence_shared->mutex);
	for (int i = 0; i < CR_MAX_FENCES; i++)
	{
		FenceSlot  *f = &fence_shared->fences[i];

		if (OidIsValid(f->relid) && f->pid == MyProcPid)
			fence_free(f);
	}
	SpinLockRelease(&fence_shared->mutex);
}
