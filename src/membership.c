/*-------------------------------------------------------------------------
 *
 * membership.c
 *	  Region membership after the join: registering a region that joins
 *	  (add_region), removing a region from the group (remove_region and
 *	  forget_region), pausing and resuming replication from a region.
 *
 * NOTES
 *	  Joining is join.c's.  Removing a region R from the group:
 *
 *	  1. R, when it can be reached, forgets every other region, so that it
 *		 stops streaming from them (an unreachable R is only reported);
 *	  2. this region forgets R: its row, the apply worker streaming from R
 *		 (stopped, with the launcher held off, and waited for), the origin
 *		 of R's stream, and the slot R streams from here (its walsender
 *		 ended, the drop retried while R reconnects);
 *	  3. every other remaining region forgets R the same way.
 *
 *	  Everything local happens in the caller's transaction.  The waits for
 *	  the worker and the slot are bounded by cosmosrep.remove_worker_timeout
 *	  and cosmosrep.remove_slot_timeout, defined here.
 *
 * IDENTIFICATION
 *	  src/membership.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "failover.h"
#include "join.h"
#include "launcher.h"
#include "membership.h"
#include "names.h"
#include "peers.h"
#include "remote.h"
#include "run_as.h"
#include "shmem.h"
#include "sql_api.h"
#include "wait.h"

/*
 * How long the launcher is kept from restarting the apply worker that
 * forget_region stopped: past the commit of the region's removal, in
 * practice, after which the launcher finds no region to stream from.
 */
#define WORKER_RESTART_HOLDOFF_MS	60000

/* how long pg_terminate_backend waits for the removed region's walsender */
#define WALSENDER_TERMINATE_WAIT_MS	5000

/* how often the waits for the worker and for the slot look again */
#define REMOVE_POLL_MS				10

/* settings */
static int	remove_worker_timeout_ms = 30000;
static int	remove_slot_timeout_ms = 30000;

PG_FUNCTION_INFO_V1(cosmosrep_add_region);
PG_FUNCTION_INFO_V1(cosmosrep_forget_region);
PG_FUNCTION_INFO_V1(cosmosrep_remove_region);
PG_FUNCTION_INFO_V1(cosmosrep_pause_region);
PG_FUNCTION_INFO_V1(cosmosrep_resume_region);

static void stop_apply_worker(int peer_id);
static CrRegion *lookup_peer(const char *name, const char *hint);
static void forget_region(const char *name);
static void drop_slot(const char *slot);
static void run_forget(CrRegion *r, const char *name, bool must_succeed);
static void forget_group_in(CrRegion *removed, List *regions);
static void set_paused(const char *name, bool paused);

/*
 * Define the settings of joining (join.c) and removing regions; called
 * from _PG_init.
 */
void
cr_membership_define_settings(void)
{
	cr_join_define_settings();
	DefineCustomIntVariable("cosmosrep.remove_worker_timeout",
							"How long removing a region waits for the apply worker streaming from it to stop.",
							NULL,
							&remove_worker_timeout_ms,
							30000, 1000, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.remove_slot_timeout",
							"How long removing a region keeps trying to drop the slot it streams from.",
							"The removed region may reconnect to its slot meanwhile; its walsender is ended before each attempt.",
							&remove_slot_timeout_ms,
							30000, 1000, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * Register a region that joins the group; called by join_region through
 * a connection from the joining region.
 */
Datum
cosmosrep_add_region(PG_FUNCTION_ARGS)
{
	int			id = PG_GETARG_INT16(0);
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *dsn = text_to_cstring(PG_GETARG_TEXT_PP(2));
	CrRegion	region = {id, name, dsn, false, 0, false, true};
	ListCell   *lc;

	cr_require_preload();
	cr_local_region_id(false);
	cr_validate_region_name(name);
	cr_validate_dsn(dsn);
	if (cr_get_region_by_name(name) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("region \"%s\" already exists", name)));
	if (cr_get_region_by_id(id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("region id %d is already used", id)));
	/* a group with one write region keeps it */
	foreach(lc, cr_get_regions())
		region.accepts_writes &= ((CrRegion *) lfirst(lc))->accepts_writes;
	cr_insert_region(&region);
	cr_write_regions_adopt_version(0);
	PG_RETURN_VOID();
}

/*
 * Stop the apply worker streaming from peer_id and wait until it is gone,
 * keeping the launcher from starting another one for a while (until this
 * transaction's removal of the peer commits, in practice).
 */
static void
stop_apply_worker(int peer_id)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   remove_worker_timeout_ms);

	if (!cr_peer_status_stop_worker(peer_id, WORKER_RESTART_HOLDOFF_MS))
		return;
	for (;;)
	{
		pid_t		pid = cr_peer_worker_pid(MyDatabaseId, peer_id);

		if (pid == 0 || kill(pid, 0) != 0)
			break;
		if (GetCurrentTimestamp() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("the apply worker of region %d did not stop", peer_id)));
		cr_sleep_ms(REMOVE_POLL_MS);
	}
}

/*
 * Another region of the group, by name; hint says what to do instead when
 * name is this region.
 */
