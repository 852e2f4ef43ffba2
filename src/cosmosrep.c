/*-------------------------------------------------------------------------
 *
 * cosmosrep.c
 *	  Module entry point: _PG_init and the shared memory hooks.
 *
 * NOTES
 *	  cosmosrep must be in shared_preload_libraries: it owns a clock in
 *	  shared memory and background workers.  The library is also loaded
 *	  later, by CREATE EXTENSION or as a logical decoding output plugin; in
 *	  that case _PG_init defines the settings only, and every function that
 *	  needs shared memory reports a clear error through
 *	  cr_require_preload() (shmem.c).
 *
 *	  This file is the top of the source tree and nothing includes it:
 *	  each subsystem defines its own settings, and exposes a size and an
 *	  init function for its shared memory, all called from here.
 *
 * IDENTIFICATION
 *	  src/cosmosrep.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "conflict.h"
#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "apply.h"
#include "consistency.h"
#include "ddl.h"
#include "ddl_fence.h"
#include "hlc.h"
#include "launcher.h"
#include "membership.h"
#include "names.h"
#include "peers.h"
#include "shmem.h"
#include "signing.h"
#include "stability.h"
#include "staleness.h"
#include "tables.h"
#include "tombstone.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void cr_shmem_request(void);
static void cr_xact_callback(XactEvent event, void *arg);
static void cr_shmem_startup(void);

void
_PG_init(void)
{
	/* each setting is defined by the file that reads it */
	cr_hlc_define_settings();
	cr_stability_define_settings();
	cr_conflict_log_define_settings();
	cr_tables_define_settings();
	cr_ddl_define_settings();
	cr_fence_define_settings();
	cr_consistency_define_settings();
	cr_staleness_define_settings();
	cr_membership_define_settings();
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
	cr_consistency_install_hooks();
	cr_ddl_install_hooks();
	RegisterXactCallback(cr_xact_callback, NULL);
}

static void
cr_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(add_size(add_size(add_size(add_size(cr_hlc_shmem_size(),
															   cr_launcher_shmem_size()),
													  cr_peers_shmem_size()),
											 cr_staleness_shmem_size()),
									add_size(add_size(cr_signing_shmem_size(),
													  cr_tombstone_shmem_size()),
											 cr_fence_shmem_size())));
	RequestNamedLWLockTranche("cosmosrep", CR_NUM_LWLOCKS);
}

static void
cr_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cr_shmem_attach_lwlocks();
	cr_hlc_shmem_init();
	cr_launcher_shmem_init();
	cr_peers_shmem_init();
	cr_staleness_shmem_init();
	cr_signing_shmem_init();
	cr_tombstone_shmem_init();
	cr_fence_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The end of every transaction, in one callback so that the order is
 * written down: staleness.c records a commit that wrote multi-region rows
 * in its ring, consistency.c then reads that ring and the clock's open
 * version to advance the session token, the clock forgets the versions
 * the transaction issued, and the schema change fences it lifted or held
 * end.
 */
static void
cr_xact_callback(XactEvent event, void *arg)
{
	cr_staleness_xact_event(event);
	cr_consistency_xact_event(event);
	cr_hlc_xact_event(event);
	cr_fence_xact_event(event);
}
