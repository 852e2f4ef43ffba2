/*-------------------------------------------------------------------------
 *
 * conflict.c
 *	  The one decision of apply: does a remote change win over what this
 *	  region holds for its key?
 *
 * NOTES
 *	  Every kind of remote change (insert, update, the delete and insert
 *	  halves of an update that changes the key, delete, the rows of an
 *	  enable) is decided here, against either the local row or, when
 *	  there is none, the newest tombstone of the key (a delete, or the
 *	  table's truncate horizon).  Versions are unique and totally ordered
 *	  (hlc.h), so "the higher version wins" gives every region the same
 *	  winner whatever the order in which the writes arrive: that is what
 *	  makes last-writer-wins converge.  An equal version is the same write
 *	  arriving twice (after a join's copy), which changes nothing.
 *
 * IDENTIFICATION
 *	  src/conflict.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "conflict.h"

/*
 * Whether a remote write at incoming_version replaces what local holds:
 * the row (an insert or update makes it the remote row, a delete removes
 * it) or the tombstone (an insert or update recreates the row).
 */
bool
cr_remote_wins(int64 incoming_version, const CrLocalState *local)
{
	return incoming_version > local->version;
}
