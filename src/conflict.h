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

#include "access/htup.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/relcache.h"

typedef enum CrChangeKind
{
	CR_CHANGE_INSERT,
	CR_CHANGE_UPDATE,
	CR_CHANGE_DELETE
} CrChangeKind;

/*
 * The configuration of a truncate horizon: a truncate is ordered by its
 * version alone, in the region that makes it and in those that apply it.
 */
#define CR_CONFIG_ANY	(-1)

/*
 * a remote change: its kind, version, the version it replaced and the
 * version of the configuration it was made under
 */
typedef struct CrIncoming
{
	CrChangeKind kind;
	int64		version;
	int64		base;
	int64		config;
	bytea	   *seen;			/* the writes it had seen (seen.c), or NULL */
} CrIncoming;

/* what this region holds for the key of a remote change */
typedef struct CrLocalState
{
	bool		row_found;		/* a row with the key exists */
	int64		version;		/* its version; without a row, the newest
								 * delete or truncate of the key, or 0 */
	int64		base;			/* the version the row replaced; without a
								 * row, the version the delete removed */
	int64		config;			/* the configuration it was written under,
								 * or CR_CONFIG_ANY */
	bytea	   *seen;			/* the writes it had seen (seen.c), or NULL */
} CrLocalState;

typedef enum CrConflictKind
{
	CR_CONFLICT_NONE = 0,
	CR_CONFLICT_INSERT_EXISTS,	/* insert of a key that exists here */
	CR_CONFLICT_INSERT_DELETED, /* insert older than a delete of the key */
	CR_CONFLICT_UPDATE_UPDATE,	/* update against a concurrent update */
	CR_CONFLICT_UPDATE_DELETED, /* update of a row deleted concurrently */
	CR_CONFLICT_DELETE_UPDATED, /* delete of a row updated concurrently */
	CR_CONFLICT_UNIQUE,			/* a row of another key holds a value of a
								 * secondary unique index */
	CR_CONFLICT_APPLY_ERROR		/* user code (a trigger, a constraint)
								 * rejected the change */
} CrConflictKind;

typedef enum CrResolution
{
	CR_RESOLUTION_REMOTE_APPLIED,
	CR_RESOLUTION_LOCAL_KEPT,
	CR_RESOLUTION_MERGED,
	CR_RESOLUTION_PENDING,
	CR_RESOLUTION_ERROR,
	CR_RESOLUTION_TENTATIVE		/* by version until the arbiter's write
								 * arrives; recorded apart (feed.c) */
} CrResolution;

typedef enum CrPolicyKind
{
	CR_POLICY_LWW,				/* last_writer_wins on the row version */
	CR_POLICY_PATH,				/* last_writer_wins on a user column */
	CR_POLICY_CUSTOM,			/* a resolver function */
	CR_POLICY_MANUAL			/* LWW for now, every conflict in the feed */
} CrPolicyKind;

extern const char *const cr_policy_names[];
extern int	cr_policy_kind(const char *name, bool has_path);

/* a table's conflict policy, ready for apply */
typedef struct CrPolicy
{
	CrPolicyKind kind;
	char	   *name;			/* as cosmosrep.conflicts shows it */
	AttrNumber	path_att;		/* CR_POLICY_PATH: the column */
	Oid			path_collation;
	FmgrInfo	path_cmp;		/* its type's btree comparison */
	FmgrInfo	resolver;		/* CR_POLICY_CUSTOM */
	Oid			rowtype;
	AttrNumber	version_att;	/* cosmosrep's columns of the table */
	AttrNumber	base_att;
	AttrNumber	region_att;
	AttrNumber	config_att;
	AttrNumber	seen_att;
} CrPolicy;

/* how a remote change is applied, and whether it was a conflict */
typedef struct CrDecision
{
	CrConflictKind kind;
	CrResolution resolution;
	bool		apply_remote;	/* write the remote change as it came */
	bool		write_merged;	/* write the policy's row instead */
	bool		delete_merged;	/* or delete the key at merged_version */
	int64		merged_version;
	int64		merged_base;
	int64		merged_config;
	bytea	   *merged_seen;
	bytea	   *key;			/* the primary key, for conflicts the feed
								 * may hold (custom, manual), else NULL */
	char	   *error;			/* CR_RESOLUTION_ERROR */
	bool		by_configuration;	/* two writes of different configurations:
									 * the newer configuration's won */
	bytea	   *seen;			/* apply_remote: what the written row or
								 * tombstone has seen, if not incoming's */
} CrDecision;

/* the policy cosmosrep.conflicts shows for a decision by configuration */
#define CR_POLICY_NEWER_CONFIGURATION	"newer_configuration"

extern const char *const cr_resolution_names[];
extern const char *const cr_conflict_kind_names[];

extern bool cr_remote_wins(int64 incoming_version, const CrLocalState *local);
extern CrConflictKind cr_detect_conflict(const CrIncoming *incoming,
										 const CrLocalState *local);
extern CrPolicy *cr_policy_load(Relation rel, const char *policy,
								const char *path, const char *resolver);
extern Oid	cr_lookup_resolver(Relation rel, const char *name);
extern bool cr_policy_reads_rows(const CrPolicy *policy);
extern bool cr_remote_may_win(const CrPolicy *policy, const CrIncoming *incoming,
							  const CrLocalState *local);
extern CrDecision cr_decide_collision(const CrPolicy *policy, Relation rel,
									  const CrIncoming *incoming,
									  const CrLocalState *other,
									  TupleTableSlot *other_row,
									  TupleTableSlot *remote_row);
extern bool cr_error_is_transient(int sqlerrcode);
extern bool cr_call_resolver(const CrPolicy *policy, Relation rel, bytea *key,
							 Datum incoming, Datum existing, TupleTableSlot *merged,
							 bool *deleted, char **error);
extern bool cr_same_user_values(const CrPolicy *policy, TupleDesc desc,
								TupleTableSlot *a, TupleTableSlot *b);
extern CrDecision cr_decide(const CrPolicy *policy, Relation rel,
							const CrIncoming *incoming, const CrLocalState *local,
							TupleTableSlot *key, TupleTableSlot *local_row,
							TupleTableSlot *remote_row, TupleTableSlot *merged);

/* conflict_log.c */
extern void cr_record_conflict(Relation rel, const char *policy,
							   const CrIncoming *incoming, const CrLocalState *local,
							   const CrDecision *decision,
							   TupleTableSlot *local_row, TupleTableSlot *remote_row,
							   TupleTableSlot *winner_row);
extern void cr_flush_conflicts(void);
extern void cr_flush_some_conflicts(void);
extern void cr_conflicts_forget(void);
extern void cr_conflict_purge_history(void);
extern Datum cr_feed_rows(Oid relid, bytea *key, Oid rowtype);
extern void cr_conflict_waiting_scan(Oid relid, bytea *key,
									 void (*fn) (HeapTuple tup, TupleDesc desc, void *arg),
									 void *arg);
extern int64 cr_conflict_shape(TupleDesc desc);
extern TupleDesc cr_conflict_stored_shape(Oid relid, int64 shape);
extern void cr_conflict_deform_stored(Datum row, TupleDesc desc, Datum *values,
									  bool *nulls);

/* in conflict_log.c: settings */
extern int	cr_conflict_retention_s;
extern bool cr_record_resolved_conflicts;
extern void cr_conflict_log_define_settings(void);

#endif							/* CR_CONFLICT_H */
