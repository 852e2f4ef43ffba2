/*-------------------------------------------------------------------------
 *
 * hlc.h
 *	  Hybrid logical clock: row versions for cosmosrep.
 *
 * IDENTIFICATION
 *	  src/hlc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_HLC_H
#define CR_HLC_H

#include "access/xact.h"

#include "datatype/timestamp.h"

/*
 * A version is a positive int64:
 *
 *	 bit 63      0 (sign)
 *	 bits 62..21 milliseconds since 2020-01-01 00:00 UTC (42 bits)
 *	 bits 20..8  logical counter within that millisecond (13 bits)
 *	 bits  7..0  region id of the writer (1..255)
 *
 * Ordering versions as integers orders them by clock, then by region, so
 * two versions never compare equal unless they are the same write.
 */
#define CR_HLC_REGION_BITS		8
#define CR_HLC_LOGICAL_BITS		13

extern Size cr_hlc_shmem_size(void);
extern void cr_hlc_shmem_init(void);

extern int64 cr_hlc_next_version(int region_id);
extern int64 cr_hlc_next_id(int region_id);
extern void cr_hlc_observe(int64 version);
extern int64 cr_hlc_current(void);
extern int64 cr_hlc_stable_version(void);
extern void cr_hlc_xact_event(XactEvent event);
extern int64 cr_hlc_open_version(void);

extern int	cr_version_region(int64 version);
extern TimestampTz cr_version_time(int64 version);

extern int	cr_max_clock_skew_ms;
extern void cr_hlc_define_settings(void);

#endif							/* CR_HLC_H */
