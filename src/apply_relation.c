/*-------------------------------------------------------------------------
 *
 * apply_relation.c
 *	  The apply worker's map of the peer's relations onto local tables.
 *
 * NOTES
 *	  The peer describes each table in a RELATION message before its first
 *	  change; the map (ApplyRelMap, by remote relation id) keeps the
 *	  description, how its columns map onto the local table's, the table's
 *	  conflict policy and the policies of its earlier configurations.
 *	  A relcache invalidation of the table, or of cosmosrep's table
 *	  configuration, makes the map and the policy be read again at the
 *	  next change.  As core's relation.c does for its apply worker.
 *
 *	  The executor state of each table in the open local transaction (its
 *	  relation, indexes, slots) is opened here at the first change of the
 *	  table and closed at commit or before DDL (cr_exec_close_all).
 *
 *	  A partitioned table is mapped, decided and recorded as itself (the
 *	  peer sends its partitions' changes as its own), but its rows live in
 *	  leaf partitions: before each lookup or write, apply_change.c calls
 *	  cr_exec_route with the row (or key) at hand, which finds the leaf
 *	  through core's tuple routing (ExecFindPartition, as core's apply
 *	  does in apply_handle_tuple_routing) and points the executor state at
 *	  it.  The primary key includes the partition key, so the leaf of a
 *	  key holds the key's row whatever the row's other values; an update
 *	  that changes the partition key changes the primary key and arrives
 *	  as a delete of the old key and an insert of the new, each routed on
 *	  its own.  The leaves must have the partitioned table's column layout
 *	  (checked when each is first opened), so a row formed for the table
 *	  is a row of the leaf, position by position.
 *
 *	  Memory: the map lives in CrApplyContext, each policy in a context of
 *	  its own under it; executor states in CrApplyTransactionContext.
 *
 * IDENTIFICATION
 *	  src/apply_relation.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tupdesc_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "apply_internal.h"
#include "catalog.h"
#include "conflict.h"
#include "ddl_names.h"
#include "names.h"
#include "tombstone.h"

static List *open_rels = NIL;	/* ApplyRels with an exec, in CrApplyTransactionContext */
static HTAB *ApplyRelMap = NULL;
static Oid	ConfigRelid = InvalidOid;	/* cosmosrep.replicated_table */

static void apply_rel_invalidate(Datum arg, Oid relid);
static void apply_rel_map(ApplyRel *ar, Relation rel);
static void exec_open_indexes(ApplyExec *ex, ResultRelInfo *rri, Relation rel);

/* the executor state of one leaf partition, in CrApplyTransactionContext */
typedef struct ApplyLeaf
{
	ResultRelInfo *rri;			/* owned by the tuple routing */
	Oid			pkindex;
	TupleTableSlot *localslot;
	TupleTableSlot *otherslot;
	int			nunique;
	Oid		   *unique_indexes;
	TupleTableSlot **colliders;
	bool	   *collided;
} ApplyLeaf;

/*
 * Create the relation map and watch relcache invalidations.  The caller
 * runs in a transaction (to find cosmosrep's configuration table).
 */
