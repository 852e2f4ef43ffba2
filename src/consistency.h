/*-------------------------------------------------------------------------
 *
 * consistency.h
 *	  Consistency levels and session tokens.
 *
 * IDENTIFICATION
 *	  src/consistency.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_CONSISTENCY_H
#define CR_CONSISTENCY_H

#include "access/xact.h"

extern void cr_consistency_define_settings(void);
extern void cr_consistency_install_hooks(void);
extern bool cr_consistency_requires_single_writer(void);
extern bool cr_consistency_bounded(void);

extern int	cr_session_wait_timeout_ms;

extern void cr_consistency_xact_event(XactEvent event);

#endif							/* CR_CONSISTENCY_H */
