/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  Background workers of cosmosrep: the supervisor and the launchers.
 *
 * IDENTIFICATION
 *	  src/launcher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_LAUNCHER_H
#define CR_LAUNCHER_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "storage/spin.h"

#define CR_MAX_DATABASES		64

extern void cr_launcher_define_settings(void);
extern Size cr_launcher_shmem_size(void);
extern void cr_launcher_shmem_init(void);
extern void cr_launcher_register(void);

extern void cr_wake_launcher_at_commit(void);

/* bgworker entry points */
extern PGDLLEXPORT void cosmosrep_supervisor_main(Datum arg);
extern PGDLLEXPORT void cosmosrep_launcher_main(Datum arg);

#endif							/* CR_LAUNCHER_H */
