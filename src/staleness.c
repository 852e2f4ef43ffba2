/*-------------------------------------------------------------------------
 *
 * staleness.c
 *	  Bounded staleness: how far the other regions are behind this
 *	  region's writes, and the waits that keep them within the bound.
 *
 * NOTES
 *	  Each commit that wrote multi-region rows is remembered in shared
 *	  memory (a ring of its end, its time and the running count of versions
 *	  written here; the latest end is what strong reads elsewhere wait for).  Another region has applied this region's writes up to
 *	  the confirmed position of its slot here (cr_<this region>_<it>), so
 *	  the versions after that position and the age of the oldest commit
 *	  after it are how far it is behind.
 *
 *	  Under cosmosrep.default_consistency = bounded_staleness, the first
 *	  write of a transaction to a multi-region table waits while a region
 *	  is more than cosmosrep.max_staleness_prefix versions or
 *	  cosmosrep.max_staleness_interval behind, and fails after
 *	  cosmosrep.session_wait_timeout.  A region that does not apply this
 *	  region's changes, because it is unreachable or because an operator
 *	  paused its link from here (pause_region there), counts like any
 *	  other: writes here stop within the bound.  Pausing it here
 *	  (pause_region in this region) takes it out of the bound.  A statement
 *	  under bounded_staleness in a region that has not applied another
 *	  region for longer than the interval (paused or not) waits, or fails,
 *	  likewise.
 *
 * IDENTIFICATION
 *	  src/staleness.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "names.h"
#include "pgstat.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "peers.h"
#include "staleness.h"
#include "wait.h"

typedef struct WriteCommit
{
	XLogRecPtr	end;
	TimestampTz time;
	uint64		versions_before;	/* written here before it */
} WriteCommit;

typedef struct StalenessShared
{
	slock_t		mutex;
	uint64		commits;		/* ever recorded; ring[commits % size] next */
	uint64		versions;
	XLogRecPtr	last_end;		/* the latest end of them */
	WriteCommit ring[FLEXIBLE_ARRAY_MEMBER];	/* cr_staleness_ring_size */
} StalenessShared;

/* how far a region is behind this region's writes */
typedef struct Behind
{
	uint64		versions;
	int64		ms;
} Behind;

static StalenessShared *staleness = NULL;

int			cr_max_staleness_prefix = 100000;
int			cr_max_staleness_interval_ms = 300000;
static int	cr_staleness_ring_size = 4096;

/* this backend's transaction: rows written, and whether checked */
static uint64 xact_versions = 0;
static bool xact_checked = false;

Size
cr_staleness_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(StalenessShared, ring),
							 mul_size(sizeof(WriteCommit), cr_staleness_ring_size)));
}

void
cr_staleness_shmem_init(void)
{
	bool		found;

	staleness = ShmemInitStruct("cosmosrep staleness", cr_staleness_shmem_size(), &found);
	if (!found)
	{
		SpinLockInit(&staleness->mutex);
		staleness->commits = 0;
		staleness->versions = 0;
		staleness->last_end = InvalidXLogRecPtr;
	}
}

/*
 * A commit that wrote xact_versions multi-region rows goes into the ring.
 * Called at every transaction event (cosmosrep.c).
 */
void
cr_staleness_xact_event(XactEvent event)
{
	if (event == XACT_EVENT_COMMIT && xact_versions > 0 && staleness != NULL &&
		XactLastCommitEnd != InvalidXLogRecPtr)
	{
		WriteCommit *c;

		SpinLockAcquire(&staleness->mutex);
		staleness->versions += xact_versions;
		c = &staleness->ring[staleness->commits++ % cr_staleness_ring_size];
		/* in ring order, though commits may end here out of LSN order */
		c->end = Max(staleness->last_end, XactLastCommitEnd);
		c->time = GetCurrentTransactionStopTimestamp();
		c->versions_before = staleness->versions - xact_versions;
		staleness->last_end = Max(staleness->last_end, c->end);
		SpinLockRelease(&staleness->mutex);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		xact_versions = 0;
		xact_checked = false;
	}
}

/*
 * The end of the last local commit that wrote multi-region rows: what a
 * strong read in another region waits for.
 */
XLogRecPtr
cr_staleness_last_write_commit(void)
{
	XLogRecPtr	end;

	SpinLockAcquire(&staleness->mutex);
	end = staleness->last_end;
	SpinLockRelease(&staleness->mutex);
	return end;
}

/*
 * How far a region whose slot here confirmed position confirmed is
 * behind this region's writes: from the oldest commit of the ring it has
 * not confirmed (a binary search: the ends grow along the ring).  Past
 * the ring's reach, at least as far as its oldest entry.
 */
