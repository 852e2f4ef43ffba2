/*-------------------------------------------------------------------------
 *
 * hlc.c
 *	  The hybrid logical clock that issues row versions.
 *
 * NOTES
 *	  One clock per instance lives in shared memory.  Every local write
 *	  takes the next tick (max of wall clock and previous tick + 1) and
 *	  every applied remote version pushes the clock past it, so a write made
 *	  after a region has seen another write always carries a larger version.
 *	  The region id sits in the low bits of the version (see hlc.h): two
 *	  regions never issue the same version.
 *
 *	  Monotonicity across restarts and crashes does not rely on the wall
 *	  clock.  The clock never issues a tick at or beyond "reserved_ms" without
 *	  first writing a new reservation, a little ahead, durably to
 *	  $PGDATA/cosmosrep.hlc.  The reservation is renewed while it still has
 *	  HLC_RENEW_MS left, by one backend, so that writers do not queue up
 *	  behind its fsyncs.  At startup (including the shared memory
 *	  re-initialisation after a crash) the clock starts at the reservation,
 *	  hence above every tick issued before.
 *
 *	  Locking: "last_tick" and "reserved_ms" are read and written under the
 *	  spinlock "mutex".  Writing the reservation file happens under the
 *	  LWLock "file_lock" only, never while holding the spinlock.
 *
 * IDENTIFICATION
 *	  src/hlc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/twophase.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "hlc.h"
#include "names.h"
#include "shmem.h"

/* cosmosrep.max_clock_skew */
int			cr_max_clock_skew_ms = 60000;

#define HLC_FILE			"cosmosrep.hlc"
#define HLC_FILE_TMP		"cosmosrep.hlc.tmp"

/* how far ahead of the issued ticks a reservation reaches */
#define HLC_RESERVE_MS		10000

/* a reservation with less than this left is renewed before it runs out */
#define HLC_RENEW_MS		(HLC_RESERVE_MS / 4)

/* microseconds from the PostgreSQL epoch (2000-01-01) to 2020-01-01 */
#define HLC_EPOCH_OFFSET_US INT64CONST(631152000000000)

#define HLC_TICK_MS(tick)	((tick) >> CR_HLC_LOGICAL_BITS)

typedef struct HlcShared
{
	slock_t		mutex;			/* protects the two fields below */
	int64		last_tick;		/* last tick issued or observed */
	int64		reserved_ms;	/* no tick at or past this ms without a new
								 * reservation on disk */
	LWLock	   *file_lock;		/* serialises writes of HLC_FILE */

	/*
	 * The first version each backend issued in its open transaction, 0 if
	 * none, indexed by pgprocno: set under mutex with the tick, cleared by
	 * the backend when its transaction ends.  What is below every entry
	 * and the clock is stable (cr_hlc_stable_version).
	 */
	int64		open_version[FLEXIBLE_ARRAY_MEMBER];
} HlcShared;

static HlcShared *hlc = NULL;

static int64 hlc_now_ms(void);
static int64 hlc_next(int region_id, bool write);
static int64 hlc_read_reservation(void);
static void hlc_write_reservation(int64 reserved_ms);
static void hlc_extend_reservation(int64 ms, bool wait);
static bool hlc_set_last_tick(int64 tick);
static int	hlc_proc_slots(void);

/* one open-transaction entry per PGPROC */
static int
hlc_proc_slots(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

Size
cr_hlc_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(HlcShared, open_version),
							 mul_size(sizeof(int64), hlc_proc_slots())));
}

/*
 * Attach to (and on first call, initialise) the clock.  Called from the
 * shmem startup hook with AddinShmemInitLock held.
 */
void
cr_hlc_shmem_init(void)
{
	bool		found;

	hlc = ShmemInitStruct("cosmosrep hlc", cr_hlc_shmem_size(), &found);
	if (!found)
	{
		int64		reserved = hlc_read_reservation();

		SpinLockInit(&hlc->mutex);
		hlc->file_lock = cr_shmem_lwlock(CR_LWLOCK_HLC);
		hlc->reserved_ms = reserved;
		/* start above everything that may have been issued before */
		hlc->last_tick = reserved << CR_HLC_LOGICAL_BITS;
		memset(hlc->open_version, 0, sizeof(int64) * hlc_proc_slots());
	}
}

static int64
hlc_now_ms(void)
{
	return (GetCurrentTimestamp() - HLC_EPOCH_OFFSET_US) / 1000;
}

