/*-------------------------------------------------------------------------
 *
 * conflict.h
 *	  The one decision of apply, and conflicts: which remote change wins,
 *	  whether it collided with a write it had not seen, and the record of
 *	  that collision.
 *
 * IDENTIFICATION
 *	  src/conflict.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_CONFLICT_H
#define CR_CONFLICT_H

#include "executor/tuptable.h"
#include "utils/relcache.h"

typedef enum CrChangeKind
{
	CR_CHANGE_INSERT,
	CR_CHANGE_UPDATE,
	CR_CHANGE_DELETE
} CrChangeKind;

/* a remote change: its kind, version and the version it replaced */
typedef struct CrIncoming
{
	CrChangeKind kind;
	int64		version;
	int64		base;
} CrIncoming;

/* what this region holds for the key of a remote change */
typedef struct CrLocalState
{
	bool		row_found;		/* a row with the key exists */
	int64		version;		/* its version; without a row, the newest
								 * delete or truncate of the key, or 0 */
	int64		base;			/* the version the row replaced; without a
								 * row, the version the delete removed */
} CrLocalState;

typedef enum CrConflictKind
{
	CR_CONFLICT_NONE = 0,
	CR_CONFLICT_INSERT_EXISTS,	/* insert of a key that exists here */
	CR_CONFLICT_INSERT_DELETED, /* insert older than a delete of the key */
	CR_CONFLICT_UPDATE_UPDATE,	/* update against a concurrent update */
	CR_CONFLICT_UPDATE_DELETED, /* update of a row deleted concurrently */
	CR_CONFLICT_DELETE_UPDATED	/* delete of a row updated concurrently */
} CrConflictKind;

extern bool cr_remote_wins(int64 incoming_version, const CrLocalState *local);
extern CrConflictKind cr_detect_conflict(const CrIncoming *incoming,
										 const CrLocalState *local);
extern void cr_record_conflict(Relation rel, const char *policy,
							   CrConflictKind kind, const CrIncoming *incoming,
							   const CrLocalState *local,
							   TupleTableSlot *local_row,
							   TupleTableSlot *remote_row, bool remote_applied);
extern void cr_flush_conflicts(void);
extern void cr_conflict_purge_history(void);

#endif							/* CR_CONFLICT_H */