void
cr_relmap_init(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(ApplyRel);
	ctl.hcxt = CrApplyContext;
	ApplyRelMap = hash_create("cosmosrep apply relations", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	CacheRegisterRelcacheCallback(apply_rel_invalidate, (Datum) 0);
	ConfigRelid = get_relname_relid("replicated_table", cr_schema_oid());
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

/* the map entry of the peer's relation remoteid; an error if it has none */
ApplyRel *
cr_apply_rel_lookup(LogicalRepRelId remoteid)
{
	ApplyRel   *ar = hash_search(ApplyRelMap, &remoteid, HASH_FIND, NULL);

	if (ar == NULL)
		elog(ERROR, "no relation message for remote relation %u", remoteid);
	return ar;
}

/*
 * Map the remote columns onto rel by name.  The two must have the same
 * columns (generated ones excepted), and rel must be multi-region, but
 * for what a replicated schema change in flight explains (ddl.c): a
 * local column the peer names by a name it had before a rename here
 * maps to that name; a local column the peer does not have yet (added
 * here) or any more (dropped there) is CR_REMOTE_ABSENT; a peer's column
 * that had its name here before (dropped or renamed here) is ignored.
 */
static void
apply_rel_map(ApplyRel *ar, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	LogicalRepRelation *remote = ar->remoterel;
	MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
	CrColumns	columns;
	bool	   *used = palloc0(sizeof(bool) * Max(remote->natts, 1));

	if (ar->remote_index)
	{
		pfree(ar->remote_index);
		pfree(ar->infuncs);
		pfree(ar->ioparams);
		pfree(ar->absent_text);
	}
	ar->natts = desc->natts;
	ar->remote_index = palloc(sizeof(int) * desc->natts);
	ar->infuncs = palloc0(sizeof(FmgrInfo) * desc->natts);
	ar->ioparams = palloc0(sizeof(Oid) * desc->natts);
	ar->absent_text = palloc0(sizeof(char *) * desc->natts);

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
		/* a peer of protocol version 2 does not send _cr_seen (protocol.h) */
		if (ar->remote_index[i] < 0 && strcmp(NameStr(att->attname), CR_SEEN_COLUMN) == 0)
			continue;
		if (ar->remote_index[i] < 0)
			ar->remote_index[i] = cr_ddl_former_column(RelationGetRelid(rel), att->attnum,
													   remote->attnames, remote->natts,
													   desc);
		if (ar->remote_index[i] < 0 &&
			cr_ddl_attnum_known(RelationGetRelid(rel), att->attnum))
		{
			ar->remote_index[i] = CR_REMOTE_ABSENT;
			ar->absent_text[i] = cr_ddl_missing_value(RelationGetRelid(rel), att->attnum);
			getTypeInputInfo(att->atttypid, &infunc, &ar->ioparams[i]);
			fmgr_info_cxt(infunc, &ar->infuncs[i], CrApplyContext);
			continue;
		}
		if (ar->remote_index[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("table \"%s.%s\" has different columns in region \"%s\"",
							remote->nspname, remote->relname, CrPeerName),
					 errdetail("Column \"%s\" exists only in this region.",
							   NameStr(att->attname)),
					 errhint("Give the table the same columns in every region; replication of it waits until then.")));
		used[ar->remote_index[i]] = true;
		getTypeInputInfo(att->atttypid, &infunc, &ar->ioparams[i]);
		fmgr_info_cxt(infunc, &ar->infuncs[i], CrApplyContext);
	}
	for (int r = 0; r < remote->natts; r++)
	{
		/* a table here that has no _cr_seen yet (names.c) */
		if (!used[r] && SPI_fnumber(desc, remote->attnames[r]) <= 0 &&
			strcmp(remote->attnames[r], CR_SEEN_COLUMN) != 0 &&
			!cr_ddl_name_known(RelationGetRelid(rel), remote->attnames[r]))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("table \"%s.%s\" has different columns in region \"%s\"",
							remote->nspname, remote->relname, CrPeerName),
					 errdetail("Column \"%s\" exists only in region \"%s\".",
							   remote->attnames[r], CrPeerName),
					 errhint("Give the table the same columns in every region; replication of it waits until then.")));
	}
	pfree(used);

	if (!cr_find_columns(desc, &columns))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" is multi-region in region \"%s\" but not in this region",
						remote->nspname, remote->relname, CrPeerName)));
	ar->version_att = columns.version;
	ar->base_att = columns.base;
	ar->config_att = columns.config;
	ar->seen_att = columns.seen;
	ar->localrelid = RelationGetRelid(rel);
	ar->map_valid = true;
	MemoryContextSwitchTo(oldctx);
}

/*
 * The value of local column i (0-based) of desc in a peer's row of ar that
 * does not have it (CR_REMOTE_ABSENT): what the rows that existed when
 * the column was added have (its non-volatile default at ADD COLUMN),
 * else NULL.  The peer's row gets that same value when the ADD COLUMN
 * reaches it, so both regions end with the same row.  A table rewrite
 * since (ALTER COLUMN TYPE) makes PostgreSQL forget the value; the one
 * recorded at the ADD COLUMN (ddl_names.c) is read with the column's
 * type then.  Runs as the table's owner (slot_fill), as for the peer's
 * own values.
 */
