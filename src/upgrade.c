/*-------------------------------------------------------------------------
 *
 * upgrade.c
 *	  pg_upgrade of one region of a running group:
 *	  cosmosrep.prepare_upgrade in the old cluster, before it stops, and
 *	  cosmosrep.finish_upgrade in the new one, after pg_upgrade.
 *
 * NOTES
 *	  pg_upgrade of PostgreSQL 15 keeps the region's tables, cosmosrep's
 *	  catalog among them, but not its replication slots (cr_<this>_<peer>,
 *	  from which every peer streams this region's writes), nor the progress
 *	  of its replication origins (how far it applied each peer's stream),
 *	  nor the hybrid clock's reservation file in the data directory
 *	  (hlc.c).  It does move the new cluster's WAL past the old one's end.
 *
 *	  prepare_upgrade (a procedure: it commits between its steps) first
 *	  records the upgrade in cosmosrep.upgrade (upgrade_stop_writes): from
 *	  its commit the row trigger refuses local writes to multi-region
 *	  tables and the launcher stops the apply workers of the region, as if
 *	  every peer were paused.  Then upgrade_drain waits for the workers to
 *	  exit, for the local writers still running (a SHARE lock on every
 *	  multi-region table and partition), and for every peer to confirm
 *	  this region's stream up to the end of its WAL (the peer's slot
 *	  here); and saves the progress of every origin
 *	  (cosmosrep.upgrade_origin) and the clock.  Nothing this region
 *	  wrote is then missing anywhere, and no peer's change it applied is
 *	  forgotten.
 *
 *	  Memory: everything is allocated in the caller's (the function
 *	  call's) context; no state outlives a call.
 *
 *	  finish_upgrade, in the new cluster: pushes the clock past the saved
 *	  one, creates the slot of every peer that has none at the current
 *	  WAL position (past everything the old cluster wrote; the peers'
 *	  origins for this region point into the old WAL, and their next
 *	  START_REPLICATION is moved forward to the slot's start), restores
 *	  the origins' progress, and forgets the upgrade, which resumes writes
 *	  and apply.  Called in the old cluster instead (to abandon an
 *	  upgrade, or after prepare_upgrade failed) it finds the slots and
 *	  origins in place and only resumes.
 *
 *	  The slots are created over a replication connection to the region
 *	  itself, before this transaction writes anything (the creation waits
 *	  for every transaction that has an xid).
 *
 * IDENTIFICATION
 *	  src/upgrade.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_replication_origin.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "hlc.h"
#include "names.h"
#include "peers.h"
#include "remote.h"
#include "shmem.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(cosmosrep_upgrade_stop_writes);
PG_FUNCTION_INFO_V1(cosmosrep_upgrade_drain);
PG_FUNCTION_INFO_V1(cosmosrep_finish_upgrade);

/* how often the waits of upgrade_drain look again */
#define UPGRADE_POLL_MS			100

static void upgrade_spi(const char *sql, int nargs, Oid *argtypes, Datum *values,
						int expected);
static void invalidate_local_region(void);
static void drain_timeout(TimestampTz deadline, const char *peer, const char *slot,
						  XLogRecPtr lsn);
static bool slot_confirmed(const char *slot, XLogRecPtr lsn);

/* run sql on cosmosrep's upgrade tables, expecting SPI result expected */
static void
upgrade_spi(const char *sql, int nargs, Oid *argtypes, Datum *values, int expected)
{
	SPI_connect();
	if (cr_catalog_query(NULL, sql, nargs, argtypes, values, NULL, false) != expected)
		elog(ERROR, "unexpected result of \"%s\"", sql);
	SPI_finish();
}

/*
 * The write check caches the state of the upgrade with the local region
 * (catalog.c): make every backend read it again at commit.
 */
static void
invalidate_local_region(void)
{
	CacheInvalidateRelcacheByRelid(get_relname_relid("region", cr_schema_oid()));
}

/*
 * Step 1 of cosmosrep.prepare_upgrade: record the upgrade, which stops
 * local writes and apply at commit.  A region whose earlier
 * prepare_upgrade failed while draining is recorded already and drains
 * again; one that drained is prepared already.
 */
