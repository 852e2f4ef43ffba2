/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  The apply worker: streams one peer region's changes and applies them.
 *
 * NOTES
 *	  One apply worker runs per (database, peer region).  It connects to
 *	  the peer in replication mode and runs START_REPLICATION on the slot
 *	  "cr_<peer>_<local>" from the position stored in the replication origin
 *	  "cosmosrep_<peer>".  Each remote transaction is applied whole inside
 *	  one local transaction that commits with replorigin_session_origin_lsn
 *	  set to the remote commit's end, so the origin advances atomically with
 *	  the data: after a crash of either side the stream restarts exactly
 *	  after the last applied transaction (exactly once).  Consecutive
 *	  remote transactions share one local transaction, a group (see
 *	  handle_commit); while catching up a backlog the worker reads the
 *	  stream a millisecond at a time, so that groups fill (see
 *	  BACKLOG_AGE_MS).
 *
 *	  Rows are applied at executor level: primary key index lookup
 *	  (RelationFindReplTupleByIndex) and ExecSimpleRelationInsert/Update/
 *	  Delete, with session_replication_role = replica so that the row
 *	  trigger keeps the incoming versions.  Each change runs as the table's
 *	  owner with SECURITY_RESTRICTED_OPERATION (change_begin).  Whether a
 *	  change wins, and whether it conflicts, is decided in conflict.c,
 *	  against the local row or the newest tombstone of its key; the
 *	  handlers here only find what the region holds and carry out the
 *	  decision.
 *
 *	  Feedback: every second, and when the peer asks, the worker reports
 *	  as flushed the end of the last applied group whose local commit the
 *	  WAL writer has flushed (or, once everything applied is flushed and no
 *	  transaction is open, everything received), so the peer's slot
 *	  retains what is not yet safe here.
 *
 *	  Memory: ApplyContext lives as long as the worker (relation map, the
 *	  list of local commits not yet flushed);
 *	  ApplyTransactionContext holds the executor state of each table for
 *	  one local transaction (a group) and is reset at its commit;
 *	  ApplyMessageContext is reset after every protocol message.
 *
 * IDENTIFICATION
 *	  src/apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/tablecmds.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "names.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/logicalproto.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "conflict.h"
#include "failover.h"
#include "feed.h"
#include "hlc.h"
#include "launcher.h"
#include "protocol.h"
#include "remote.h"
#include "run_as.h"
#include "shmem.h"
#include "tables.h"
#include "tombstone.h"

#define FEEDBACK_INTERVAL_MS	1000
#define UNFLUSHED_WAIT_MS		10

/*
 * A group (the remote transactions applied in one local transaction) holds
 * at most MAX_GROUP_TRANSACTIONS.  A group whose newest remote transaction
 * committed at the peer more than BACKLOG_AGE_MS ago belongs to a backlog:
 * before committing it when the stream runs dry, the worker sleeps
 * BACKLOG_WAIT_MS on its latch and reads what arrived meanwhile.  Those
 * transactions are late already; reading them a millisecond at a time
 * fills the groups (each local commit wakes the WAL writer, a kill() that
 * costs more than applying a row) and spares the walsender a wake-up of
 * this worker with every send().
 */
#define MAX_GROUP_TRANSACTIONS	100

/*
 * A remote transaction whose changes failed this many times in a row
 * (each failure stops the worker, which the launcher restarts with
 * backoff) is applied once more change by change, each in a
 * subtransaction: a change that user code rejects again goes to the
 * conflicts feed as an error entry, and the stream goes on behind it.
 * So are the transactions after it, until the stream runs dry (a cause
 * that rejects one change often rejects its neighbours), each committed
 * on its own.
 */
#define APPLY_ATTEMPTS			3
#define BACKLOG_AGE_MS			1000
#define BACKLOG_WAIT_MS			1

/* a remote relation and how it maps onto the local table */
typedef struct ApplyRel
{
	LogicalRepRelId remoteid;	/* hash key */
	LogicalRepRelation *remoterel;	/* in ApplyContext */
	bool		map_valid;
	Oid			localrelid;
	int			natts;			/* local attributes */
	int		   *remote_index;	/* local attno - 1 -> remote column, -1 */
	FmgrInfo   *infuncs;
	Oid		   *ioparams;
	AttrNumber	version_att;
	AttrNumber	base_att;
	AttrNumber	config_att;
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
} ApplyExec;

static MemoryContext ApplyContext = NULL;
static MemoryContext ApplyMessageContext = NULL;
static MemoryContext ApplyTransactionContext = NULL;
static List *open_rels = NIL;	/* ApplyRels with an exec, in ApplyTransactionContext */
static HTAB *ApplyRelMap = NULL;
static Oid	ConfigRelid = InvalidOid;	/* cosmosrep.replicated_table */

static CrPeerStatus *MyPeer = NULL;
static int	MyPeerIndex = -1;
static char *PeerName = NULL;
static PGconn *PeerConn = NULL;
static PGconn *PeerSqlConn = NULL;	/* plain SQL, opened when needed */
static char *PeerDsn = NULL;

static bool in_remote_transaction = false;
static XLogRecPtr remote_final_lsn = InvalidXLogRecPtr; /* of the open one */
static bool in_change = false;	/* applying a row change */
static XLogRecPtr careful_lsn = InvalidXLogRecPtr;	/* the one that failed */
static bool careful = false;	/* applying change by change */
/* the remote transactions applied in the open local transaction */
static int	group_transactions = 0;
static XLogRecPtr group_end_lsn = InvalidXLogRecPtr;
static TimestampTz group_commit_times[MAX_GROUP_TRANSACTIONS];
static bool group_waited = false;	/* waited for more since the last read */
static bool applied_since_start = false;
/* the peer's stable version received since the open group began, 0 if none */
static int64 group_stable_version = 0;
static XLogRecPtr last_received = InvalidXLogRecPtr;
static XLogRecPtr last_applied_end = InvalidXLogRecPtr;

/*
 * Local commits of groups not yet known to be flushed, oldest first: the
 * end of the local commit record and the remote end LSN the group applied.
 * Feedback reports as flushed (flushed_lsn, which never goes back) the
 * remote end of the newest one the WAL writer has flushed, as core's apply
 * worker does; forcing the flush here would stall the stream for an fsync.
 */
typedef struct CommitMapping
{
	dlist_node	node;
	XLogRecPtr	local_end;
	XLogRecPtr	remote_end;
} CommitMapping;

static dlist_head commit_mappings = DLIST_STATIC_INIT(commit_mappings);
static XLogRecPtr flushed_lsn = InvalidXLogRecPtr;
static TimestampTz last_feedback = 0;
static int	changes_in_transaction = 0;
static int	conflicts_in_transaction = 0;

/* the identity a change switched away from */
static CrUserContext change_user;

static void apply_worker_exit(int code, Datum arg);
static void apply_loop(void);
static void apply_dispatch(StringInfo s);
static void send_feedback(bool force, bool request_reply);
static void set_state(CrPeerState state);
static void record_error(const char *message);
static void apply_rel_invalidate(Datum arg, Oid relid);
static ApplyRel *apply_rel_lookup(LogicalRepRelId remoteid);
static void apply_rel_map(ApplyRel *ar, Relation rel);
static ApplyExec *exec_open(ApplyRel *ar);
static const CrPolicy *apply_rel_policy(ApplyRel *ar, Relation rel);
static void exec_close_all(void);
static ApplyExec *change_begin(ApplyRel *ar);
static void begin_in_transaction(void);
static void change_end(ApplyExec *ex);
static void slot_fill(ApplyRel *ar, LogicalRepTupleData *tup,
					  TupleTableSlot *slot, TupleTableSlot *existing);
static int64 slot_version(TupleTableSlot *slot, AttrNumber att, bool *isnull);
static int64 observed_version(TupleTableSlot *slot, ApplyRel *ar);
static bool find_local_row(ApplyExec *ex, TupleTableSlot *key, TupleTableSlot *row,
						   bool confirm_miss);
static void append_key_condition(StringInfo sql, Form_pg_attribute att, Oid opfamily,
								 Oid opcintype, Datum value);
static bool fetch_peer_row(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *slot);

static void apply_row(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
					  const CrIncoming *incoming);
static bool settle_collisions(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
							  const CrIncoming *incoming, TupleTableSlot *self);
static CrDecision decide(ApplyExec *ex, ApplyRel *ar, const CrIncoming *incoming,
						 const CrLocalState *local, TupleTableSlot *key,
						 TupleTableSlot *local_row, TupleTableSlot *remote_row);
static void handle_begin(StringInfo s);
static void handle_commit(StringInfo s);
static void commit_group(void);
static bool group_in_backlog(void);
static void publish_stable_version(void);
static void handle_relation(StringInfo s);
static void handle_insert(StringInfo s);
static void handle_update(StringInfo s);
static void handle_delete(StringInfo s);
static void handle_message(StringInfo s);
static void apply_change(LogicalRepMsgType action, StringInfo s);
static void apply_change_carefully(LogicalRepMsgType action, StringInfo s);
static ErrorData *run_in_subtransaction(ApplyExec *ex, void (*fn) (void *arg), void *arg);
static void record_rejected_change(LogicalRepMsgType action, StringInfo s,
								   const char *error);
static void apply_truncate(const char *content, Size size);
static void apply_rows(const char *content, Size size);

/* ----------------------------------------------------------------
 * Status reporting
 * ----------------------------------------------------------------
 */

static void
set_state(CrPeerState state)
{
	SpinLockAcquire(&MyPeer->mutex);
	MyPeer->state = state;
	SpinLockRelease(&MyPeer->mutex);
}

/*
 * Remember why the worker stops.  An error while connecting means the peer
 * cannot be reached; any other is an error of the stream or of apply.
 */