void
cr_absent_column_value(ApplyRel *ar, TupleDesc desc, int i, Datum *value, bool *isnull)
{
	*value = (Datum) 0;
	*isnull = true;
	if (desc->constr && desc->constr->missing && desc->constr->missing[i].am_present)
	{
		*value = desc->constr->missing[i].am_value;
		*isnull = false;
	}
	else if (ar->absent_text[i] != NULL)
	{
		*value = InputFunctionCall(&ar->infuncs[i], ar->absent_text[i], ar->ioparams[i],
								   TupleDescAttr(desc, i)->atttypmod);
		*isnull = false;
	}
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
ApplyExec *
cr_exec_open(ApplyRel *ar)
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
	{
		/* renamed here by a replicated change the peer has not had yet */
		relid = cr_ddl_former_table(ar->remoterel->nspname, ar->remoterel->relname);
		if (OidIsValid(relid))
			LockRelationOid(relid, RowExclusiveLock);
	}
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.%s\" replicated from region \"%s\" does not exist in this region",
						ar->remoterel->nspname, ar->remoterel->relname, CrPeerName),
				 errhint("Create the table with the same columns in every region; replication from \"%s\" resumes once it exists.",
						 CrPeerName)));

	oldctx = MemoryContextSwitchTo(CrApplyTransactionContext);
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
	EvalPlanQualInit(&ex->epqstate, ex->estate, NULL, NIL, -1);
	ex->remoteslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel),
											&TTSOpsVirtual);
	ex->keyslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel),
										 &TTSOpsVirtual);
	ex->mergedslot = ExecInitExtraTupleSlot(ex->estate, RelationGetDescr(ex->rel),
											&TTSOpsVirtual);
	if (ex->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		/* the leaves are opened by cr_exec_route, at their first row */
		ex->mtstate = makeNode(ModifyTableState);
		ex->mtstate->ps.plan = NULL;
		ex->mtstate->ps.state = ex->estate;
		ex->mtstate->operation = CMD_INSERT;
		ex->mtstate->resultRelInfo = ex->rri;
		ex->root_rri = ex->rri;
		ex->proute = ExecSetupPartitionTupleRouting(ex->estate, ex->rel);
		ex->resowner = CurrentResourceOwner;
	}
	else
	{
		ExecOpenIndices(ex->rri, false);
		exec_open_indexes(ex, ex->rri, ex->rel);
	}
	ex->owner = ex->rel->rd_rel->relowner;
	ex->horizon = cr_tombstone_lookup(relid, NULL);

	ar->exec = ex;
	open_rels = lappend(open_rels, ar);
	MemoryContextSwitchTo(oldctx);
	return ex;
}

/*
 * The slots for the local rows of rel, a table with storage whose result
 * relation rri has its indexes open, and its secondary unique indexes on
 * plain columns, into ex.
 */
static void
exec_open_indexes(ApplyExec *ex, ResultRelInfo *rri, Relation rel)
{
	ex->localslot = table_slot_create(rel, &ex->estate->es_tupleTable);
	ex->otherslot = table_slot_create(rel, &ex->estate->es_tupleTable);
	ex->nunique = 0;
	ex->unique_indexes = palloc(sizeof(Oid) * rri->ri_NumIndices);
	ex->colliders = palloc(sizeof(TupleTableSlot *) * rri->ri_NumIndices);
	ex->collided = palloc(sizeof(bool) * rri->ri_NumIndices);
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		Relation	index = rri->ri_IndexRelationDescs[i];
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];

		if (info->ii_Unique && RelationGetRelid(index) != ex->pkindex &&
			info->ii_Expressions == NIL && info->ii_Predicate == NIL &&
			index->rd_rel->relam == BTREE_AM_OID)
		{
			ex->unique_indexes[ex->nunique] = RelationGetRelid(index);
			ex->colliders[ex->nunique++] = table_slot_create(rel,
															 &ex->estate->es_tupleTable);
		}
	}
}

/*
 * Point ex, the executor state of a partitioned table, at the leaf
 * partition that holds (or would hold) row, a row or key in the table's
 * columns: its result relation, primary key, slots and unique indexes.
 * Nothing for an ordinary table.  A row that no partition here accepts is
 * an error of the change ("no partition of relation ... found for row"):
 * the regions' partitions must cover the same values.
 *
 * The leaf is opened at its first row in the transaction and kept until
 * cr_exec_close_all, under the resource owner that opened the table's
 * executor state, even when a subtransaction of the careful path routes
 * the row: undoing that subtransaction must not close a leaf the routing
 * still holds.
 */