Datum
cosmosrep_upgrade_stop_writes(PG_FUNCTION_ARGS)
{
	const char *name;

	cr_require_preload();
	(void) cr_local_region_id(false);
	name = cr_local_region_name();
	SPI_connect();
	(void) cr_catalog_query(NULL, "SELECT wal_end IS NOT NULL FROM cosmosrep.upgrade",
							0, NULL, NULL, NULL, true);
	if (SPI_processed > 0)
	{
		bool		drained = strcmp(SPI_getvalue(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1), "t") == 0;

		SPI_finish();
		if (drained)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("region \"%s\" is already prepared for an upgrade", name),
					 errhint("Stop the server and run pg_upgrade, then call cosmosrep.finish_upgrade() in the new cluster; or call it here to resume without upgrading.")));
		PG_RETURN_VOID();
	}
	SPI_finish();
	upgrade_spi("INSERT INTO cosmosrep.upgrade DEFAULT VALUES", 0, NULL, NULL, SPI_OK_INSERT);
	invalidate_local_region();
	PG_RETURN_VOID();
}

/*
 * The error of a wait of upgrade_drain that ran out of time, if it did:
 * for the apply worker of peer's stream, or with slot, for peer's
 * confirmation of this region's WAL up to lsn.
 */
static void
drain_timeout(TimestampTz deadline, const char *peer, const char *slot, XLogRecPtr lsn)
{
	if (GetCurrentTimestamp() <= deadline)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("region \"%s\" could not be prepared for an upgrade in time",
					cr_local_region_name()),
			 slot == NULL ?
			 errdetail("The apply worker of the stream from region \"%s\" is still running.",
					   peer) :
			 errdetail("Region \"%s\" has not confirmed the writes of this region up to %X/%X (replication slot \"%s\").",
					   peer, LSN_FORMAT_ARGS(lsn), slot),
			 errhint("The region refuses writes to multi-region tables until cosmosrep.finish_upgrade() is called.  "
					 "Check cosmosrep.replication_status in every region, then call cosmosrep.prepare_upgrade() again.")));
}

/* whether slot exists and its peer confirmed everything before lsn */
static bool
slot_confirmed(const char *slot, XLogRecPtr lsn)
{
	bool		confirmed = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (!s->in_use || strcmp(NameStr(s->data.name), slot) != 0)
			continue;
		SpinLockAcquire(&s->mutex);
		confirmed = s->data.confirmed_flush >= lsn;
		SpinLockRelease(&s->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return confirmed;
}

/*
 * Step 2 of cosmosrep.prepare_upgrade(timeout): wait, for at most
 * timeout in all, until no apply worker of the region runs, no local
 * writer is left, and every peer confirmed the region's WAL up to its
 * end; then save the origins' progress and the clock.  Returns the end of
 * the WAL that every peer confirmed.
 */
Datum
cosmosrep_upgrade_drain(PG_FUNCTION_ARGS)
{
	Interval   *timeout = PG_GETARG_INTERVAL_P(0);
	TimestampTz deadline;
	List	   *regions;
	ListCell   *lc;
	XLogRecPtr	wal_end;
	const char *local;

	cr_require_preload();
	(void) cr_local_region_id(false);
	local = pstrdup(cr_local_region_name());
	deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													   TimestampTzGetDatum(GetCurrentTimestamp()),
													   IntervalPGetDatum(timeout)));
	if (!cr_upgrade_prepared())
		elog(ERROR, "region \"%s\" has not stopped its writes for an upgrade", local);
	regions = cr_get_regions();

	/* the launcher stops the apply workers */
	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);

		if (r->is_local)
			continue;
		while (cr_peer_worker_pid(MyDatabaseId, r->id) != 0)
		{
			drain_timeout(deadline, r->name, NULL, InvalidXLogRecPtr);
			cr_sleep_ms(UPGRADE_POLL_MS);
		}
	}

	/* the writers that started before the writes stopped */
	SPI_connect();
	(void) cr_catalog_query(NULL, "SELECT relid::pg_catalog.oid FROM cosmosrep.replicated_table",
							0, NULL, NULL, NULL, true);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		/* a partitioned table with its partitions, which take writes */
		(void) find_all_inheritors(DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																  SPI_tuptable->tupdesc, 1,
																  &isnull)),
								   ShareLock, NULL);
	}
	SPI_finish();

	/* every peer has everything this region wrote */
	wal_end = GetXLogInsertRecPtr();
	XLogFlush(wal_end);
	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);
		char	   *slot;

		if (r->is_local)
			continue;
		slot = cr_slot_name(local, r->name);
		while (!slot_confirmed(slot, wal_end))
		{
			drain_timeout(deadline, r->name, slot, wal_end);
			cr_sleep_ms(UPGRADE_POLL_MS);
		}
	}

	/* how far this region applied each peer, and its clock */
	upgrade_spi("DELETE FROM cosmosrep.upgrade_origin", 0, NULL, NULL, SPI_OK_DELETE);
	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);
		RepOriginId origin;
		Oid			argtypes[2] = {INT2OID, LSNOID};
		Datum		values[2];

		if (r->is_local)
			continue;
		origin = replorigin_by_name(cr_origin_name(r->name), true);
		if (origin == InvalidRepOriginId)
			continue;
		values[0] = Int16GetDatum(r->id);
		values[1] = LSNGetDatum(replorigin_get_progress(origin, true));
		upgrade_spi("INSERT INTO cosmosrep.upgrade_origin (region_id, remote_lsn)"
					" VALUES ($1, $2)",
					2, argtypes, values, SPI_OK_INSERT);
	}
	{
		Oid			argtypes[2] = {LSNOID, INT8OID};
		Datum		values[2] = {LSNGetDatum(wal_end), Int64GetDatum(cr_hlc_current())};

		upgrade_spi("UPDATE cosmosrep.upgrade"
					" SET wal_end = $1, clock = $2, drained_at = pg_catalog.now()",
					2, argtypes, values, SPI_OK_UPDATE);
	}
	PG_RETURN_LSN(wal_end);
}