static void
record_error(const char *message)
{
	SpinLockAcquire(&MyPeer->mutex);
	strlcpy(MyPeer->last_error, message, CR_ERROR_LEN);
	MyPeer->last_error_at = GetCurrentTimestamp();
	MyPeer->state = MyPeer->state == CR_PEER_CONNECTING ?
		CR_PEER_UNREACHABLE : CR_PEER_ERROR;
	SpinLockRelease(&MyPeer->mutex);
}

static void
apply_worker_exit(int code, Datum arg)
{
	if (PeerConn)
	{
		PQfinish(PeerConn);
		PeerConn = NULL;
	}
	if (PeerSqlConn)
	{
		PQfinish(PeerSqlConn);
		PeerSqlConn = NULL;
	}
	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	if (MyPeer->pid == MyProcPid)
		MyPeer->pid = 0;
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	SpinLockAcquire(&MyPeer->mutex);
	if (MyPeer->state != CR_PEER_ERROR && MyPeer->state != CR_PEER_UNREACHABLE)
		MyPeer->state = CR_PEER_STOPPED;
	SpinLockRelease(&MyPeer->mutex);
}

/* ----------------------------------------------------------------
 * Relation map
 * ----------------------------------------------------------------
 */

/*
 * A relcache invalidation: of a mapped table, its map and policy; of
 * cosmosrep's table configuration (cosmosrep.config_changed), every
 * policy.  They are read again at the next change.
 */
static void
apply_rel_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	ApplyRel   *ar;

	if (ApplyRelMap == NULL)
		return;
	hash_seq_init(&status, ApplyRelMap);
	while ((ar = hash_seq_search(&status)) != NULL)
	{
		if (relid == InvalidOid || ar->localrelid == relid || relid == ConfigRelid)
			ar->policy_valid = false;
		if (relid == InvalidOid || ar->localrelid == relid)
			ar->map_valid = false;
	}
}

static ApplyRel *
apply_rel_lookup(LogicalRepRelId remoteid)
{
	ApplyRel   *ar = hash_search(ApplyRelMap, &remoteid, HASH_FIND, NULL);

	if (ar == NULL)
		elog(ERROR, "no relation message for remote relation %u", remoteid);
	return ar;
}

/*
 * Map the remote columns onto rel by name.  The two must have the same
 * columns (generated ones excepted), and rel must be multi-region.
 */
static void
apply_rel_map(ApplyRel *ar, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	LogicalRepRelation *remote = ar->remoterel;
	MemoryContext oldctx = MemoryContextSwitchTo(ApplyContext);
	int			matched = 0;

	if (ar->remote_index)
	{
		pfree(ar->remote_index);
		pfree(ar->infuncs);
		pfree(ar->ioparams);
	}
	ar->natts = desc->natts;
	ar->remote_index = palloc(sizeof(int) * desc->natts);
	ar->infuncs = palloc0(sizeof(FmgrInfo) * desc->natts);
	ar->ioparams = palloc0(sizeof(Oid) * desc->natts);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			infunc;

		ar->remote_index[i] = -1;
		if (att->attisdropped || att->attgenerated)
			continue;
		for (int r = 0; r < remote->natts; r++)
		{
			if (strcmp(remote->attnames[r], NameStr(att->attname)) == 0)
			{
				ar->remote_index[i] = r;
				break;
			}
		}
		if (ar->remote_index[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("table \"%s.%s\" has different columns in region \"%s\"",
							remote->nspname, remote->relname, PeerName),
					 errdetail("Column \"%s\" exists only in this region.",
							   NameStr(att->attname)),
					 errhint("Give the table the same columns in every region; replication of it waits until then.")));
		matched++;
		getTypeInputInfo(att->atttypid, &infunc, &ar->ioparams[i]);
		fmgr_info_cxt(infunc, &ar->infuncs[i], ApplyContext);
	}
	if (matched != remote->natts)
	{
		for (int r = 0; r < remote->natts; r++)
		{
			if (SPI_fnumber(desc, remote->attnames[r]) <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("table \"%s.%s\" has different columns in region \"%s\"",
								remote->nspname, remote->relname, PeerName),
						 errdetail("Column \"%s\" exists only in region \"%s\".",
								   remote->attnames[r], PeerName),
						 errhint("Give the table the same columns in every region; replication of it waits until then.")));
		}
	}

	ar->version_att = SPI_fnumber(desc, CR_VERSION_COLUMN);
	ar->base_att = SPI_fnumber(desc, CR_BASE_COLUMN);
	ar->config_att = SPI_fnumber(desc, CR_CONFIG_COLUMN);
	if (ar->version_att <= 0 || ar->base_att <= 0 || ar->config_att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" is multi-region in region \"%s\" but not in this region",
						remote->nspname, remote->relname, PeerName)));
	ar->localrelid = RelationGetRelid(rel);
	ar->map_valid = true;
	MemoryContextSwitchTo(oldctx);
}

/* ----------------------------------------------------------------
 * Executor state per change
 * ----------------------------------------------------------------
 */

/*
 * The executor state for ar's local table in this transaction: opened
 * (RowExclusiveLock, kept until commit, indexes open, relation mapped) at
 * the first change of the table, reused by the following ones.
 */
static ApplyExec *
exec_open(ApplyRel *ar)
{
	ApplyExec  *ex;
	RangeTblEntry *rte;
	Oid			relid;
	MemoryContext oldctx;

	if (ar->exec)
	{
		ex = ar->exec;
		/* a new RELATION message may have described the columns anew */
		if (!ar->map_valid)
			apply_rel_map(ar, ex->rel);
		ex->estate->es_output_cid = GetCurrentCommandId(true);
		return ex;
	}

	/*
	 * The table mapped before, if nothing changed it since: taking the lock
	 * processes pending invalidations, which clear map_valid.
	 */
	relid = InvalidOid;
	if (ar->map_valid)
	{
		relid = ar->localrelid;
		LockRelationOid(relid, RowExclusiveLock);
		if (!ar->map_valid)
		{
			UnlockRelationOid(relid, RowExclusiveLock);
			relid = InvalidOid;
		}
	}
	if (!OidIsValid(relid))
		relid = RangeVarGetRelid(makeRangeVar(ar->remoterel->nspname,
											  ar->remoterel->relname, -1),
								 RowExclusiveLock, true);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.%s\" replicated from region \"%s\" does not exist in this region",
						ar->remoterel->nspname, ar->remoterel->relname, PeerName),
				 errhint("Create the table with the same columns in every region; replication from \"%s\" resumes once it exists.",
						 PeerName)));

	oldctx = MemoryContextSwitchTo(ApplyTransactionContext);
	ex = palloc0(sizeof(ApplyExec));
	ex->rel = table_open(relid, NoLock);
	if (!ar->map_valid || ar->localrelid != relid)
		apply_rel_map(ar, ex->rel);

	ex->pkindex = RelationGetPrimaryKeyIndex(ex->rel);
	if (!OidIsValid(ex->pkindex))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key in this region",
						RelationGetRelationName(ex->rel))));

	ex->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = ex->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(ex->estate, list_make1(rte));
	ex->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(ex->rri, ex->rel, 1, NULL, 0);
	/*
	 * As core's apply does: AFTER triggers then find the table here rather
	 * than open it again (under a subtransaction's resource owner, in the
	 * change-by-change mode), and ExecCloseResultRelations closes its
	 * indexes.
	 */
	ex->estate->es_opened_result_relations =
		lappend(ex->estate->es_opened_result_relations, ex->rri);
	ex->estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(ex->rri, false);
	EvalPlanQualInit(&ex->epqstate, ex->estate, NULL, NIL, -1);
	ex->remoteslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel),
											&TTSOpsVirtual);
	ex->keyslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel),
										 &TTSOpsVirtual);
	ex->localslot = table_slot_create(ex->rel, &ex->estate->es_tupleTable);
	ex->otherslot = table_slot_create(ex->rel, &ex->estate->es_tupleTable);
	ex->mergedslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel),
											&TTSOpsVirtual);
	ex->unique_indexes = palloc(sizeof(Oid) * ex->rri->ri_NumIndices);
	ex->colliders = palloc(sizeof(TupleTableSlot *) * ex->rri->ri_NumIndices);
	ex->collided = palloc(sizeof(bool) * ex->rri->ri_NumIndices);
	for (int i = 0; i < ex->rri->ri_NumIndices; i++)
	{
		Relation	index = ex->rri->ri_IndexRelationDescs[i];
		IndexInfo  *info = ex->rri->ri_IndexRelationInfo[i];

		if (info->ii_Unique && RelationGetRelid(index) != ex->pkindex &&
			info->ii_Expressions == NIL && info->ii_Predicate == NIL &&
			index->rd_rel->relam == BTREE_AM_OID)
		{
			ex->unique_indexes[ex->nunique] = RelationGetRelid(index);
			ex->colliders[ex->nunique++] = table_slot_create(ex->rel,
															 &ex->estate->es_tupleTable);
		}
	}
	ex->owner = ex->rel->rd_rel->relowner;
	ex->horizon = cr_tombstone_lookup(relid, NULL);

	ar->exec = ex;
	open_rels = lappend(open_rels, ar);
	MemoryContextSwitchTo(oldctx);
	return ex;
}

/*
 * The conflict policy of ar's local table rel, read at the start of a
 * change when the configuration or the table changed since it was read
 * (never in the middle of a change: a resolver may process invalidations).
 */
