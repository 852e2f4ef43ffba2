/*-------------------------------------------------------------------------
 *
 * failover.h
 *	  The roles of regions: failover priorities, the multi-host connection
 *	  string, write regions.
 *
 * IDENTIFICATION
 *	  src/failover.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_FAILOVER_H
#define CR_FAILOVER_H

extern void cr_failover_apply_message(const char *content, Size size);
extern void cr_write_regions_apply_message(const char *content, Size size);

#endif							/* CR_FAILOVER_H */
