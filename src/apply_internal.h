/*-------------------------------------------------------------------------
 *
 * apply_internal.h
 *	  What the files of the apply worker share, and nothing else includes.
 *
 * NOTES
 *	  The apply worker is split as PostgreSQL's own apply is:
 *	  apply_worker.c (the worker: connection, stream loop, groups of remote
 *	  transactions, feedback, status), apply_relation.c (the map of the
 *	  peer's relations onto local tables, their conflict policies and the
 *	  executor state of each table in the open transaction),
 *	  apply_change.c (what each kind of row change does to a table) and
 *	  apply_message.c (what each MESSAGE of the stream does), with
 *	  apply_batch.c (consecutive inserts of a table written together,
 *	  under apply_change.c's insert handler), apply_stream.c (a streamed
 *	  transaction applied as it arrives) and apply_spill.c (what waits
 *	  meanwhile).  The worker
 *	  calls down into the other three; they call back only for the
 *	  transaction check, the connection to the peer, the stable version
 *	  and, for the rows of an enabled table, cr_apply_dispatch.  The public
 *	  entry points are in apply.h.
 *
 *	  Everything here runs in the apply worker alone.
 *
 * IDENTIFICATION
 *	  src/apply_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_APPLY_INTERNAL_H
#define CR_APPLY_INTERNAL_H

#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "replication/logicalproto.h"
#include "utils/rel.h"
#include "utils/resowner.h"

#include "conflict.h"
#include "tombstone.h"

/* a remote relation and how it maps onto the local table */
typedef struct ApplyRel
{
	LogicalRepRelId remoteid;	/* hash key */
	LogicalRepRelation *remoterel;	/* in CrApplyContext */
	bool		map_valid;
	Oid			localrelid;
	int			natts;			/* local attributes */
	int		   *remote_index;	/* local attno - 1 -> remote column, -1,
								 * or CR_REMOTE_ABSENT */
	FmgrInfo   *infuncs;
	Oid		   *ioparams;
	char	  **absent_text;	/* per CR_REMOTE_ABSENT column: the value
								 * recorded when it was added, or NULL */
	AttrNumber	version_att;
	AttrNumber	base_att;
	AttrNumber	config_att;
	AttrNumber	seen_att;
	CrPolicy   *policy;			/* conflict policy, in policy_cxt */
	int64		policy_version; /* the version of its configuration */
	List	   *past_policies;	/* of PastPolicy: older configurations
								 * that changes were made under */
	MemoryContext policy_cxt;
	bool		policy_valid;	/* false until read, and after the table's
								 * configuration or columns change */
	struct ApplyExec *exec;		/* open in the current transaction, or NULL */
} ApplyRel;

/* the policy of an earlier configuration of a table, from its history */
typedef struct PastPolicy
{
	int64		config_version;
	CrPolicy   *policy;
} PastPolicy;

/*
 * The executor state of a table in the open local transaction: opened
 * at its first change, closed at commit (or before DDL on it).
 */
typedef struct ApplyExec
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epqstate;
	TupleTableSlot *remoteslot;	/* the remote row */
	TupleTableSlot *keyslot;	/* the old key of an update that changed it */
	TupleTableSlot *localslot;	/* the local row with the remote key */
	TupleTableSlot *otherslot;	/* the local row with an update's new key */
	TupleTableSlot *mergedslot; /* the row a conflict policy wrote */
	int			nunique;		/* secondary unique indexes on columns */
	Oid		   *unique_indexes;
	TupleTableSlot **colliders; /* a local row per such index */
	bool	   *collided;		/* whether it holds one */
	Oid			pkindex;
	Oid			owner;			/* changes are applied as this role */
	CrTombstone horizon;		/* the table's truncate horizon: it cannot
								 * change while the table is open here */

	/*
	 * A partitioned table: rel is the partitioned table (policies,
	 * tombstones, conflicts), and cr_exec_route points rri, pkindex, the
	 * local row slots and the unique indexes above at the leaf partition
	 * of each row (apply_relation.c).
	 */
	struct PartitionTupleRouting *proute;	/* NULL for an ordinary table */
	struct ModifyTableState *mtstate;
	ResultRelInfo *root_rri;
	ResourceOwner resowner;		/* owns the leaves, whatever opens them */
	List	   *leaves;			/* of ApplyLeaf */
	struct ApplyBatch *batch;	/* its buffered inserts (apply_batch.c) */
} ApplyExec;