/*
 * Create the logical slot named slot over repl, at the current position.
 */
static void
create_slot(PGconn *repl, const char *slot, const char *region)
{
	PGresult   *res = cr_remote_exec(repl,
									 psprintf("CREATE_REPLICATION_SLOT %s LOGICAL %s (SNAPSHOT 'nothing')",
											  slot, COSMOSREP_PLUGIN),
									 PGRES_TUPLES_OK, region);

	PQclear(res);
}

/*
 * cosmosrep.finish_upgrade(): after pg_upgrade, in the new cluster (or in
 * the old one, to resume without upgrading): the clock, the peers' slots,
 * the origins' progress, then writes and apply resume at commit.
 */
Datum
cosmosrep_finish_upgrade(PG_FUNCTION_ARGS)
{
	CrRegion   *self;
	List	   *regions;
	ListCell   *lc;
	PGconn	   *repl = NULL;
	bool		isnull;
	int64		clock;

	cr_require_preload();
	/* the slot creation below would wait for this transaction's xid */
	PreventInTransactionBlock(true, "cosmosrep.finish_upgrade()");
	self = cr_get_region_by_id(cr_local_region_id(false));
	SPI_connect();
	(void) cr_catalog_query(NULL, "SELECT clock FROM cosmosrep.upgrade",
							0, NULL, NULL, NULL, true);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("region \"%s\" is not prepared for an upgrade", self->name),
				 errhint("Call cosmosrep.prepare_upgrade() in the region before it stops for pg_upgrade.")));
	clock = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										&isnull));
	if (isnull)
		clock = 0;
	SPI_finish();

	/* the clock never goes back: past every version of the old cluster */
	if (clock > 0)
		cr_hlc_observe(clock);

	/* every peer's slot, before this transaction writes */
	regions = cr_get_regions();
	PG_TRY();
	{
		foreach(lc, regions)
		{
			CrRegion   *r = lfirst(lc);
			char	   *slot;

			if (r->is_local)
				continue;
			slot = cr_slot_name(self->name, r->name);
			if (SearchNamedReplicationSlot(slot, true) != NULL)
				continue;
			if (repl == NULL)
				repl = cr_remote_connect(self->dsn, true, "cosmosrep upgrade", self->name);
			create_slot(repl, slot, self->name);
		}
	}
	PG_FINALLY();
	{
		if (repl != NULL)
			PQfinish(repl);
	}
	PG_END_TRY();

	/* how far each peer's stream was applied */
	LockRelationOid(ReplicationOriginRelationId, RowExclusiveLock);
	SPI_connect();
	(void) cr_catalog_query(NULL, "SELECT region_id, remote_lsn FROM cosmosrep.upgrade_origin",
							0, NULL, NULL, NULL, true);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		int			peer_id = DatumGetInt16(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		CrRegion   *peer = NULL;
		XLogRecPtr	lsn = DatumGetLSN(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		char	   *origin_name;
		RepOriginId origin;

		foreach(lc, regions)
		{
			if (((CrRegion *) lfirst(lc))->id == peer_id)
				peer = lfirst(lc);
		}
		if (peer == NULL)
			continue;
		origin_name = cr_origin_name(peer->name);
		origin = replorigin_by_name(origin_name, true);
		if (origin == InvalidRepOriginId)
			origin = replorigin_create(origin_name);
		replorigin_advance(origin, lsn, InvalidXLogRecPtr, false, true);
	}
	SPI_finish();

	upgrade_spi("DELETE FROM cosmosrep.upgrade_origin", 0, NULL, NULL, SPI_OK_DELETE);
	upgrade_spi("DELETE FROM cosmosrep.upgrade", 0, NULL, NULL, SPI_OK_DELETE);
	invalidate_local_region();
	PG_RETURN_VOID();
}
