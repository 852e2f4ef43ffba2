/*-------------------------------------------------------------------------
 *
 * conflict.h
 *	  The one decision of apply: does a remote change win over what this
 *	  region holds for its key?
 *
 * IDENTIFICATION
 *	  src/conflict.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_CONFLICT_H
#define CR_CONFLICT_H

/* what this region holds for the key of a remote change */
typedef struct CrLocalState
{
	bool		row_found;		/* a row with the key exists */
	int64		version;		/* its version; without a row, the newest
								 * delete or truncate of the key, or 0 */
} CrLocalState;

extern bool cr_remote_wins(int64 incoming_version, const CrLocalState *local);

#endif							/* CR_CONFLICT_H */