static CrRegion *
lookup_peer(const char *name, const char *hint)
{
	CrRegion   *peer = cr_get_region_by_name(name);

	if (peer == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("region \"%s\" does not exist", name)));
	if (peer->is_local)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("region \"%s\" is this region", name),
				 errhint("%s", hint)));
	return peer;
}

/*
 * Remove a peer from this region only: its row, the slot it streams from
 * here and the origin of its stream.
 */
static void
forget_region(const char *name)
{
	CrRegion   *peer = lookup_peer(name, "Remove a region from another member of the group.");
	CrRegion   *local = cr_get_region_by_id(cr_local_region_id(false));
	char	   *slot;

	cr_delete_region(peer->id);
	stop_apply_worker(peer->id);
	replorigin_drop_by_name(cr_origin_name(name), true, false);

	slot = cr_slot_name(local->name, name);
	drop_slot(slot);
	cr_wake_launcher_at_commit();
}

/*
 * Drop a slot that the removed region may still be streaming from, and
 * may reconnect to at any moment: end its walsender and try to drop the
 * slot before the next connection takes it, for at most
 * cosmosrep.remove_slot_timeout.
 */
static void
drop_slot(const char *slot)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   remove_slot_timeout_ms);
	MemoryContext oldctx = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	while (SearchNamedReplicationSlot(slot, true) != NULL)
	{
		bool		dropped = false;

		SPI_connect();
		SPI_execute(psprintf("SELECT pg_catalog.pg_terminate_backend(active_pid, %d)"
							 " FROM pg_catalog.pg_replication_slots"
							 " WHERE slot_name OPERATOR(pg_catalog.=) %s AND active_pid IS NOT NULL",
							 WALSENDER_TERMINATE_WAIT_MS,
							 quote_literal_cstr(slot)), false, 0);
		SPI_finish();

		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			ReplicationSlotDrop(slot, true);
			ReleaseCurrentSubTransaction();
			dropped = true;
		}
		PG_CATCH();
		{
			/* taken again meanwhile: try once more */
			MemoryContextSwitchTo(oldctx);
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldctx);
		CurrentResourceOwner = oldowner;

		if (dropped)
			break;
		if (GetCurrentTimestamp() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("replication slot \"%s\" stays in use", slot),
					 errhint("Stop the region that streams from it, then call the function again.")));
		cr_sleep_ms(REMOVE_POLL_MS);
	}
}

/*
 * Forget a region here only; remove_region calls it in every region of
 * the group.
 */
Datum
cosmosrep_forget_region(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	forget_region(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * Remove a region from the group.  The removed region forgets the group
 * first, when it can be reached, so that it stops streaming from the
 * others; then every remaining region forgets it.
 */
Datum
cosmosrep_remove_region(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CrRegion   *removed;
	List	   *regions;
	ListCell   *lc;

	cr_require_preload();
	regions = cr_get_regions();
	removed = cr_get_region_by_name(name);
	if (removed != NULL && !removed->is_local)
		forget_group_in(removed, regions);

	forget_region(name);
	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);

		if (r->is_local || strcmp(r->name, name) == 0)
			continue;
		run_forget(r, name, true);
	}
	PG_RETURN_VOID();
}

/*
 * Call cosmosrep.forget_region(name) in region r; with must_succeed false
 * an unreachable region is only reported.
 */
static void
run_forget(CrRegion *r, const char *name, bool must_succeed)
{
	PGconn	   *conn;

	if (!must_succeed)
	{
		MemoryContext oldctx = CurrentMemoryContext;

		PG_TRY();
		{
			run_forget(r, name, true);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(oldctx);
			edata = CopyErrorData();
			FlushErrorState();
			ereport(WARNING,
					(errmsg("region \"%s\" could not forget region \"%s\": %s",
							r->name, name, edata->message)));
			FreeErrorData(edata);
		}
		PG_END_TRY();
		return;
	}

	conn = cr_remote_connect(r->dsn, false, "cosmosrep remove_region", r->name);
	PG_TRY();
	{
		PQclear(cr_remote_exec(conn,
							   psprintf("SELECT cosmosrep.forget_region(%s)",
										quote_literal_cstr(name)),
							   PGRES_TUPLES_OK, r->name));
	}
	PG_FINALLY();
	{
		PQfinish(conn);
	}
	PG_END_TRY();
}

/* the removed region forgets every other region, if it can be reached */
static void
forget_group_in(CrRegion *removed, List *regions)
{
	ListCell   *lc;

	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);

		if (r->id != removed->id)
			run_forget(removed, r->name, false);
	}
}

/* pause or resume replication from another region, here */
static void
set_paused(const char *name, bool paused)
{
	CrRegion   *peer;

	cr_require_preload();
	peer = lookup_peer(name, "Pause replication from the other regions instead.");
	cr_set_region_paused(peer->id, paused);
}

Datum
cosmosrep_pause_region(PG_FUNCTION_ARGS)
{
	set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	PG_RETURN_VOID();
}

Datum
cosmosrep_resume_region(PG_FUNCTION_ARGS)
{
	set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	PG_RETURN_VOID();
}