static const CrPolicy *
apply_rel_policy(ApplyRel *ar, Relation rel)
{
	if (!ar->policy_valid)
	{
		CrTableConfig *config = cr_get_table_config(RelationGetRelid(rel));
		MemoryContext oldctx;

		if (config == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s.%s\" is multi-region in region \"%s\" but not in this region",
							ar->remoterel->nspname, ar->remoterel->relname, PeerName)));
		if (ar->policy_cxt == NULL)
			ar->policy_cxt = AllocSetContextCreate(ApplyContext, "cosmosrep apply policy",
												   ALLOCSET_SMALL_SIZES);
		MemoryContextReset(ar->policy_cxt);
		oldctx = MemoryContextSwitchTo(ar->policy_cxt);
		ar->policy = cr_policy_load(rel, config->policy, config->path, config->resolver);
		ar->policy_version = config->config_version;
		ar->past_policies = NIL;
		MemoryContextSwitchTo(oldctx);
		ar->policy_valid = true;
	}
	return ar->policy;
}

/*
 * The policy of the configuration config_version of ar's table rel: the
 * current one, or an earlier one from the table's history (kept with the
 * current one).  Every configuration a change can carry is in the
 * history: the region that made the change sends it first.  Rows written
 * without the row trigger (session_replication_role = replica) carry
 * configuration 0, older than every other, and two of them are decided
 * by the current policy.
 */
static const CrPolicy *
policy_at(ApplyRel *ar, Relation rel, int64 config_version)
{
	CrTableConfig *config;
	PastPolicy *past;
	MemoryContext oldctx;
	ListCell   *lc;

	if (config_version == ar->policy_version || config_version == CR_CONFIG_ANY ||
		config_version == 0)
		return ar->policy;
	foreach(lc, ar->past_policies)
	{
		past = lfirst(lc);
		if (past->config_version == config_version)
			return past->policy;
	}
	config = cr_get_config_history(RelationGetRelid(rel), config_version);
	if (config == NULL)
		elog(ERROR, "configuration " INT64_FORMAT " of table \"%s\" from region \"%s\" is not in cosmosrep.policy_history",
			 config_version, RelationGetRelationName(rel), PeerName);
	oldctx = MemoryContextSwitchTo(ar->policy_cxt);
	past = palloc(sizeof(PastPolicy));
	past->config_version = config_version;
	past->policy = cr_policy_load(rel, config->policy, config->path, config->resolver);
	ar->past_policies = lappend(ar->past_policies, past);
	MemoryContextSwitchTo(oldctx);
	return past->policy;
}

/*
 * Close every executor state of this transaction; before commit and
 * before DDL or TRUNCATE, which must not find the tables open.
 */
static void
exec_close_all(void)
{
	ListCell   *lc;

	/* the conflicts of what was applied, before the tables close */
	cr_flush_conflicts();

	foreach(lc, open_rels)
	{
		ApplyRel   *ar = lfirst(lc);
		ApplyExec  *ex = ar->exec;

		EvalPlanQualEnd(&ex->epqstate);
		/* its indexes, and relations that AFTER triggers opened */
		ExecCloseResultRelations(ex->estate);
		ExecResetTupleTable(ex->estate->es_tupleTable, false);
		FreeExecutorState(ex->estate);
		table_close(ex->rel, NoLock);
		ar->exec = NULL;
	}
	open_rels = NIL;
	MemoryContextReset(ApplyTransactionContext);
}

/*
 * Start applying a change to ar's table: a snapshot of its own, the
 * table's executor state, and the identity of the table's owner.  Every
 * change, and everything it fires (triggers, constraints, index
 * expressions), runs as the owner with SECURITY_RESTRICTED_OPERATION, as
 * core's subscriptions do (without run_as_owner): a table owner's code
 * never runs as the superuser that the worker is.  Settings the owner's
 * code changes are undone at the change's end.  Like a statement, the
 * change fires its queued AFTER triggers (ENABLE ALWAYS or REPLICA ones)
 * at its end, as core's apply does.
 */
static ApplyExec *
change_begin(ApplyRel *ar)
{
	ApplyExec  *ex;

	begin_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	ex = exec_open(ar);
	(void) apply_rel_policy(ar, ex->rel);
	cr_switch_to_owner(ex->owner, &change_user);
	AfterTriggerBeginQuery();
	return ex;
}

/* a change, TRUNCATE or DDL message must come between BEGIN and COMMIT */
static void
begin_in_transaction(void)
{
	if (!in_remote_transaction)
		elog(ERROR, "change outside a transaction from region \"%s\"", PeerName);
}

/*
 * Fire the change's AFTER triggers, go back to the worker's own identity,
 * make the change visible to the next one, and free its per-tuple memory.
 */
static void
change_end(ApplyExec *ex)
{
	AfterTriggerEndQuery(ex->estate);
	cr_restore_user(&change_user);
	ResetPerTupleExprContext(ex->estate);
	PopActiveSnapshot();
	CommandCounterIncrement();
	changes_in_transaction++;
}

/*
 * Build the local form of a remote tuple in slot.  Columns the peer sent
 * as "unchanged" (TOASTed values an UPDATE did not touch) come from
 * existing, or stay NULL when it is NULL: the caller decides whether
 * existing holds what the writer held.
 */
static void
slot_fill(ApplyRel *ar, LogicalRepTupleData *tup, TupleTableSlot *slot,
		  TupleTableSlot *existing)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;

	ExecClearTuple(slot);
	if (existing)
		slot_getallattrs(existing);
	for (int i = 0; i < desc->natts; i++)
	{
		int			r = ar->remote_index[i];

		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
		if (r < 0 || r >= tup->ncols)
			continue;
		switch (tup->colstatus[r])
		{
			case LOGICALREP_COLUMN_TEXT:
				slot->tts_values[i] =
					InputFunctionCall(&ar->infuncs[i], tup->colvalues[r].data,
									  ar->ioparams[i],
									  TupleDescAttr(desc, i)->atttypmod);
				slot->tts_isnull[i] = false;
				break;
			case LOGICALREP_COLUMN_UNCHANGED:
				if (existing)
				{
					slot->tts_values[i] = existing->tts_values[i];
					slot->tts_isnull[i] = existing->tts_isnull[i];
				}
				break;
			case LOGICALREP_COLUMN_NULL:
				break;
			default:
				elog(ERROR, "unexpected column status %c", tup->colstatus[r]);
		}
	}
	ExecStoreVirtualTuple(slot);
}

