/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  cosmosrep's shared memory: the LWLocks it owns.
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

extern LWLock *cr_shmem_lwlock(CrLWLockId id);

#endif							/* CR_SHMEM_H */
