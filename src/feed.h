/*-------------------------------------------------------------------------
 *
 * feed.h
 *	  The conflicts feed: resolving its entries, here and in every region.
 *
 * IDENTIFICATION
 *	  src/feed.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_FEED_H
#define CR_FEED_H

#include "utils/relcache.h"

extern void cr_feed_apply_resolved(const char *content, Size size,
								   const char *region);
extern void cr_feed_resolve_key(Relation rel, bytea *key, int64 version,
								const char *resolution, Datum winner, const char *by);
extern void cr_feed_take_over(void);

#endif							/* CR_FEED_H */
