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

/* the newest delete of a key (or the table's truncate), or zeros */
typedef struct CrTombstone
{
	int64		version;		/* the delete's version */
	int64		base;			/* the version of the row it deleted */
	int64		config;			/* the configuration it was made under */
	bytea	   *seen;			/* the writes it had seen (seen.c), or NULL */
} CrTombstone;

extern bytea *cr_tombstone_key(Relation rel, TupleTableSlot *slot);
extern bool cr_tombstone_key_equal(const bytea *a, const bytea *b);
extern void cr_tombstone_record(Oid relid, bytea *key, int64 version,
								int64 base, int64 config, bytea *seen);
extern CrTombstone cr_tombstone_lookup(Oid relid, bytea *key);
extern void cr_tombstone_lookup_rows(Relation rel, TupleTableSlot **slots, int n,
									 int64 *versions);
extern void cr_tombstone_truncate(Oid relid, int64 version);
extern void cr_tombstone_forget_table(Oid relid);
extern Size cr_tombstone_shmem_size(void);
extern void cr_tombstone_shmem_init(void);
extern uint64 cr_tombstones_recorded(void);
extern int64 cr_newest_tombstone(void);
extern bool cr_tombstone_any(Oid relid);
extern void cr_lost_record(Oid relid, bytea *key, bytea *lost);
extern bytea *cr_lost_take(Oid relid, bytea *key);

#endif							/* CR_TOMBSTONE_H */