/*
 * Read the reservation left by a previous run; 0 when there is none.
 */
static int64
hlc_read_reservation(void)
{
	int			fd;
	int64		value = 0;
	ssize_t		n;

	fd = OpenTransientFile(HLC_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno == ENOENT)
			return 0;
		ereport(FATAL,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", HLC_FILE)));
	}
	n = read(fd, &value, sizeof(value));
	if (n != sizeof(value))
		ereport(FATAL,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not read file \"%s\": read %d of %zu bytes",
						HLC_FILE, (int) n, sizeof(value))));
	CloseTransientFile(fd);
	return value;
}

static void
hlc_write_reservation(int64 reserved_ms)
{
	int			fd;

	fd = OpenTransientFile(HLC_FILE_TMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", HLC_FILE_TMP)));
	errno = 0;
	if (write(fd, &reserved_ms, sizeof(reserved_ms)) != sizeof(reserved_ms))
	{
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", HLC_FILE_TMP)));
	}
	if (pg_fsync(fd) != 0)
		ereport(data_sync_elevel(ERROR),
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", HLC_FILE_TMP)));
	CloseTransientFile(fd);
	durable_rename(HLC_FILE_TMP, HLC_FILE, ERROR);
}

/*
 * Write a reservation reaching HLC_RESERVE_MS past ms, unless the one in
 * place already reaches more than HLC_RENEW_MS past it (another backend
 * renewed it meanwhile).  A backend whose tick is not covered waits for the
 * file lock; one renewing early (wait = false) leaves the renewal to the
 * backend that holds it: the others go on issuing ticks meanwhile, so that
 * the fsyncs of a renewal stall at most one write.
 */
static void
hlc_extend_reservation(int64 ms, bool wait)
{
	if (wait)
		LWLockAcquire(hlc->file_lock, LW_EXCLUSIVE);
	else if (!LWLockConditionalAcquire(hlc->file_lock, LW_EXCLUSIVE))
		return;

	SpinLockAcquire(&hlc->mutex);
	if (hlc->reserved_ms > ms + HLC_RENEW_MS)
	{
		SpinLockRelease(&hlc->mutex);
		LWLockRelease(hlc->file_lock);
		return;
	}
	SpinLockRelease(&hlc->mutex);

	hlc_write_reservation(ms + HLC_RESERVE_MS);

	SpinLockAcquire(&hlc->mutex);
	hlc->reserved_ms = Max(hlc->reserved_ms, ms + HLC_RESERVE_MS);
	SpinLockRelease(&hlc->mutex);
	LWLockRelease(hlc->file_lock);
}

/*
 * Make tick the last tick if the reservation covers it, and renew the
 * reservation if it is running short.  If it does not cover it, extend it
 * and return false: the caller takes its tick again.  Called with the
 * spinlock held; releases it.
 */
static bool
hlc_set_last_tick(int64 tick)
{
	int64		ms = HLC_TICK_MS(tick);
	bool		renew;

	if (ms >= hlc->reserved_ms)
	{
		SpinLockRelease(&hlc->mutex);
		hlc_extend_reservation(ms, true);
		return false;
	}
	renew = ms + HLC_RENEW_MS >= hlc->reserved_ms;
	hlc->last_tick = tick;
	SpinLockRelease(&hlc->mutex);
	if (renew)
		hlc_extend_reservation(ms, false);
	return true;
}

/*
 * Issue the next version for a write made by region_id.
 */
int64
cr_hlc_next_version(int region_id)
{
	return hlc_next(region_id, true);
}

/*
 * Issue the next value of the clock as an id, for cosmosrep.global_id():
 * unique across regions (region bits), rising in this region, above
 * everything issued before a crash or a step back of the wall clock (the
 * reservation), and no write: the transaction's open version is left
 * alone.
 */
int64
cr_hlc_next_id(int region_id)
{
	return hlc_next(region_id, false);
}

static int64
hlc_next(int region_id, bool write)
{
	int64		now_tick = hlc_now_ms() << CR_HLC_LOGICAL_BITS;

	Assert(region_id > 0 && region_id <= CR_MAX_REGION_ID);
	cr_require_preload();

	for (;;)
	{
		int64		tick;
		int64	   *open = &hlc->open_version[MyProc->pgprocno];

		SpinLockAcquire(&hlc->mutex);
		tick = Max(now_tick, hlc->last_tick + 1);
		/* under the mutex, so that no stable version passes it unseen */
		if (write && *open == 0)
			*open = (tick << CR_HLC_REGION_BITS) | region_id;
		if (hlc_set_last_tick(tick))
			return (tick << CR_HLC_REGION_BITS) | region_id;
	}
}


/*
 * The first version the open (or just committing) transaction issued, 0
 * if it wrote no row of a multi-region table.
 */
int64
cr_hlc_open_version(void)
{
	if (hlc == NULL || MyProc == NULL)
		return 0;
	return hlc->open_version[MyProc->pgprocno];
}

/*
 * The transaction that issued versions ends: they are no longer open.  A
 * transaction that issued versions cannot be prepared: its versions would
 * stay open after the backend moved on, unseen by the stable version.
 * Called last at every transaction event (cosmosrep.c).
 */
void
cr_hlc_xact_event(XactEvent event)
{
	int64	   *open;

	if (hlc == NULL || MyProc == NULL)
		return;
	open = &hlc->open_version[MyProc->pgprocno];
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (*open != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that wrote rows of multi-region tables")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			*open = 0;
			break;
		default:
			break;
	}
}

/*
 * The stable version of this region: every version at or below it that
 * this region issued belongs to a transaction that has ended, and every
 * version it issues from now on is higher.  Called by a process whose
 * next commit comes after the commits of those transactions in the WAL,
 * so a peer that has applied the caller's later commit has applied every
 * write of this region at or below the stable version.
 */
int64
cr_hlc_stable_version(void)
{
	int64		stable;
	int			slots = hlc_proc_slots();

	cr_require_preload();
	SpinLockAcquire(&hlc->mutex);
	stable = (hlc->last_tick << CR_HLC_REGION_BITS) | CR_MAX_REGION_ID;
	SpinLockRelease(&hlc->mutex);
	for (int i = 0; i < slots; i++)
	{
		int64		open = hlc->open_version[i];

		if (open != 0)
			stable = Min(stable, open - 1);
	}
	return stable;
}

/*
 * Push the clock past a version observed from another region.
 *
 * A version further ahead of this region's wall clock than
 * cosmosrep.max_clock_skew is refused with an error: accepting it would
 * drag the clock of every region forward for good (a wrong clock, or a
 * version a user's trigger wrote into _cr_version).
 */
void
cr_hlc_observe(int64 version)
{
	int64		tick = version >> CR_HLC_REGION_BITS;
	int64		ahead_ms = HLC_TICK_MS(tick) - hlc_now_ms();

	cr_require_preload();
	if (ahead_ms > cr_max_clock_skew_ms)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("version " INT64_FORMAT " of region %d is too far ahead of this region's clock",
						version, cr_version_region(version)),
				 errdetail("It is " INT64_FORMAT " ms ahead; cosmosrep.max_clock_skew allows %d ms.",
						   ahead_ms, cr_max_clock_skew_ms),
				 errhint("Synchronize the clocks of the regions, or raise cosmosrep.max_clock_skew if the version is legitimate.")));

	for (;;)
	{
		SpinLockAcquire(&hlc->mutex);
		if (tick <= hlc->last_tick)
		{
			SpinLockRelease(&hlc->mutex);
			return;
		}
		if (hlc_set_last_tick(tick))
			return;
	}
}

/*
 * The last tick issued or observed, as a version without region bits.
 */
int64
cr_hlc_current(void)
{
	int64		tick;

	cr_require_preload();
	SpinLockAcquire(&hlc->mutex);
	tick = hlc->last_tick;
	SpinLockRelease(&hlc->mutex);
	return tick << CR_HLC_REGION_BITS;
}

int
cr_version_region(int64 version)
{
	return (int) (version & CR_MAX_REGION_ID);
}

TimestampTz
cr_version_time(int64 version)
{
	int64		ms = HLC_TICK_MS(version >> CR_HLC_REGION_BITS);

	return ms * 1000 + HLC_EPOCH_OFFSET_US;
}

/*
 * The clock's setting: how far ahead a version from another region may be.
 */
void
cr_hlc_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.max_clock_skew",
							"How far ahead of this region's clock a version from another region may be.",
							"A change whose version is further ahead is refused, and replication from its region waits.",
							&cr_max_clock_skew_ms,
							60000, 1000, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}