static int64
slot_version(TupleTableSlot *slot, AttrNumber att, bool *isnull)
{
	Datum		d = slot_getattr(slot, att, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

/* the base and configuration of a remote row or delete, into incoming */
static void
incoming_stamps(ApplyRel *ar, TupleTableSlot *row, CrIncoming *incoming)
{
	bool		isnull;

	incoming->base = slot_version(row, ar->base_att, &isnull);
	incoming->config = slot_version(row, ar->config_att, &isnull);
}

/* the version of a remote row, which the clock then moves past */
static int64
observed_version(TupleTableSlot *slot, ApplyRel *ar)
{
	bool		isnull;
	int64		version = slot_version(slot, ar->version_att, &isnull);

	cr_hlc_observe(version);
	return version;
}

/*
 * Find and lock the local row with the primary key of key, into row.
 *
 * The lookup uses a dirty snapshot, and an index scan can miss a row that
 * a local session updates at that moment (PostgreSQL commitfest entry
 * 5151): the miss needs the session's commit to fall inside the scan.
 * Where a miss would decide silently (a delete or an update that finds
 * nothing to change), it is confirmed by scanning again at once, twice,
 * which finds a row committed meanwhile, without waiting: a heal that
 * recreates many deleted rows pays index probes per row, not a sleep.  An
 * insert needs no confirmation: a row it missed makes it fail on the
 * primary key, and the transaction is retried.
 */
static bool
find_local_row(ApplyExec *ex, TupleTableSlot *key, TupleTableSlot *row,
			   bool confirm_miss)
{
	for (int attempt = 0; attempt < (confirm_miss ? 3 : 1); attempt++)
	{
		if (RelationFindReplTupleByIndex(ex->rel, ex->pkindex, LockTupleExclusive,
										 key, row))
			return true;
	}
	return false;
}

/* what a local row of ar's table holds: its version, base, whether merged */
static CrLocalState
row_state(ApplyRel *ar, TupleTableSlot *row)
{
	CrLocalState state = {true, 0, 0, 0, false};
	bool		isnull;
	Datum		region = slot_getattr(row, ar->policy->region_att, &isnull);

	state.version = slot_version(row, ar->version_att, &isnull);
	state.base = slot_version(row, ar->base_att, &isnull);
	state.config = slot_version(row, ar->config_att, &isnull);
	state.merged = !isnull && DatumGetInt16(region) == 0;
	return state;
}

/*
 * What this region holds for the key of slot: the row, locked, in row,
 * or else the newest tombstone of the key.
 */
static CrLocalState
local_state(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *key,
			TupleTableSlot *row, bool confirm_miss)
{
	CrLocalState local = {false, 0, 0, 0, false};

	if (find_local_row(ex, key, row, confirm_miss))
		local = row_state(ar, row);
	else
	{
		CrTombstone tombstone = cr_tombstone_lookup(RelationGetRelid(ex->rel),
													cr_tombstone_key(ex->rel, key));

		local.config = tombstone.config;
		if (ex->horizon.version > tombstone.version)
		{
			tombstone = ex->horizon;
			local.config = CR_CONFIG_ANY;
		}
		local.version = tombstone.version;
		local.base = tombstone.base;
	}
	return local;
}

/*
 * Decide a remote change (incoming, with remote_row, or NULL for a delete)
 * against local, the state of its key (held in key) in this region, with
 * local_row; record it if it is a conflict, and carry out what the
 * conflict policy wrote in place of the remote change.  The caller
 * applies the remote change itself when the decision says so.
 */
static CrDecision
decide(ApplyExec *ex, ApplyRel *ar, const CrIncoming *incoming,
	   const CrLocalState *local, TupleTableSlot *key, TupleTableSlot *local_row,
	   TupleTableSlot *remote_row)
{
	const CrPolicy *policy = policy_at(ar, ex->rel, incoming->config);
	CrDecision	d = cr_decide(policy, ex->rel, incoming, local, key,
							  local->row_found ? local_row : NULL, remote_row,
							  ex->mergedslot);

	if (d.kind == CR_CONFLICT_NONE)
		return d;
	conflicts_in_transaction++;
	if (cr_record_resolved_conflicts || d.resolution == CR_RESOLUTION_PENDING ||
		d.resolution == CR_RESOLUTION_ERROR)
		cr_record_conflict(ex->rel,
						   d.by_configuration ? CR_POLICY_NEWER_CONFIGURATION : policy->name,
						   incoming, local, &d,
						   local->row_found ? local_row : NULL, remote_row,
						   d.write_merged ? ex->mergedslot : NULL);
	if (d.write_merged &&
		!settle_collisions(ex, ar, ex->mergedslot, incoming,
						   local->row_found ? local_row : NULL))
		d.write_merged = false;
	if (d.write_merged && local->row_found)
		ExecSimpleRelationUpdate(ex->rri, ex->estate, &ex->epqstate, local_row,
								 ex->mergedslot);
	else if (d.write_merged)
		ExecSimpleRelationInsert(ex->rri, ex->estate, ex->mergedslot);
	else if (d.delete_merged)
	{
		if (local->row_found)
			ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate, local_row);
		cr_tombstone_record(RelationGetRelid(ex->rel), d.key, d.merged_version,
							d.merged_base, incoming->config);
	}
	return d;
}

/*
 * Make row, a complete remote row written by incoming (an insert), the row
 * of its key here, if it wins over what this region holds for that key.
 */
static void
apply_row(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
		  const CrIncoming *incoming)
{
	CrLocalState local = local_state(ex, ar, row, ex->otherslot, false);
	CrDecision	d = decide(ex, ar, incoming, &local, row, ex->otherslot, row);

	if (!d.apply_remote ||
		!settle_collisions(ex, ar, row, incoming, local.row_found ? ex->otherslot : NULL))
		return;
	if (local.row_found)
		ExecSimpleRelationUpdate(ex->rri, ex->estate, &ex->epqstate,
								 ex->otherslot, row);
	else
		ExecSimpleRelationInsert(ex->rri, ex->estate, row);
}

/*
 * Whether row, a remote row about to be written by incoming (replacing
 * self, the local row of its key, or NULL), may take the values of the
 * table's secondary unique indexes that other rows here hold.  Each such
 * collision is decided by the policy (cr_decide_collision) and recorded;
 * the row is written only if it wins every one, and then the rows it
 * collided with are deleted.  A row that loses one is not written, and
 * the local row it replaces (self) is deleted, as it is in the regions
 * where the row was written and lost: whichever row arrives first, every
 * region ends with the winner alone.  The rows a collision removes are
 * in cosmosrep.conflicts, whole, for the application to restore.
 *
 * Unique indexes on expressions or with a predicate are not checked: a
 * collision there is an error of the change.
 */
static bool
settle_collisions(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
				  const CrIncoming *incoming, TupleTableSlot *self)
{
	const CrPolicy *policy = policy_at(ar, ex->rel, incoming->config);
	bool	   *found = ex->collided;
	bool		wins = true;

	for (int i = 0; i < ex->nunique; i++)
	{
		TupleTableSlot *other = ex->colliders[i];

		found[i] = RelationFindReplTupleByIndex(ex->rel, ex->unique_indexes[i],
												LockTupleExclusive, row, other);
		/* not the row this write replaces, nor one another index found */
		if (found[i] && self != NULL && ItemPointerEquals(&other->tts_tid, &self->tts_tid))
			found[i] = false;
		for (int j = 0; j < i && found[i]; j++)
			if (found[j] && ItemPointerEquals(&other->tts_tid, &ex->colliders[j]->tts_tid))
				found[i] = false;
	}
	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < ex->nunique; i++)
		{
			TupleTableSlot *other = ex->colliders[i];
			CrLocalState state;
			CrDecision	d;

			if (!found[i])
				continue;
			state = row_state(ar, other);
			d = cr_decide_collision(policy, ex->rel, incoming, &state, other, row);
			if (pass == 0)
			{
				wins &= d.apply_remote;
				continue;
			}
			/* the second pass records each, as the collisions together went */
			if (!wins && d.resolution == CR_RESOLUTION_REMOTE_APPLIED)
				d.resolution = CR_RESOLUTION_LOCAL_KEPT;
			conflicts_in_transaction++;
			if (cr_record_resolved_conflicts || d.resolution == CR_RESOLUTION_PENDING)
				cr_record_conflict(ex->rel,
								   d.by_configuration ? CR_POLICY_NEWER_CONFIGURATION :
								   policy->name,
								   incoming, &state, &d, other, row, NULL);
			if (wins)
				ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate, other);
		}
	}
	if (!wins && self != NULL)
		ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate, self);
	return wins;
}

/*
 * Append to sql the condition "the peer's column att equals value" for a
 * column of the primary key, whose operator family and input type in the
 * primary key index are opfamily and opcintype.
 *
 * The condition runs on the peer as the link role, so it names exactly
 * what runs there: the equality operator of the key's btree operator
 * class, qualified with its schema (an operator class is made only by a
 * superuser), and the literal typed as the class's input type, a base
 * type whose input function a superuser installed.  Nothing is found
 * through a search path, and no domain CHECK runs (the column of a domain
 * type is relabelled to its base type, the literal is never of the
 * domain).  For the classes of polymorphic input types other than enums
 * (arrays, ranges, composites), whose literals could hold values of a
 * domain, the key is compared as its text output instead: slower (no
 * index), and output functions of domains are their base types'.
 */
static void
append_key_condition(StringInfo sql, Form_pg_attribute att, Oid opfamily,
					 Oid opcintype, Datum value)
{
	Oid			typoutput;
	bool		isvarlena;
	char	   *literal;
	Oid			eqop;
	HeapTuple	optup;
	Form_pg_operator opform;
	Oid			littype = opcintype;

	getTypeOutputInfo(att->atttypid, &typoutput, &isvarlena);
	literal = quote_literal_cstr(OidOutputFunctionCall(typoutput, value));

	if (IsPolymorphicType(opcintype) || opcintype == RECORDOID)
	{
		if (opcintype != ANYENUMOID)
		{
			appendStringInfo(sql, " AND %s::pg_catalog.text OPERATOR(pg_catalog.=) %s::pg_catalog.text",
							 quote_identifier(NameStr(att->attname)), literal);
			return;
		}
		littype = getBaseType(att->atttypid);
	}

	eqop = get_opfamily_member(opfamily, opcintype, opcintype, BTEqualStrategyNumber);
	if (!OidIsValid(eqop))
		elog(ERROR, "missing equality operator for type %u in operator family %u",
			 opcintype, opfamily);
	optup = SearchSysCache1(OPEROID, ObjectIdGetDatum(eqop));
	if (!HeapTupleIsValid(optup))
		elog(ERROR, "cache lookup failed for operator %u", eqop);
	opform = (Form_pg_operator) GETSTRUCT(optup);
	appendStringInfo(sql, " AND %s OPERATOR(%s.%s) %s::%s",
					 quote_identifier(NameStr(att->attname)),
					 quote_identifier(get_namespace_name(opform->oprnamespace)),
					 NameStr(opform->oprname), literal,
					 format_type_be_qualified(littype));
	ReleaseSysCache(optup);
}

/*
 * Replace slot's contents with the row that has slot's primary key, as
 * the peer holds it now; false if the peer has no such row (a later
 * delete, which the stream will bring).
 *
 * Used only when an update must recreate a row deleted here and the stream
 * lacks some of its values.  The query runs on a second, plain connection
 * to the peer, opened when first needed, as the link role there; values
 * travel as text, like the stream's.  On the peer it runs the output
 * functions of the columns' types and what append_key_condition names,
 * no code of the table's owner (a plain table has no SELECT rules or
 * triggers, and row_security is off on the connection).
 */
static bool
fetch_peer_row(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *slot)
{
	TupleDesc	desc = RelationGetDescr(ex->rel);
	Relation	pkrel;
	StringInfoData sql;
	PGresult   *res;
	int			field = 0;
	bool		found;

	if (PeerSqlConn == NULL)
		PeerSqlConn = cr_remote_connect(PeerDsn, false, "cosmosrep apply", PeerName);

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		appendStringInfo(&sql, "%s%s", field++ ? ", " : "",
						 quote_identifier(NameStr(att->attname)));
	}
	appendStringInfo(&sql, " FROM ONLY %s WHERE true",
					 quote_qualified_identifier(ar->remoterel->nspname,
												ar->remoterel->relname));
	slot_getallattrs(slot);
	pkrel = index_open(RelationGetPrimaryKeyIndex(ex->rel), AccessShareLock);
	for (int i = 0; i < IndexRelationGetNumberOfKeyAttributes(pkrel); i++)
	{
		AttrNumber	attnum = pkrel->rd_index->indkey.values[i];

		append_key_condition(&sql, TupleDescAttr(desc, attnum - 1),
							 pkrel->rd_opfamily[i], pkrel->rd_opcintype[i],
							 slot->tts_values[attnum - 1]);
	}
	index_close(pkrel, AccessShareLock);

	res = cr_remote_exec(PeerSqlConn, sql.data, PGRES_TUPLES_OK, PeerName);
	found = PQntuples(res) == 1;
	if (found)
	{
		ExecClearTuple(slot);
		field = 0;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
			if (att->attisdropped || att->attgenerated)
				continue;
			if (!PQgetisnull(res, 0, field))
			{
				slot->tts_values[i] = InputFunctionCall(&ar->infuncs[i],
														PQgetvalue(res, 0, field),
														ar->ioparams[i],
														att->atttypmod);
				slot->tts_isnull[i] = false;
			}
			field++;
		}
		ExecStoreVirtualTuple(slot);
	}
	PQclear(res);
	return found;
}

