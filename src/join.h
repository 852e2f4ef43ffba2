/*-------------------------------------------------------------------------
 *
 * join.h
 *	  Joining a group (cosmosrep.join_region, join.c).
 *
 * IDENTIFICATION
 *	  src/join.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_JOIN_H
#define CR_JOIN_H

extern void cr_join_define_settings(void);

#endif							/* CR_JOIN_H */
