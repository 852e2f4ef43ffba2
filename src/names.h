/*-------------------------------------------------------------------------
 *
 * names.h
 *	  The names cosmosrep gives to replication slots and origins.
 *
 * NOTES
 *	  Region P's changes reach region L through the slot "cr_<P>_<L>" on
 *	  P, and L records how far it applied them in the replication origin
 *	  "cosmosrep_<P>".  Every place that names a slot or an origin builds
 *	  the name here.  Region names are at most 28 characters, so a slot
 *	  name fits NAMEDATALEN.
 *
 * IDENTIFICATION
 *	  src/names.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_NAMES_H
#define CR_NAMES_H

#include "utils/palloc.h"

/* every slot of cosmosrep starts so */
#define CR_SLOT_PREFIX			"cr_"

/* the slot that carries source's changes to target, palloc'd */
static inline char *
cr_slot_name(const char *source, const char *target)
{
	return psprintf(CR_SLOT_PREFIX "%s_%s", source, target);
}

/* the origin that records how far peer's changes are applied, palloc'd */
static inline char *
cr_origin_name(const char *peer)
{
	return psprintf("cosmosrep_%s", peer);
}

#endif							/* CR_NAMES_H */
