/*-------------------------------------------------------------------------
 *
 * apply.h
 *	  The apply worker, as the rest of cosmosrep sees it.
 *
 *	  Its files (apply_worker.c, apply_relation.c, apply_change.c,
 *	  apply_message.c, apply_batch.c, apply_stream.c, apply_spill.c) share
 *	  apply_internal.h, which nothing else includes.
 *
 * IDENTIFICATION
 *	  src/apply.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_APPLY_H
#define CR_APPLY_H

#include "fmgr.h"

extern void cr_apply_define_settings(void);

/* the bgworker entry point (launcher.c starts it by name) */
extern PGDLLEXPORT void cosmosrep_apply_main(Datum arg);

#endif							/* CR_APPLY_H */
