/*-------------------------------------------------------------------------
 *
 * cosmosrep.c
 *	  Module entry point: _PG_init, settings and shared memory.
 *
 * NOTES
 *	  cosmosrep must be in shared_preload_libraries: it owns a clock in
 *	  shared memory and background workers.  The library is also loaded
 *	  later, by CREATE EXTENSION or as a logical decoding output plugin; in
 *	  that case _PG_init defines the settings only, and every function that
 *	  needs shared memory reports a clear error through
 *	  cr_require_preload().
 *
 *	  This file is the one owner of the shared memory hooks: each subsystem
 *	  exposes a size and an init function that are called from here.
 *
 * IDENTIFICATION
 *	  src/cosmosrep.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "apply.h"
#include "consistency.h"
#include "cosmosrep.h"
#include "hlc.h"
#include "launcher.h"
#include "shmem.h"
#include "signing.h"
#include "staleness.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

bool		cr_loaded_at_startup = false;

/* settings */
int			cr_max_clock_skew_ms = 60000;
int			cr_stability_interval_ms = 10000;
int			cr_conflict_retention_s = 7 * 24 * 3600;
bool		cr_record_resolved_conflicts = true;

static LWLockPadded *cr_lwlocks = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void cr_shmem_request(void);
static void cr_shmem_startup(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("cosmosrep.max_clock_skew",
							"How far ahead of this region's clock a version from another region may be.",
							"A change whose version is further ahead is refused, and replication from its region waits.",
							&cr_max_clock_skew_ms,
							60000, 1000, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.stability_interval",
							"How often a region announces its stable version and purges tombstones.",
							"Tombstones go once every region has applied past them; this is how soon after.",
							&cr_stability_interval_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cosmosrep.conflict_retention",
							"How long resolved conflicts stay in cosmosrep.conflicts.",
							"Pending and error entries stay until they are resolved.",
							&cr_conflict_retention_s,
							7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("cosmosrep.record_resolved_conflicts",
							 "Whether conflicts that a policy resolved are recorded in cosmosrep.conflicts.",
							 "Off, they are only counted in replication_status; pending and error entries (the feed) are always recorded.",
							 &cr_record_resolved_conflicts,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	cr_consistency_define_settings();
	cr_apply_define_settings();
	MarkGUCPrefixReserved("cosmosrep");

	if (!process_shared_preload_libraries_in_progress)
		return;

	cr_loaded_at_startup = true;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cr_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cr_shmem_startup;

	cr_launcher_register();
	cr_hlc_register_callback();
	cr_consistency_install_hooks();
}

static void
cr_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(add_size(add_size(add_size(cr_hlc_shmem_size(),
													  cr_launcher_shmem_size()),
											 cr_staleness_shmem_size()),
									cr_signing_shmem_size()));
	RequestNamedLWLockTranche("cosmosrep", CR_NUM_LWLOCKS);
}

static void
cr_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cr_lwlocks = GetNamedLWLockTranche("cosmosrep");
	cr_hlc_shmem_init();
	cr_launcher_shmem_init();
	cr_staleness_shmem_init();
	cr_signing_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

LWLock *
cr_shmem_lwlock(CrLWLockId id)
{
	Assert(cr_lwlocks != NULL);
	return &cr_lwlocks[id].lock;
}

/*
 * Act as owner, with SECURITY_RESTRICTED_OPERATION, an empty search_path
 * and a GUC nesting level that undoes the settings owner's code changes,
 * as core's subscriptions do without run_as_owner (and as index builds do,
 * which PostgreSQL 17 also gives a fixed search_path): what a table
 * owner's code runs while cosmosrep works on the table (apply, the
 * careful path, the join's copy, enable's rows, the feed functions) never
 * runs as a superuser or as the caller, and never resolves a name through
 * the caller's search_path.  Callers resolve every name they need before
 * switching, or qualify it.  An error restores the identity and the
 * settings with the (sub)transaction's abort.
 */
void
cr_switch_to_owner(Oid owner, CrUserContext *context)
{
	GetUserIdAndSecContext(&context->save_userid, &context->save_sec_context);
	context->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SetUserIdAndSecContext(owner,
						   context->save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
cr_restore_user(CrUserContext *context)
{
	AtEOXact_GUC(false, context->save_nestlevel);
	SetUserIdAndSecContext(context->save_userid, context->save_sec_context);
}

/*
 * Report an error unless the library was preloaded: shared memory and the
 * workers exist only then.
 */
void
cr_require_preload(void)
{
	if (!cr_loaded_at_startup)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cosmosrep must be loaded via \"shared_preload_libraries\""),
				 errhint("Add cosmosrep to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
}