/* ----------------------------------------------------------------
 * Protocol message handlers
 * ----------------------------------------------------------------
 */

static void
handle_begin(StringInfo s)
{
	LogicalRepBeginData begin;

	logicalrep_read_begin(s, &begin);
	if (in_remote_transaction)
		elog(ERROR, "BEGIN inside a transaction from region \"%s\"", PeerName);
	remote_final_lsn = begin.final_lsn;
	if (remote_final_lsn == careful_lsn)
		careful = true;
	/* the next transaction of a group shares the open local transaction */
	if (group_transactions == 0)
	{
		/* a worker sets the time now() reports itself */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		MemoryContextSwitchTo(ApplyMessageContext);
	}
	in_remote_transaction = true;
}

/*
 * A remote transaction is complete.  It joins the group of remote
 * transactions applied in the open local transaction, which commits when
 * a read of the stream brings no further message (apply_loop) or the
 * group is full: consecutive single-row transactions of a backlog then
 * share one local commit, while a transaction that arrives alone commits
 * at once.
 *
 * Each remote transaction is still applied whole and in commit order, and
 * the origin advances to the group's last end LSN atomically with the
 * data, so exactly-once and consistent prefix hold.
 */
static void
handle_commit(StringInfo s)
{
	LogicalRepCommitData commit;

	logicalrep_read_commit(s, &commit);
	if (!in_remote_transaction)
		elog(ERROR, "COMMIT without BEGIN from region \"%s\"", PeerName);

	in_remote_transaction = false;
	group_end_lsn = commit.end_lsn;
	group_commit_times[group_transactions++] = commit.committime;
	if (group_transactions == MAX_GROUP_TRANSACTIONS || careful)
		commit_group();
}

/*
 * Commit the local transaction of the current group, if one is open and
 * no remote transaction is half applied in it.  Each remote transaction
 * of the group adds its own latency sample (origin commit to this local
 * commit).
 */
static void
commit_group(void)
{
	TimestampTz last_commit_time;
	TimestampTz now;
	int64		latencies[MAX_GROUP_TRANSACTIONS];
	int			first;
	CommitMapping *mapping;

	/* never in the middle of a remote transaction: it is applied whole */
	if (group_transactions == 0 || in_remote_transaction)
		return;

	last_commit_time = group_commit_times[group_transactions - 1];
	exec_close_all();
	replorigin_session_origin_lsn = group_end_lsn;
	replorigin_session_origin_timestamp = last_commit_time;
	CommitTransactionCommand();
	MemoryContextSwitchTo(ApplyMessageContext);
	mapping = MemoryContextAlloc(ApplyContext, sizeof(CommitMapping));
	mapping->local_end = XactLastCommitEnd;
	mapping->remote_end = group_end_lsn;
	dlist_push_tail(&commit_mappings, &mapping->node);
	last_applied_end = group_end_lsn;
	/* table and database statistics, at most once a second */
	pgstat_report_stat(false);

	/* the worker works: the next failure starts the backoff afresh */
	if (!applied_since_start)
	{
		applied_since_start = true;
		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
		MyPeer->failures = 0;
		MyPeer->next_start = 0;
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
	}

	now = GetCurrentTimestamp();
	for (int i = 0; i < group_transactions; i++)
		latencies[i] = Max(0, now - group_commit_times[i]);
	/* the ring takes the group's samples in at most two pieces */
	SpinLockAcquire(&MyPeer->mutex);
	MyPeer->applied_lsn = group_end_lsn;
	MyPeer->last_commit_time = last_commit_time;
	MyPeer->last_applied_at = now;
	MyPeer->transactions_applied += group_transactions;
	MyPeer->changes_applied += changes_in_transaction;
	MyPeer->conflicts += conflicts_in_transaction;
	first = Min(group_transactions, CR_LATENCY_SAMPLES - MyPeer->latency_next);
	memcpy(&MyPeer->latency_us[MyPeer->latency_next], latencies,
		   sizeof(int64) * first);
	memcpy(MyPeer->latency_us, latencies + first,
		   sizeof(int64) * (group_transactions - first));
	MyPeer->latency_next = (MyPeer->latency_next + group_transactions) % CR_LATENCY_SAMPLES;
	MyPeer->latency_count = Min(MyPeer->latency_count + group_transactions,
								CR_LATENCY_SAMPLES);
	/* past the transaction that failed: the next failure counts anew */
	if (MyPeer->failed_attempts > 0 && last_applied_end >= MyPeer->failed_lsn)
		MyPeer->failed_attempts = 0;
	/* applying again: the error that stopped the link is over (and logged) */
	MyPeer->last_error[0] = '\0';
	MyPeer->last_error_at = 0;
	SpinLockRelease(&MyPeer->mutex);

	group_transactions = 0;
	group_waited = false;
	publish_stable_version();
	changes_in_transaction = 0;
	conflicts_in_transaction = 0;
}

/* the peer's stable version received before now holds here */
static void
publish_stable_version(void)
{
	if (group_stable_version == 0)
		return;
	SpinLockAcquire(&MyPeer->mutex);
	MyPeer->stable_version = Max(MyPeer->stable_version, group_stable_version);
	SpinLockRelease(&MyPeer->mutex);
	group_stable_version = 0;
}

/* the open group belongs to a backlog (see BACKLOG_AGE_MS) */
static bool
group_in_backlog(void)
{
	return group_transactions > 0 && !in_remote_transaction &&
		TimestampDifferenceExceeds(group_commit_times[group_transactions - 1],
								   GetCurrentTimestamp(), BACKLOG_AGE_MS);
}

static void
handle_relation(StringInfo s)
{
	MemoryContext oldctx = MemoryContextSwitchTo(ApplyContext);
	LogicalRepRelation *rel = logicalrep_read_rel(s);
	bool		found;
	ApplyRel   *ar = hash_search(ApplyRelMap, &rel->remoteid, HASH_ENTER, &found);

	if (!found)
	{
		ar->remote_index = NULL;
		ar->infuncs = NULL;
		ar->ioparams = NULL;
		ar->policy = NULL;
		ar->past_policies = NIL;
		ar->policy_cxt = NULL;
		ar->policy_valid = false;
		ar->exec = NULL;
	}
	else
	{
		/* the old description is replaced; its strings stay until exit */
		pfree(ar->remoterel);
	}
	ar->remoterel = rel;
	ar->map_valid = false;
	ar->localrelid = InvalidOid;
	MemoryContextSwitchTo(oldctx);
}

static void
handle_insert(StringInfo s)
{
	LogicalRepTupleData newtup;
	ApplyRel   *ar = apply_rel_lookup(logicalrep_read_insert(s, &newtup));
	ApplyExec  *ex = change_begin(ar);
	CrIncoming	incoming;

	slot_fill(ar, &newtup, ex->remoteslot, NULL);
	incoming.kind = CR_CHANGE_INSERT;
	incoming.version = observed_version(ex->remoteslot, ar);
	incoming_stamps(ar, ex->remoteslot, &incoming);
	apply_row(ex, ar, ex->remoteslot, &incoming);
	change_end(ex);
}

/*
 * An update is decided against what this region holds for the key it
 * replaced.  One that changed the key is a delete of the old key and an
 * insert of the new one, at the update's version.
 *
 * Columns the update left unchanged (TOASTed values) are not in the
 * stream.  They are the local row's only if the local row is the very
 * version the update replaced (its base): versions are unique, so the
 * writer held the same values.  Otherwise, when the update wins, the row
 * is taken as the peer holds it now (a version at least as new, which the
 * stream brings later too); if the peer no longer has it, a later delete
 * is on its way and nothing is applied.
 */
static void
handle_update(StringInfo s)
{
	LogicalRepTupleData oldtup;
	LogicalRepTupleData newtup;
	bool		has_oldtup;
	ApplyRel   *ar;
	ApplyExec  *ex;
	TupleTableSlot *row;
	TupleTableSlot *key;
	CrLocalState local;
	CrIncoming	incoming;
	bool		complete = true;

	ar = apply_rel_lookup(logicalrep_read_update(s, &has_oldtup, &oldtup, &newtup));
	ex = change_begin(ar);
	row = key = ex->remoteslot;
	slot_fill(ar, &newtup, row, NULL);
	incoming.kind = CR_CHANGE_UPDATE;
	incoming.version = observed_version(row, ar);
	incoming_stamps(ar, row, &incoming);
	if (has_oldtup)
	{
		key = ex->keyslot;
		slot_fill(ar, &oldtup, key, NULL);
		if (cr_tombstone_key_equal(cr_tombstone_key(ex->rel, key),
								   cr_tombstone_key(ex->rel, row)))
			key = row;
	}
	for (int i = 0; i < newtup.ncols; i++)
		complete &= newtup.colstatus[i] != LOGICALREP_COLUMN_UNCHANGED;

	local = local_state(ex, ar, key, ex->localslot, true);
	if (!complete && local.row_found && local.version == incoming.base)
	{
		slot_fill(ar, &newtup, row, ex->localslot);
		complete = true;
	}

	if (key == row)
	{
		bool		fetched = false;

		/*
		 * The whole row is needed where the update may be written, and
		 * where a policy compares it with the local row.  An update that
		 * loses is decided (and recorded) as it came.
		 */
		if (!complete &&
			cr_remote_may_win(policy_at(ar, ex->rel, incoming.config), &incoming, &local))
		{
			complete = fetch_peer_row(ex, ar, row);
			fetched = true;
			if (complete)
			{
				incoming.version = observed_version(row, ar);
				incoming_stamps(ar, row, &incoming);
			}
		}
		/* without it, the row is gone at the peer: its delete follows */
		if (complete || !fetched)
		{
			CrDecision	d = decide(ex, ar, &incoming, &local, key, ex->localslot, row);

			if (d.apply_remote &&
				!settle_collisions(ex, ar, row, &incoming,
								   local.row_found ? ex->localslot : NULL))
				d.apply_remote = false;
			if (d.apply_remote && local.row_found)
				ExecSimpleRelationUpdate(ex->rri, ex->estate, &ex->epqstate,
										 ex->localslot, row);
			else if (d.apply_remote)
				ExecSimpleRelationInsert(ex->rri, ex->estate, row);
		}
	}
	else
	{
		CrIncoming	delete = incoming;
		CrIncoming	insert = incoming;
		CrDecision	d;

		delete.kind = CR_CHANGE_DELETE;
		d = decide(ex, ar, &delete, &local, key, ex->localslot, NULL);
		if (d.apply_remote && local.row_found)
			ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate,
									 ex->localslot);
		cr_tombstone_record(RelationGetRelid(ex->rel),
							cr_tombstone_key(ex->rel, key), incoming.version,
							incoming.base, incoming.config);
		insert.kind = CR_CHANGE_INSERT;
		if (complete || fetch_peer_row(ex, ar, row))
		{
			if (!complete)
			{
				insert.version = observed_version(row, ar);
				incoming_stamps(ar, row, &insert);
			}
			apply_row(ex, ar, row, &insert);
		}
	}

	change_end(ex);
}

