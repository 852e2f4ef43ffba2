/*-------------------------------------------------------------------------
 *
 * stability.h
 *	  Causal stability: stable versions and the purge of tombstones.
 *
 * IDENTIFICATION
 *	  src/stability.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_STABILITY_H
#define CR_STABILITY_H

extern void cr_stability_announce(void);
extern int64 cr_stability_horizon(void);
extern int64 cr_stability_purge(void);

extern int	cr_stability_interval_ms;
extern void cr_stability_define_settings(void);

#endif							/* CR_STABILITY_H */
