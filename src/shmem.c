/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Whether cosmosrep's shared memory exists, and the LWLocks it owns.
 *
 * NOTES
 *	  cosmosrep.c requests and initialises the shared memory of every
 *	  subsystem (only _PG_init may install the hooks); this file is the
 *	  bottom every other file may call: the named LWLock tranche, and the
 *	  check that the library was preloaded, without which there is no
 *	  shared memory and no worker.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/lwlock.h"

#include "shmem.h"

bool		cr_loaded_at_startup = false;

static LWLockPadded *cr_lwlocks = NULL;

/* find the tranche; from the shmem startup hook */
void
cr_shmem_attach_lwlocks(void)
{
	cr_lwlocks = GetNamedLWLockTranche("cosmosrep");
}

LWLock *
cr_shmem_lwlock(CrLWLockId id)
{
	Assert(cr_lwlocks != NULL);
	return &cr_lwlocks[id].lock;
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