/*
 * A delete removes the local row only if it is older than the delete, and
 * leaves a tombstone either way.  A delete without a version (made where
 * the row trigger did not fire) removes the row and leaves none.
 */
static void
handle_delete(StringInfo s)
{
	LogicalRepTupleData oldtup;
	ApplyRel   *ar = apply_rel_lookup(logicalrep_read_delete(s, &oldtup));
	ApplyExec  *ex = change_begin(ar);
	CrLocalState local = {false, 0, 0, 0, false};
	CrIncoming	incoming;
	bool		unversioned;
	bool		applied;

	slot_fill(ar, &oldtup, ex->remoteslot, NULL);
	incoming.kind = CR_CHANGE_DELETE;
	incoming.version = slot_version(ex->remoteslot, ar->version_att, &unversioned);
	incoming_stamps(ar, ex->remoteslot, &incoming);
	if (!unversioned)
		cr_hlc_observe(incoming.version);

	if (find_local_row(ex, ex->remoteslot, ex->localslot, true))
		local = row_state(ar, ex->localslot);
	if (unversioned)
		applied = local.row_found;
	else
		applied = decide(ex, ar, &incoming, &local, ex->remoteslot, ex->localslot,
						 NULL).apply_remote && local.row_found;
	if (applied)
		ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate, ex->localslot);
	if (!unversioned)
		cr_tombstone_record(RelationGetRelid(ex->rel),
							cr_tombstone_key(ex->rel, ex->remoteslot),
							incoming.version, incoming.base, incoming.config);

	change_end(ex);
}

/*
 * A truncate at version V made in the peer region: every row older than V
 * goes, rows newer than V (written concurrently, in any region) stay, and
 * V becomes the table's horizon here, so that older rows arriving later
 * are not applied.  Runs as the table's owner, like every change.
 */
static void
apply_truncate(const char *content, Size size)
{
	const char *cursor = content;
	const char *end = content + size;
	const char *nspname = cr_message_name_field(&cursor, end, "truncate");
	const char *relname = cr_message_name_field(&cursor, end, "truncate");
	int64		version = cr_message_int_field(&cursor, end, "truncate", 1, PG_INT64_MAX);
	Oid			relid;
	CrUserContext user;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int			rc;

	cr_message_end(cursor, end, "truncate");
	cr_hlc_observe(version);

	exec_close_all();
	begin_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	relid = RangeVarGetRelid(makeRangeVar(pstrdup(nspname), pstrdup(relname), -1),
							 RowExclusiveLock, true);
	if (!OidIsValid(relid) || cr_get_table_config(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" truncated in region \"%s\" is not multi-region in this region",
						nspname, relname, PeerName),
				 errhint("Create the table and enable it in every region; replication from \"%s\" resumes then.",
						 PeerName)));

	cr_switch_to_owner(cr_relation_owner(relid), &user);
	values[0] = Int64GetDatum(version);
	SPI_connect();
	rc = SPI_execute_with_args(psprintf("DELETE FROM ONLY %s WHERE %s OPERATOR(pg_catalog.<) $1",
										quote_qualified_identifier(nspname, relname),
										CR_VERSION_COLUMN),
							   1, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not apply truncate: %s", SPI_result_code_string(rc));
	changes_in_transaction += SPI_processed;
	SPI_finish();
	cr_restore_user(&user);

	cr_tombstone_truncate(relid, version);
	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * The rows a table held when the peer enabled it: RELATION and INSERT
 * messages inside one MESSAGE, applied like any remote insert.
 */
static void
apply_rows(const char *content, Size size)
{
	StringInfoData inner;

	inner.data = (char *) content;
	inner.len = size;
	inner.maxlen = size;
	inner.cursor = 0;
	while (inner.cursor < inner.len)
	{
		char		action = inner.data[inner.cursor];

		if (action != LOGICAL_REP_MSG_RELATION && action != LOGICAL_REP_MSG_INSERT)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid message type \"%c\" in the rows of an enabled table from region \"%s\"",
							action, PeerName)));
		apply_dispatch(&inner);
	}
}

/* a message other than a row change, applied like a statement */
static void
statement_begin(void)
{
	begin_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
statement_end(void)
{
	PopActiveSnapshot();
	CommandCounterIncrement();
}

static void
apply_failover_message(const CrMessage *msg)
{
	statement_begin();
	cr_failover_apply_message(msg->content, msg->size);
	statement_end();
}

static void
apply_writes_message(const CrMessage *msg)
{
	statement_begin();
	cr_write_regions_apply_message(msg->content, msg->size);
	statement_end();
}

static void
apply_resolved_message(const CrMessage *msg)
{
	/* entries this group recorded are marked too */
	cr_flush_conflicts();
	statement_begin();
	cr_feed_apply_resolved(msg->content, msg->size, PeerName);
	statement_end();
}

/*
 * A peer's stable version.  Between transactions: it holds here once what
 * came before it is committed, at once or when the open group commits.
 */
static void
apply_stable_message(const CrMessage *msg)
{
	const char *cursor = msg->content;
	const char *end = msg->content + msg->size;

	group_stable_version = cr_message_int_field(&cursor, end, "stable version",
												0, PG_INT64_MAX);
	cr_message_end(cursor, end, "stable version");
	if (group_transactions == 0)
		publish_stable_version();
}

static void
apply_ddl_message(const CrMessage *msg)
{
	exec_close_all();
	statement_begin();
	cr_table_apply_ddl(msg->content, msg->size, PeerName);
	statement_end();
}

static void
apply_truncate_message(const CrMessage *msg)
{
	apply_truncate(msg->content, msg->size);
}

static void
apply_rows_message(const CrMessage *msg)
{
	apply_rows(msg->content, msg->size);
}

/*
 * The MESSAGEs of the stream, by prefix: whether each is transactional
 * (inside BEGIN and COMMIT) and what applies it.
 */
static const struct
{
	const char *prefix;
	bool		transactional;
	void		(*apply) (const CrMessage *msg);
}			message_kinds[] =
{
	{CR_TRUNCATE_MESSAGE_PREFIX, true, apply_truncate_message},
	{CR_ROWS_MESSAGE_PREFIX, true, apply_rows_message},
	{CR_FAILOVER_MESSAGE_PREFIX, true, apply_failover_message},
	{CR_WRITES_MESSAGE_PREFIX, true, apply_writes_message},
	{CR_RESOLVED_MESSAGE_PREFIX, true, apply_resolved_message},
	{CR_DDL_MESSAGE_PREFIX, true, apply_ddl_message},
	{CR_STABLE_MESSAGE_PREFIX, false, apply_stable_message},
};

static void
handle_message(StringInfo s)
{
	CrMessage	msg;

	cr_read_message(s, &msg);
	for (int i = 0; i < lengthof(message_kinds); i++)
	{
		if (strcmp(msg.prefix, message_kinds[i].prefix) != 0)
			continue;
		if (msg.transactional != message_kinds[i].transactional ||
			msg.transactional != in_remote_transaction)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("message \"%s\" from region \"%s\" is out of place",
							msg.prefix, PeerName),
					 errdetail("It is %s and arrived %s a transaction.",
							   msg.transactional ? "transactional" : "not transactional",
							   in_remote_transaction ? "inside" : "outside")));
		message_kinds[i].apply(&msg);
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("unrecognized message \"%s\" from region \"%s\"",
					msg.prefix, PeerName)));
}

/* a row change */
static void
apply_change(LogicalRepMsgType action, StringInfo s)
{
	if (action == LOGICAL_REP_MSG_INSERT)
		handle_insert(s);
	else if (action == LOGICAL_REP_MSG_UPDATE)
		handle_update(s);
	else
		handle_delete(s);
}

/*
 * A row change of the transaction that failed APPLY_ATTEMPTS times, in a
 * subtransaction: if it fails again, it is undone (with the conflicts it
 * recorded) and recorded in the feed instead.  The table's executor state
 * is opened first, outside the subtransaction, which must not own it.
 */
/* a change, or a row to read, for run_in_subtransaction */
typedef struct ChangeArgs
{
	LogicalRepMsgType action;
	StringInfo	s;
} ChangeArgs;

