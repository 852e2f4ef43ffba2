/*-------------------------------------------------------------------------
 *
 * staleness.h
 *	  Bounded staleness: how far regions are behind, and the waits that
 *	  keep them within the bound.
 *
 * IDENTIFICATION
 *	  src/staleness.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_STALENESS_H
#define CR_STALENESS_H

#include "access/xact.h"

#include "access/xlogdefs.h"

extern int	cr_max_staleness_prefix;
extern int	cr_max_staleness_interval_ms;

extern void cr_staleness_define_settings(void);
extern Size cr_staleness_shmem_size(void);
extern void cr_staleness_shmem_init(void);
extern void cr_staleness_xact_event(XactEvent event);
extern void cr_staleness_before_write(bool bounded, int timeout_ms);
extern bool cr_staleness_before_read(int timeout_ms);
extern XLogRecPtr cr_staleness_last_write_commit(void);

#endif							/* CR_STALENESS_H */
