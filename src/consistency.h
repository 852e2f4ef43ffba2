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

extern void cr_consistency_define_settings(void);
extern void cr_consistency_install_hooks(void);

#endif							/* CR_CONSISTENCY_H */
