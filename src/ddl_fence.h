/*-------------------------------------------------------------------------
 *
 * ddl_fence.h
 *	  The fence of a schema change (ddl_fence.c).
 *
 * IDENTIFICATION
 *	  src/ddl_fence.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_DDL_FENCE_H
#define CR_DDL_FENCE_H

#include "access/xact.h"

typedef struct CrFence CrFence;

extern int	cr_ddl_fence_timeout_ms;

extern Size cr_fence_shmem_size(void);
extern void cr_fence_shmem_init(void);
extern void cr_fence_define_settings(void);
extern void cr_fence_check_write(Oid root);
extern CrFence *cr_fence_peers(Oid relid, const char *nspname, const char *relname,
							   bool stop_writes);
extern void cr_fence_end(CrFence *fence, bool failed);
extern void cr_fence_lift_at_commit(Oid relid, int region_id);
extern void cr_fence_xact_event(XactEvent event);

#endif							/* CR_DDL_FENCE_H */