void
cr_exec_route(ApplyExec *ex, TupleTableSlot *row)
{
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext oldctx;
	ResultRelInfo *rri;
	ApplyLeaf  *leaf = NULL;
	ListCell   *lc;

	if (ex->proute == NULL)
		return;
	CurrentResourceOwner = ex->resowner;
	PG_TRY();
	{
		rri = ExecFindPartition(ex->mtstate, ex->root_rri, ex->proute, row, ex->estate);
	}
	PG_FINALLY();
	{
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();

	foreach(lc, ex->leaves)
	{
		if (((ApplyLeaf *) lfirst(lc))->rri == rri)
		{
			leaf = lfirst(lc);
			break;
		}
	}
	if (leaf == NULL)
	{
		Relation	rel = rri->ri_RelationDesc;

		if (!cr_same_column_layout(RelationGetDescr(ex->rel), RelationGetDescr(rel)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("partition \"%s\" of table \"%s\" has its columns at other positions than the table",
							RelationGetRelationName(rel), RelationGetRelationName(ex->rel)),
					 errdetail("cosmosrep writes a partitioned table's rows into its partitions in the table's column layout, dropped columns included."),
					 errhint("Recreate the partition with CREATE TABLE ... PARTITION OF; replication from \"%s\" resumes then.",
							 CrPeerName)));
		oldctx = MemoryContextSwitchTo(CrApplyTransactionContext);
		ex->pkindex = RelationGetPrimaryKeyIndex(rel);
		if (!OidIsValid(ex->pkindex))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" has no primary key in this region",
							RelationGetRelationName(rel))));
		exec_open_indexes(ex, rri, rel);
		leaf = palloc(sizeof(ApplyLeaf));
		leaf->rri = rri;
		leaf->pkindex = ex->pkindex;
		leaf->localslot = ex->localslot;
		leaf->otherslot = ex->otherslot;
		leaf->nunique = ex->nunique;
		leaf->unique_indexes = ex->unique_indexes;
		leaf->colliders = ex->colliders;
		leaf->collided = ex->collided;
		ex->leaves = lappend(ex->leaves, leaf);
		MemoryContextSwitchTo(oldctx);
	}
	ex->rri = leaf->rri;
	ex->pkindex = leaf->pkindex;
	ex->localslot = leaf->localslot;
	ex->otherslot = leaf->otherslot;
	ex->nunique = leaf->nunique;
	ex->unique_indexes = leaf->unique_indexes;
	ex->colliders = leaf->colliders;
	ex->collided = leaf->collided;
}

/*
 * The conflict policy of ar's local table rel, read at the start of a
 * change when the configuration or the table changed since it was read
 * (never in the middle of a change: a resolver may process invalidations).
 */
const CrPolicy *
cr_apply_rel_policy(ApplyRel *ar, Relation rel)
{
	if (!ar->policy_valid)
	{
		CrTableConfig *config = cr_get_table_config(RelationGetRelid(rel));
		MemoryContext oldctx;

		if (config == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s.%s\" is multi-region in region \"%s\" but not in this region",
							ar->remoterel->nspname, ar->remoterel->relname, CrPeerName)));
		if (ar->policy_cxt == NULL)
			ar->policy_cxt = AllocSetContextCreate(CrApplyContext, "cosmosrep apply policy",
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
const CrPolicy *
cr_policy_at(ApplyRel *ar, Relation rel, int64 config_version)
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
	config = cr_get_policy_history(RelationGetRelid(rel), config_version);
	if (config == NULL)
		elog(ERROR, "configuration " INT64_FORMAT " of table \"%s\" from region \"%s\" is not in cosmosrep.policy_history",
			 config_version, RelationGetRelationName(rel), CrPeerName);
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
void
cr_exec_close_all(void)
{
	ListCell   *lc;

	/* the inserts still in a batch, then the conflicts of what was applied */
	cr_batch_flush();
	cr_flush_conflicts();

	foreach(lc, open_rels)
	{
		ApplyRel   *ar = lfirst(lc);
		ApplyExec  *ex = ar->exec;

		EvalPlanQualEnd(&ex->epqstate);
		/* a partitioned table's leaves and the tables between */
		if (ex->proute != NULL)
		{
			ResourceOwner owner = CurrentResourceOwner;

			CurrentResourceOwner = ex->resowner;
			ExecCleanupTupleRouting(ex->mtstate, ex->proute);
			CurrentResourceOwner = owner;
		}
		/* its indexes, and relations that AFTER triggers opened */
		ExecCloseResultRelations(ex->estate);
		ExecResetTupleTable(ex->estate->es_tupleTable, false);
		FreeExecutorState(ex->estate);
		table_close(ex->rel, NoLock);
		ar->exec = NULL;
	}
	open_rels = NIL;
	MemoryContextReset(CrApplyTransactionContext);
}

/*
 * A RELATION message: the peer's description of a table, which replaces
 * the one it sent before.  The table is mapped again at its next change.
 */
void
cr_handle_relation(StringInfo s)
{
	MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
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

/*
 * Whether the RELATION message at s (its type byte consumed; s is not
 * moved) describes a relation this worker knows with other columns than
 * it has now.
 */
bool
cr_relation_changes(StringInfo s)
{
	StringInfoData peek = *s;
	LogicalRepRelation *rel = logicalrep_read_rel(&peek);
	ApplyRel   *ar = hash_search(ApplyRelMap, &rel->remoteid, HASH_FIND, NULL);

	if (ar == NULL)
		return false;
	if (ar->remoterel->natts != rel->natts)
		return true;
	for (int i = 0; i < rel->natts; i++)
		if (strcmp(ar->remoterel->attnames[i], rel->attnames[i]) != 0 ||
			ar->remoterel->atttyps[i] != rel->atttyps[i])
			return true;
	return false;
}
