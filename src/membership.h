/*-------------------------------------------------------------------------
 *
 * membership.h
 *	  Region membership: the settings of joining and removing regions.
 *
 * IDENTIFICATION
 *	  src/membership.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_MEMBERSHIP_H
#define CR_MEMBERSHIP_H

extern void cr_membership_define_settings(void);

#endif							/* CR_MEMBERSHIP_H */
