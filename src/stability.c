/*-------------------------------------------------------------------------
 *
 * stability.c
 *	  Causal stability: the stable versions regions send each other, and
 *	  the purge of tombstones that every region has applied past.
 *
 * NOTES
 *	  A tombstone may go only when no change older than it can still
 *	  arrive, from any region: otherwise that change would recreate the row
 *	  here and nowhere else.  Each region's launcher therefore announces,
 *	  every cosmosrep.stability_interval, its stable version
 *	  (cr_hlc_stable_version: every write of the region at or below it has
 *	  committed or aborted, and every later one is higher) in a
 *	  non-transactional message of its own stream, which is decoded at its
 *	  place in the WAL, after every transaction committed before it.  The
 *	  apply worker of a peer records it once everything it received before
 *	  the message is committed here: the peer has then applied every write
 *	  of that region at or below it.
 *
 *	  A region's purge horizon is the lowest of its own stable version and
 *	  the last stable version applied from every other region of the
 *	  group; a region that has announced nothing yet (or whose worker has
 *	  not run since this server started: the values live in shared memory)
 *	  holds the horizon at 0.  A paused or unreachable region holds it at
 *	  its last announcement, so tombstones are kept for as long as a
 *	  partition lasts and not one change longer.  Tombstones at or below
 *	  the horizon are purged by the launcher after each announcement, and
 *	  by cosmosrep.purge_tombstones().
 *
 * IDENTIFICATION
 *	  src/stability.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "catalog.h"
#include "hlc.h"
#include "names.h"
#include "peers.h"
#include "protocol.h"
#include "shmem.h"
#include "signing.h"
#include "stability.h"

/* cosmosrep.stability_interval */
int			cr_stability_interval_ms = 10000;

PG_FUNCTION_INFO_V1(cosmosrep_purge_tombstones);
PG_FUNCTION_INFO_V1(cosmosrep_purge_horizon);

/*
 * Announce this region's stable version to the other regions.  Not
 * transactional: it is in the WAL, after every commit it covers, at once.
 */
void
cr_stability_announce(void)
{
	char	   *text;

	if (!XLogLogicalInfoActive())
		return;
	text = psprintf(INT64_FORMAT, cr_hlc_stable_version());
	cr_log_message(CR_STABLE_MESSAGE_PREFIX, text, strlen(text) + 1, false);
}

/*
 * The purge horizon of this region (see the file's notes); 0 when some
 * region has announced nothing yet.  The caller is in a transaction.
 */
int64
cr_stability_horizon(void)
{
	int64		horizon = cr_hlc_stable_version();
	ListCell   *lc;

	foreach(lc, cr_get_regions())
	{
		CrRegion   *r = lfirst(lc);

		if (!r->is_local)
			horizon = Min(horizon, cr_peer_stable_version(MyDatabaseId, r->id));
	}
	return horizon;
}

/*
 * Drop the tombstones at or below the purge horizon; returns how many.
 */
int64
cr_stability_purge(void)
{
	int64		horizon = cr_stability_horizon();
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int64		purged;

	if (horizon <= 0)
		return 0;
	values[0] = Int64GetDatum(horizon);
	purged = cr_catalog_write(NULL,
							  "DELETE FROM cosmosrep.tombstone"
							  " WHERE version OPERATOR(pg_catalog.<=) $1",
							  1, argtypes, values, NULL, SPI_OK_DELETE);
	return purged;
}

Datum
cosmosrep_purge_tombstones(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	cr_local_region_id(false);
	PG_RETURN_INT64(cr_stability_purge());
}

Datum
cosmosrep_purge_horizon(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	cr_local_region_id(false);
	PG_RETURN_INT64(cr_stability_horizon());
}

/*
 * How often stable versions are announced and tombstones purged.
 */
void
cr_stability_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.stability_interval",
							"How often a region announces its stable version and purges tombstones.",
							"Tombstones go once every region has applied past them; this is how soon after.",
							&cr_stability_interval_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}
