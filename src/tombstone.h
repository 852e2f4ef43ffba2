/*-------------------------------------------------------------------------
 *
 * tombstone.h
 *	  Tombstones: the versions of deleted rows.
 *
 * IDENTIFICATION
 *	  src/tombstone.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_TOMBSTONE_H
#define CR_TOMBSTONE_H

#include "executor/tuptable.h"
#include "utils/relcache.h"

extern char *cr_tombstone_key(Relation rel, TupleTableSlot *slot);
extern void cr_tombstone_record(Oid relid, const char *key, int64 version);
extern int64 cr_tombstone_version(Oid relid, const char *key);
extern void cr_tombstone_forget_table(Oid relid);

#endif							/* CR_TOMBSTONE_H */