typedef struct RowArgs
{
	ApplyRel   *ar;
	LogicalRepTupleData *tup;
	TupleTableSlot *row;
} RowArgs;

static void
run_change(void *arg)
{
	ChangeArgs *change = arg;

	apply_change(change->action, change->s);
}

static void
run_slot_fill(void *arg)
{
	RowArgs    *r = arg;

	slot_fill(r->ar, r->tup, r->row, NULL);
}

/* a version column of a remote tuple read from its text; 0 if absent */
static int64
text_version(ApplyRel *ar, LogicalRepTupleData *tup, AttrNumber att)
{
	int			r = ar->remote_index[att - 1];
	char	   *end;
	int64		value;

	if (r < 0 || r >= tup->ncols || tup->colstatus[r] != LOGICALREP_COLUMN_TEXT)
		return 0;
	errno = 0;
	value = strtoi64(tup->colvalues[r].data, &end, 10);
	return (errno != 0 || *end != '\0') ? 0 : value;
}

static void
apply_change_carefully(LogicalRepMsgType action, StringInfo s)
{
	int			cursor = s->cursor;
	ApplyRel   *ar = apply_rel_lookup(pq_getmsgint(s, 4));
	ApplyExec  *ex;
	ErrorData  *edata;
	ChangeArgs	change = {action, s};

	s->cursor = cursor;
	begin_in_transaction();

	/*
	 * What earlier changes recorded is written first: the change may write
	 * the conflicts (cr_feed_rows), and undoing it must not undo those.
	 */
	cr_flush_conflicts();
	PushActiveSnapshot(GetTransactionSnapshot());
	ex = exec_open(ar);
	(void) apply_rel_policy(ar, ex->rel);
	PopActiveSnapshot();

	edata = run_in_subtransaction(ex, run_change, &change);
	if (edata != NULL)
	{
		cr_conflicts_forget();
		s->cursor = cursor;
		record_rejected_change(action, s, edata->message);
		FreeErrorData(edata);
	}
}

/*
 * Run fn(arg) in a subtransaction of its own, which commits when it
 * returns.  An error of fn is caught and returned, its subtransaction
 * undone, unless it is transient (cr_error_is_transient), which is raised
 * again: it says nothing of the change.  The table's executor state is
 * opened by the caller, outside: the subtransaction must not own it, and
 * its slots are cleared before an abort (their buffer pins belong to it).
 */
static ErrorData *
run_in_subtransaction(ApplyExec *ex, void (*fn) (void *arg), void *arg)
{
	MemoryContext ctx = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;
	ListCell   *lc;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(ctx);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		foreach(lc, ex->estate->es_tupleTable)
			ExecClearTuple((TupleTableSlot *) lfirst(lc));
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(ctx);
		CurrentResourceOwner = owner;
		if (cr_error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(ctx);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * Record a change that user code rejected as an error entry of the feed,
 * with the whole remote row (for a delete, the local row it would have
 * deleted), for cosmosrep.reapply_conflict once the cause is fixed.
 *
 * The subtransaction's rollback went back to the worker's identity, and
 * reading the change again runs the owner's code once more (input
 * functions of the columns' types, domain CHECK expressions, the key's
 * equality operators): like the change itself, that runs as the table's
 * owner with SECURITY_RESTRICTED_OPERATION and an empty search_path.
 */
static void
record_rejected_change(LogicalRepMsgType action, StringInfo s, const char *error)
{
	LogicalRepTupleData newtup;
	LogicalRepTupleData oldtup;
	bool		has_oldtup = false;
	LogicalRepRelId relid;
	ApplyRel   *ar;
	ApplyExec  *ex;
	TupleTableSlot *row;
	CrIncoming	incoming;
	CrLocalState local = {false, 0, 0, 0, false};
	CrDecision	d = {0};
	CrUserContext user;
	bool		isnull;
	RowArgs		rowargs;
	ErrorData  *unreadable;

	if (action == LOGICAL_REP_MSG_INSERT)
		relid = logicalrep_read_insert(s, &newtup);
	else if (action == LOGICAL_REP_MSG_UPDATE)
		relid = logicalrep_read_update(s, &has_oldtup, &oldtup, &newtup);
	else
		relid = logicalrep_read_delete(s, &oldtup);
	ar = apply_rel_lookup(relid);
	ex = ar->exec;
	PushActiveSnapshot(GetTransactionSnapshot());
	cr_switch_to_owner(ex->owner, &user);
	rowargs.ar = ar;
	rowargs.tup = action == LOGICAL_REP_MSG_DELETE ? &oldtup : &newtup;
	rowargs.row = row = ex->remoteslot;
	incoming.kind = action == LOGICAL_REP_MSG_INSERT ? CR_CHANGE_INSERT :
		action == LOGICAL_REP_MSG_UPDATE ? CR_CHANGE_UPDATE : CR_CHANGE_DELETE;
	d.kind = CR_CONFLICT_APPLY_ERROR;
	d.resolution = CR_RESOLUTION_ERROR;
	unreadable = run_in_subtransaction(ex, run_slot_fill, &rowargs);
	if (unreadable == NULL)
	{
		incoming.version = slot_version(row, ar->version_att, &isnull);
		incoming_stamps(ar, row, &incoming);
		if (find_local_row(ex, row, ex->localslot, false))
			local = row_state(ar, ex->localslot);
		d.key = cr_tombstone_key(ex->rel, row);
		d.error = pstrdup(error);
	}
	else
	{
		/*
		 * The row itself cannot be read here (a domain check or a type's
		 * input refused it): the entry keeps the error and the version,
		 * with no key and no rows, so that the link goes on; the change
		 * can only be discarded.
		 */
		incoming.version = text_version(ar, rowargs.tup, ar->version_att);
		incoming.base = text_version(ar, rowargs.tup, ar->base_att);
		incoming.config = text_version(ar, rowargs.tup, ar->config_att);
		d.key = (bytea *) palloc(VARHDRSZ);
		SET_VARSIZE(d.key, VARHDRSZ);
		d.error = psprintf("%s (the row cannot be read in this region: %s)",
						   error, unreadable->message);
		row = NULL;
	}
	cr_record_conflict(ex->rel, ar->policy->name, &incoming, &local, &d,
					   local.row_found ? ex->localslot : NULL,
					   action == LOGICAL_REP_MSG_DELETE ? NULL : row, NULL);
	cr_restore_user(&user);
	PopActiveSnapshot();
	ereport(WARNING,
			(errmsg("a change of table \"%s\" from region \"%s\" failed again and waits in cosmosrep.conflict_feed",
					RelationGetRelationName(ex->rel), PeerName),
			 errdetail("%s", error)));
}

static void
apply_dispatch(StringInfo s)
{
	LogicalRepMsgType action = pq_getmsgbyte(s);

	switch (action)
	{
		case LOGICAL_REP_MSG_BEGIN:
			handle_begin(s);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			handle_commit(s);
			break;
		case LOGICAL_REP_MSG_RELATION:
			handle_relation(s);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			if (!in_remote_transaction)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("row change outside a transaction from region \"%s\"",
								PeerName)));
			if (careful)
				apply_change_carefully(action, s);
			else
			{
				in_change = true;
				apply_change(action, s);
				in_change = false;
				cr_flush_some_conflicts();
			}
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			handle_message(s);
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid message type \"%c\" from region \"%s\"",
							action, PeerName)));
	}
}

/* ----------------------------------------------------------------
 * Stream loop
 * ----------------------------------------------------------------
 */

/*
 * Tell the peer how far we have received and safely applied.
 */
static void
send_feedback(bool force, bool request_reply)
{
	TimestampTz now = GetCurrentTimestamp();
	XLogRecPtr	local_flush;
	dlist_mutable_iter iter;
	StringInfoData buf;

	if (!force && !TimestampDifferenceExceeds(last_feedback, now, FEEDBACK_INTERVAL_MS) &&
		(dlist_is_empty(&commit_mappings) ||
		 dlist_head_element(CommitMapping, node, &commit_mappings)->local_end > GetFlushRecPtr(NULL)))
		return;

	/*
	 * What we applied is safe once its local commit record is flushed.  When
	 * the peer asks for a reply (a walsender shutting down waits for it),
	 * flush the last commit rather than make it wait for the WAL writer.
	 */
	if (force && !dlist_is_empty(&commit_mappings))
		XLogFlush(dlist_tail_element(CommitMapping, node, &commit_mappings)->local_end);
	local_flush = GetFlushRecPtr(NULL);
	dlist_foreach_modify(iter, &commit_mappings)
	{
		CommitMapping *mapping = dlist_container(CommitMapping, node, iter.cur);

		if (mapping->local_end > local_flush)
			break;
		flushed_lsn = Max(flushed_lsn, mapping->remote_end);
		dlist_delete(iter.cur);
		pfree(mapping);
	}
	/* with everything applied and flushed, all that was received is safe */
	if (dlist_is_empty(&commit_mappings) && !in_remote_transaction &&
		group_transactions == 0)
		flushed_lsn = Max(flushed_lsn, last_received);

	initStringInfo(&buf);
	pq_sendbyte(&buf, 'r');
	pq_sendint64(&buf, last_received);	/* write */
	pq_sendint64(&buf, flushed_lsn);	/* flush */
	pq_sendint64(&buf, flushed_lsn);	/* apply */
	pq_sendint64(&buf, now);
	pq_sendbyte(&buf, request_reply ? 1 : 0);
	if (PQputCopyData(PeerConn, buf.data, buf.len) <= 0 || PQflush(PeerConn))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send feedback to region \"%s\": %s",
						PeerName, PQerrorMessage(PeerConn))));
	pfree(buf.data);
	last_feedback = now;
}