static Behind
behind_at(XLogRecPtr confirmed, TimestampTz now)
{
	Behind		b = {0, 0};
	uint64		lo;
	uint64		hi;

	SpinLockAcquire(&staleness->mutex);
	lo = staleness->commits > cr_staleness_ring_size ? staleness->commits - cr_staleness_ring_size : 0;
	hi = staleness->commits;
	while (lo < hi)
	{
		uint64		mid = lo + (hi - lo) / 2;

		if (staleness->ring[mid % cr_staleness_ring_size].end > confirmed)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (lo < staleness->commits)
	{
		WriteCommit *c = &staleness->ring[lo % cr_staleness_ring_size];

		b.versions = staleness->versions - c->versions_before;
		b.ms = (now - c->time) / 1000;
	}
	SpinLockRelease(&staleness->mutex);
	return b;
}

/*
 * The region (not paused) furthest behind this region's writes, beyond the
 * bound, and how far; NULL if every region is within it.
 */
static CrRegion *
region_beyond_bound(List *regions, const char *local, Behind *behind)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *prefix = psprintf(CR_SLOT_PREFIX "%s_", local);
	CrRegion   *worst = NULL;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *slot = &ReplicationSlotCtl->replication_slots[i];
		XLogRecPtr	confirmed;
		char		name[NAMEDATALEN];
		ListCell   *lc;
		Behind		b;

		if (!slot->in_use || slot->data.database != MyDatabaseId)
			continue;
		SpinLockAcquire(&slot->mutex);
		confirmed = slot->data.confirmed_flush;
		strlcpy(name, NameStr(slot->data.name), NAMEDATALEN);
		SpinLockRelease(&slot->mutex);
		if (strncmp(name, prefix, strlen(prefix)) != 0)
			continue;
		b = behind_at(confirmed, now);
		/* room for this write: fewer than the bound behind */
		if (b.versions < (uint64) cr_max_staleness_prefix &&
			b.ms <= cr_max_staleness_interval_ms)
			continue;
		foreach(lc, regions)
		{
			CrRegion   *r = lfirst(lc);

			if (!r->is_local && !r->paused && strcmp(name + strlen(prefix), r->name) == 0 &&
				(worst == NULL || b.ms > behind->ms))
			{
				worst = r;
				*behind = b;
			}
		}
	}
	LWLockRelease(ReplicationSlotControlLock);
	return worst;
}

/*
 * Before the first write of a transaction to a multi-region table, under
 * bounded staleness: wait while a region is beyond the bound, or fail
 * after timeout_ms (the caller's cosmosrep.session_wait_timeout).  Counts
 * the row either way.
 */
void
cr_staleness_before_write(bool bounded, int timeout_ms)
{
	List	   *regions;
	CrRegion   *local = NULL;
	TimestampTz deadline;
	ListCell   *lc;

	xact_versions++;
	if (!bounded || xact_checked || staleness == NULL)
		return;
	xact_checked = true;
	regions = cr_get_regions_cached();
	foreach(lc, regions)
		if (((CrRegion *) lfirst(lc))->is_local)
			local = lfirst(lc);
	if (local == NULL)
		return;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	for (;;)
	{
		Behind		b;
		CrRegion   *r = region_beyond_bound(regions, local->name, &b);

		if (r == NULL)
			return;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("bounded staleness exceeded: region \"%s\" is behind the writes of this region",
							r->name),
					 errdetail("It has not applied " UINT64_FORMAT " versions written here, the oldest " INT64_FORMAT " ms ago; the bound is %d versions or %d ms.",
							   b.versions, b.ms, cr_max_staleness_prefix,
							   cr_max_staleness_interval_ms),
					 errhint("Retry once region \"%s\" catches up, pause it to take it out of the bound, or relax cosmosrep.default_consistency.",
							 r->name)));
		cr_sleep_ms(10);
	}
}

/*
 * Before a statement under bounded staleness: wait while this region has
 * not applied a region for longer than the interval, or fail after
 * timeout_ms (the caller's cosmosrep.session_wait_timeout).  Returns
 * whether it waited.
 */
bool
cr_staleness_before_read(int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   timeout_ms);
	List	   *regions = cr_get_regions_cached();
	bool		waited = false;
	ListCell   *lc;

	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);

		if (r->is_local)
			continue;
		for (;;)
		{
			int64		lag_ms = cr_peer_lag_ms(MyDatabaseId, r->id);

			if (lag_ms <= cr_max_staleness_interval_ms)
				break;
			if (GetCurrentTimestamp() >= deadline)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("bounded staleness exceeded in this region"),
						 errdetail("It is " INT64_FORMAT " ms behind region \"%s\"; the bound is %d ms.",
								   lag_ms, r->name, cr_max_staleness_interval_ms),
						 errhint("Retry, read in another region, or relax cosmosrep.consistency.")));
			waited = true;
			cr_sleep_ms(10);
		}
	}
	return waited;
}

/*
 * The bounds of bounded staleness, and how many commits of this region
 * the ring remembers.
 */
void
cr_staleness_define_settings(void)
{
	/* a size of shared memory: only while the library is preloaded */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("cosmosrep.staleness_commits",
								"How many of this region's latest commits that wrote multi-region rows are remembered to measure how far other regions are behind.",
								"A region further behind than this many commits counts as behind by all of them.",
								&cr_staleness_ring_size,
								4096, 64, 1024 * 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.max_staleness_prefix",
							"Under bounded_staleness, how many versions written here another region may lag behind.",
							"Writes wait while a region is further behind.",
							&cr_max_staleness_prefix,
							100000, 1, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.max_staleness_interval",
							"Under bounded_staleness, how long another region may lag behind the writes here.",
							"Writes wait while a region is further behind; reads wait while this region is.",
							&cr_max_staleness_interval_ms,
							300000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}
