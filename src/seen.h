/*-------------------------------------------------------------------------
 *
 * seen.h
 *	  The writes a row has seen: a version vector per row.
 *
 * IDENTIFICATION
 *	  src/seen.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_SEEN_H
#define CR_SEEN_H

#include "fmgr.h"

extern bytea *cr_seen_add(const bytea *seen, int64 version);
extern bytea *cr_seen_merge(const bytea *a, const bytea *b);
extern bool cr_seen_covers(const bytea *seen, int64 version);
extern bytea *cr_seen_lost(const bytea *incoming_seen, const bytea *local_seen,
						   int region);
extern bytea *cr_seen_with_lost(const bytea *seen, const bytea *lost);
extern bytea *cr_seen_or_base(const bytea *seen, int64 version, int64 base);

#endif							/* CR_SEEN_H */