/* apply_worker.c: the worker's state */
extern MemoryContext CrApplyContext;	/* the worker's lifetime */
extern MemoryContext CrApplyMessageContext;	/* reset after each message */
extern MemoryContext CrApplyTransactionContext;	/* reset at each local commit */
extern char *CrPeerName;
extern char *CrPeerDsn;
extern PGconn *CrPeerSqlConn;	/* plain SQL, opened when needed */
extern bool cr_in_remote_transaction;
extern int	cr_changes_in_transaction;	/* of the open local transaction */
extern int	cr_conflicts_in_transaction;
extern bool cr_local_writes_in_transaction;	/* resolutions: writes of this
											 * region to send */

/*
 * The key under which a failure of streamed transaction xid, while it was
 * applied as it arrived, is recorded in the peer status (where other
 * failures count against a transaction's final LSN, which no WAL position
 * of this form can be): the next worker spills that transaction.
 */
#define CR_STREAM_FAILURE_KEY(xid)		((XLogRecPtr) (UINT64CONST(0xFFFFFFFF00000000) | (xid)))
#define CR_IS_STREAM_FAILURE_KEY(lsn)	(((lsn) >> 32) == UINT64CONST(0xFFFFFFFF))

extern bool cr_apply_replaying;	/* applying a streamed transaction's queue */

extern void cr_apply_dispatch(StringInfo s);
extern void cr_apply_remote_begin(XLogRecPtr final_lsn);
extern void cr_apply_remote_commit(XLogRecPtr end_lsn, TimestampTz committime);
extern void cr_apply_group_commit(void);
extern void cr_apply_keep_alive(void);
extern bool cr_apply_group_empty(void);
extern void cr_apply_stable_version(int64 version);
extern void cr_apply_check_in_transaction(void);
extern PGconn *cr_apply_connect(bool replication, const char *appname);

/* apply_relation.c: the relation map and each table's executor state */
/* a local column that a peer's row of an older shape does not have */
#define CR_REMOTE_ABSENT	(-2)

extern void cr_relmap_init(void);
extern void cr_absent_column_value(ApplyRel *ar, TupleDesc desc, int i,
								   Datum *value, bool *isnull);
extern void cr_handle_relation(StringInfo s);
extern bool cr_relation_changes(StringInfo s);
extern ApplyRel *cr_apply_rel_lookup(LogicalRepRelId remoteid);
extern ApplyExec *cr_exec_open(ApplyRel *ar);
extern void cr_exec_route(ApplyExec *ex, TupleTableSlot *row);
extern const CrPolicy *cr_apply_rel_policy(ApplyRel *ar, Relation rel);
extern const CrPolicy *cr_policy_at(ApplyRel *ar, Relation rel,
									int64 config_version);
extern void cr_exec_close_all(void);

/* apply_change.c: the changes */
extern void cr_apply_change(LogicalRepMsgType action, StringInfo s);
extern void cr_apply_change_carefully(LogicalRepMsgType action, StringInfo s);
extern void cr_handle_message(StringInfo s);
extern void cr_apply_insert_again(ApplyRel *ar, TupleTableSlot *row,
								  const CrIncoming *incoming);

/* apply_batch.c: consecutive inserts of a table written together */
extern bool cr_batch_allowed;
extern XLogRecPtr cr_batch_transaction;
extern XLogRecPtr cr_batch_failing;
extern uint64 cr_batched_rows;
extern uint64 cr_batch_reruns;
extern bool cr_batch_add(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
						 const CrIncoming *incoming);
extern void cr_batch_flush(void);
extern bool cr_unique_values_kept(ApplyExec *ex, int unique, TupleTableSlot *row,
								  TupleTableSlot *self);

/* apply_stream.c and apply_spill.c: streamed transactions, their spill files and the queue */
typedef struct CrSpill CrSpill;

extern void cr_stream_route(StringInfo s);
extern TransactionId cr_stream_direct_xid(void);
extern void cr_stream_spill_after_failure(TransactionId xid);

extern void cr_spill_queue_append(const char *data, int len);
extern bool cr_spill_queue_empty(void);
extern CrSpill *cr_spill_queue_take(void);
extern CrSpill *cr_spill_lookup(TransactionId xid, bool create);
extern CrSpill *cr_spill_forget(TransactionId xid);
extern void cr_spill_append(CrSpill *sp, TransactionId subxid, const char *data,
							int len);
extern void cr_spill_abort_sub(CrSpill *sp, TransactionId subxid);
extern bool cr_spill_read(CrSpill *sp, StringInfo buf);
extern void cr_spill_close(CrSpill *sp);

#endif							/* CR_APPLY_INTERNAL_H */