/*
 * The stream loop.  It waits on one WaitEventSet for its whole life (the
 * peer's socket does not change while the worker runs): building a set
 * per wait, as WaitLatchOrSocket does, costs five system calls, and the
 * worker waits once per transaction when it keeps up with the peer.
 */
static void
apply_loop(void)
{
	WaitEventSet *waitset;

#if PG_VERSION_NUM >= 170000
	waitset = CreateWaitEventSet(NULL, 3);
#else
	waitset = CreateWaitEventSet(ApplyContext, 3);
#endif
	AddWaitEventToSet(waitset, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(waitset, WL_SOCKET_READABLE, PQsocket(PeerConn), NULL, NULL);
	AddWaitEventToSet(waitset, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);

	for (;;)
	{
		WaitEvent	event;
		int			rc;
		int			len;
		int			processed = 0;
		char	   *buf = NULL;

		CHECK_FOR_INTERRUPTS();
		Assert(CurrentMemoryContext == ApplyMessageContext);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (!PQconsumeInput(PeerConn))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("lost connection to region \"%s\": %s",
							PeerName, PQerrorMessage(PeerConn))));

		while ((len = PQgetCopyData(PeerConn, &buf, 1)) > 0)
		{
			StringInfoData s;
			char		kind;
			bool		reply = false;

			s.data = buf;
			s.len = len;
			s.cursor = 0;
			s.maxlen = -1;
			kind = pq_getmsgbyte(&s);
			if (kind == 'w')
			{
				XLogRecPtr	start = pq_getmsgint64(&s);
				XLogRecPtr	end = pq_getmsgint64(&s);

				(void) pq_getmsgint64(&s);	/* send time */
				last_received = Max(last_received, start);
				SpinLockAcquire(&MyPeer->mutex);
				MyPeer->received_lsn = last_received;
				MyPeer->peer_end_lsn = Max(MyPeer->peer_end_lsn, end);
				MyPeer->last_message_at = GetCurrentTimestamp();
				SpinLockRelease(&MyPeer->mutex);

				/*
				 * A whole small transaction, or a chunk of a large one.  A
				 * large one does not join the open group: the group's small
				 * transactions would wait for all of its chunks.
				 */
				if (!in_remote_transaction && s.len - s.cursor >= CR_WRITE_CHUNK)
					commit_group();
				while (s.cursor < s.len)
				{
					apply_dispatch(&s);
					MemoryContextSwitchTo(ApplyMessageContext);
					MemoryContextReset(ApplyMessageContext);
				}
			}
			else if (kind == 'k')
			{
				XLogRecPtr	end = pq_getmsgint64(&s);

				(void) pq_getmsgint64(&s);	/* send time */
				reply = pq_getmsgbyte(&s);
				last_received = Max(last_received, end);
				SpinLockAcquire(&MyPeer->mutex);
				MyPeer->received_lsn = last_received;
				MyPeer->peer_end_lsn = Max(MyPeer->peer_end_lsn, end);
				MyPeer->last_message_at = GetCurrentTimestamp();
				if (!in_remote_transaction)
					MyPeer->state = MyPeer->peer_end_lsn > last_applied_end &&
						MyPeer->peer_end_lsn > last_received ?
						CR_PEER_CATCHING_UP : CR_PEER_STREAMING;
				SpinLockRelease(&MyPeer->mutex);
			}
			PQfreemem(buf);
			buf = NULL;
			processed++;
			if (reply)
				send_feedback(true, false);
		}
		if (len == -1)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("region \"%s\" ended the replication stream", PeerName)));
		if (len == -2)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not read from region \"%s\": %s",
							PeerName, PQerrorMessage(PeerConn))));

		/*
		 * While messages keep coming, read on without sleeping, and the
		 * remote transactions they complete join the open group.  Once a
		 * read brings nothing, the group's local transaction commits, unless
		 * it belongs to a backlog and has not waited yet since the last read.
		 */
		send_feedback(false, false);
		if (processed > 0)
		{
			group_waited = false;
			continue;
		}
		if (!group_waited && group_in_backlog())
		{
			group_waited = true;
			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   BACKLOG_WAIT_MS, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			continue;
		}
		commit_group();
		careful = false;

		/*
		 * What was applied is reported once its commit is flushed (by the
		 * WAL writer): look again soon while commits are unflushed, for a
		 * writer that waits for this region (synchronous_commit =
		 * remote_apply, consistency level strong).
		 */
		rc = WaitEventSetWait(waitset,
							  dlist_is_empty(&commit_mappings) ? FEEDBACK_INTERVAL_MS : UNFLUSHED_WAIT_MS,
							  &event, 1, PG_WAIT_EXTENSION);
		if (rc == 1 && (event.events & WL_LATCH_SET))
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}

		/*
		 * Idle for a whole wait: report the statistics the last commits left
		 * pending (after a commit they are reported at most once a second,
		 * measured by commit times, which do not move while idle).
		 */
		if (rc == 0 && !IsTransactionState())
			pgstat_report_stat(true);
	}
}

void
cosmosrep_apply_main(Datum arg)
{
	Oid			dboid;
	RepOriginId originid;
	XLogRecPtr	startpos;
	CrRegion   *peer;
	char	   *origin_name;
	char	   *slot_name;
	char	   *local_name;
	HASHCTL		ctl;
	PGresult   *res;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	MyPeerIndex = DatumGetInt32(arg);
	MyPeer = cr_peer_status(MyPeerIndex);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	before_shmem_exit(apply_worker_exit, (Datum) 0);

	ApplyContext = AllocSetContextCreate(TopMemoryContext, "cosmosrep apply",
										 ALLOCSET_DEFAULT_SIZES);
	ApplyMessageContext = AllocSetContextCreate(ApplyContext,
												"cosmosrep apply message",
												ALLOCSET_DEFAULT_SIZES);
	ApplyTransactionContext = AllocSetContextCreate(ApplyContext,
													"cosmosrep apply transaction",
													ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(ApplyRel);
	ctl.hcxt = ApplyContext;
	ApplyRelMap = hash_create("cosmosrep apply relations", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	CacheRegisterRelcacheCallback(apply_rel_invalidate, (Datum) 0);

	/* rows from other regions keep their versions: no local row trigger */
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	/* values are parsed, and keys of the peer's rows written, as peers send them */
	SetConfigOption("DateStyle", "ISO", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("IntervalStyle", "postgres", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("extra_float_digits", "3", PGC_SUSET, PGC_S_OVERRIDE);

	PG_TRY();
	{
		MemoryContextSwitchTo(ApplyContext);
		/* a worker sets the time now() reports itself */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		peer = cr_get_region_by_id(MyPeer->peer_id);
		if (peer == NULL)
			proc_exit(0);
		/* what outlives this transaction goes to ApplyContext */
		MemoryContextSwitchTo(ApplyContext);
		PeerName = pstrdup(peer->name);
		ConfigRelid = get_relname_relid("replicated_table", cr_schema_oid());
		PeerDsn = pstrdup(peer->dsn);
		local_name = pstrdup(cr_get_region_by_id(cr_local_region_id(false))->name);
		origin_name = cr_origin_name(PeerName);
		slot_name = cr_slot_name(PeerName, local_name);
		originid = replorigin_by_name(origin_name, true);
		if (originid == InvalidRepOriginId)
			originid = replorigin_create(origin_name);
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(ApplyContext);
		pgstat_report_appname(psprintf("cosmosrep apply from %s", PeerName));

#if PG_VERSION_NUM >= 160000
		replorigin_session_setup(originid, 0);
#else
		replorigin_session_setup(originid);
#endif
		replorigin_session_origin = originid;
		/* flushed, as a previous worker's last commits may not be yet */
		startpos = replorigin_session_get_progress(true);
		last_applied_end = startpos;
		last_received = startpos;
		flushed_lsn = startpos;

		set_state(CR_PEER_CONNECTING);
		PeerConn = cr_remote_connect(PeerDsn, true,
									 cr_origin_name(local_name), PeerName);
		/* reached: from here on a failure is an error, not unreachable */
		set_state(CR_PEER_CATCHING_UP);
		res = cr_remote_exec(PeerConn,
							 psprintf("START_REPLICATION SLOT %s LOGICAL %X/%X (protocol_version '%d')",
									  slot_name, LSN_FORMAT_ARGS(startpos),
									  CR_PROTOCOL_VERSION),
							 PGRES_COPY_BOTH, PeerName);
		PQclear(res);

		ereport(LOG,
				(errmsg("cosmosrep apply worker streaming from region \"%s\" at %X/%X",
						PeerName, LSN_FORMAT_ARGS(startpos))));
		SpinLockAcquire(&MyPeer->mutex);
		if (MyPeer->failed_attempts >= APPLY_ATTEMPTS)
			careful_lsn = MyPeer->failed_lsn;
		SpinLockRelease(&MyPeer->mutex);
		if (!XLogRecPtrIsInvalid(careful_lsn))
			ereport(LOG,
					(errmsg("cosmosrep applies the transaction of region \"%s\" ending at %X/%X change by change",
							PeerName, LSN_FORMAT_ARGS(careful_lsn)),
					 errdetail("Its changes failed %d times; a change that fails again goes to cosmosrep.conflict_feed.",
							   APPLY_ATTEMPTS)));

		MemoryContextSwitchTo(ApplyMessageContext);
		apply_loop();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(ApplyContext);
		edata = CopyErrorData();
		record_error(edata->message);
		/* a change failed: count the attempts at its transaction */
		if (in_change)
		{
			SpinLockAcquire(&MyPeer->mutex);
			if (MyPeer->failed_lsn != remote_final_lsn)
				MyPeer->failed_attempts = 0;
			MyPeer->failed_lsn = remote_final_lsn;
			MyPeer->failed_attempts++;
			SpinLockRelease(&MyPeer->mutex);
		}
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	PG_END_TRY();
}
