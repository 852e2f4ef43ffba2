/*-------------------------------------------------------------------------
 *
 * tombstone.h
 *	  Tombstones: the versions of deleted rows and of truncates.
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

extern bytea *cr_tombstone_key(Relation rel, TupleTableSlot *slot);
extern void cr_tombstone_record(Oid relid, bytea *key, int64 version);
extern int64 cr_tombstone_version(Oid relid, bytea *key);
extern void cr_tombstone_truncate(Oid relid, int64 version);
extern void cr_tombstone_forget_table(Oid relid);

#endif							/* CR_TOMBSTONE_H */
