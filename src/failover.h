/*-------------------------------------------------------------------------
 *
 * failover.h
 *	  Failover priorities of regions and the multi-host connection string.
 *
 * IDENTIFICATION
 *	  src/failover.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_FAILOVER_H
#define CR_FAILOVER_H

extern void cr_failover_apply_message(const char *content, Size size);

#endif							/* CR_FAILOVER_H */
