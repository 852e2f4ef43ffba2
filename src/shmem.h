/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Whether cosmosrep's shared memory exists, and the LWLocks it owns.
 *
 * IDENTIFICATION
 *	  src/shmem.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_SHMEM_H
#define CR_SHMEM_H

#include "storage/lwlock.h"

typedef enum CrLWLockId
{
	CR_LWLOCK_HLC = 0,			/* hlc.c: the reservation file */
	CR_LWLOCK_WORKERS,			/* launcher.c: worker slots */
	CR_NUM_LWLOCKS
} CrLWLockId;

/* set by _PG_init when the library is preloaded */
extern bool cr_loaded_at_startup;

extern void cr_shmem_attach_lwlocks(void);
extern LWLock *cr_shmem_lwlock(CrLWLockId id);
extern void cr_require_preload(void);

#endif							/* CR_SHMEM_H */
