/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Monitoring: what the apply workers of this database report.
 *
 * NOTES
 *	  cosmosrep.peer_status() reads the peer status table in shared memory
 *	  (launcher.h) and returns one row per peer region of the current
 *	  database; the view cosmosrep.replication_status joins it with the
 *	  regions.  Latency percentiles come from the ring of the last
 *	  CR_LATENCY_SAMPLES transactions: origin commit to local commit.
 *
 *	  An error can quote a row (a key that collided, a value a constraint
 *	  refused), so its text goes, as pg_stat_activity's queries do, only to
 *	  roles with the privileges of pg_read_all_stats (pg_monitor has them);
 *	  others read "<insufficient privilege>".
 *
 * IDENTIFICATION
 *	  src/status.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "catalog/pg_authid.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "names.h"
#include "peers.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(cosmosrep_peer_status);
PG_FUNCTION_INFO_V1(cosmosrep_peer_protocol_version);
PG_FUNCTION_INFO_V1(cosmosrep_library_version);

#define PEER_STATUS_COLS	14

static int	compare_int64(const void *a, const void *b);
static double percentile_ms(int64 *samples, int n, double fraction);

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* nearest-rank percentile of n sorted samples, in milliseconds */
static double
percentile_ms(int64 *samples, int n, double fraction)
{
	int			rank = (int) ceil(fraction * n);

	return samples[Max(rank, 1) - 1] / 1000.0;
}

Datum
cosmosrep_peer_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64	   *samples = palloc(sizeof(int64) * CR_LATENCY_SAMPLES);
	bool		may_read_errors = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	cr_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	for (int i = 0; i < cr_peer_status_count(); i++)
	{
		CrPeerStatus *ps = cr_peer_status(i);
		CrPeerStatus copy;
		Datum		values[PEER_STATUS_COLS];
		bool		nulls[PEER_STATUS_COLS];
		int			n;

		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_SHARED);
		if (!ps->in_use || ps->dboid != MyDatabaseId)
		{
			LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
			continue;
		}
		SpinLockAcquire(&ps->mutex);
		memcpy(&copy, ps, sizeof(CrPeerStatus));
		SpinLockRelease(&ps->mutex);
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));

		memset(nulls, 0, sizeof(nulls));
		n = copy.latency_count;
		memcpy(samples, copy.latency_us, sizeof(int64) * n);
		qsort(samples, n, sizeof(int64), compare_int64);

		values[0] = Int32GetDatum(copy.peer_id);
		values[1] = CStringGetTextDatum(CrPeerStateNames[copy.state]);
		values[2] = Int32GetDatum(copy.pid);
		nulls[2] = copy.pid <= 0;
		values[3] = LSNGetDatum(copy.received_lsn);
		values[4] = LSNGetDatum(copy.applied_lsn);
		values[5] = LSNGetDatum(copy.peer_end_lsn);
		values[6] = TimestampTzGetDatum(copy.last_commit_time);
		nulls[6] = copy.last_commit_time == 0;
		values[7] = Int64GetDatum(copy.transactions_applied);
		values[8] = Int64GetDatum(copy.changes_applied);
		values[9] = Float8GetDatum(n ? percentile_ms(samples, n, 0.50) : 0);
		nulls[9] = n == 0;
		values[10] = Float8GetDatum(n ? percentile_ms(samples, n, 0.99) : 0);
		nulls[10] = n == 0;
		values[11] = CStringGetTextDatum(may_read_errors ? copy.last_error :
										 "<insufficient privilege>");
		nulls[11] = copy.last_error[0] == '\0';
		values[12] = TimestampTzGetDatum(copy.last_error_at);
		nulls[12] = copy.last_error_at == 0;
		values[13] = Int64GetDatum(copy.conflicts);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	pfree(samples);
	return (Datum) 0;
}

/*
 * cosmosrep.peer_protocol_version(peer_id): the protocol version of the
 * stream from that peer region into this database, NULL before its apply
 * worker first started streaming.
 */
Datum
cosmosrep_peer_protocol_version(PG_FUNCTION_ARGS)
{
	int32		peer_id = PG_GETARG_INT32(0);
	int			version = 0;

	cr_require_preload();
	for (int i = 0; i < cr_peer_status_count(); i++)
	{
		CrPeerStatus *ps = cr_peer_status(i);

		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_SHARED);
		if (ps->in_use && ps->dboid == MyDatabaseId && ps->peer_id == peer_id)
		{
			SpinLockAcquire(&ps->mutex);
			version = ps->protocol_version;
			SpinLockRelease(&ps->mutex);
		}
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
		if (version != 0)
			break;
	}
	if (version == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(version);
}

/*
 * cosmosrep.library_version(): the version of the library this server
 * loaded, which is newer than pg_extension.extversion between the restart
 * on a new library and ALTER EXTENSION cosmosrep UPDATE.
 */
Datum
cosmosrep_library_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(CR_LIBRARY_VERSION));
}
