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

extern void cr_feed_apply_resolved(const char *content, Size size,
								   const char *region);

#endif							/* CR_FEED_H */
