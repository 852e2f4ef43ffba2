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
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
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
#include "names.h"
#include "tombstone.h"

static List *open_rels = NIL;	/* ApplyRels with an exec, in CrApplyTransactionContext */
static HTAB *ApplyRelMap = NULL;
static Oid	ConfigRelid = InvalidOid;	/* cosmosrep.replicated_table */

static void apply_rel_invalidate(Datum arg, Oid relid);
static void apply_rel_map(ApplyRel *ar, Relation rel);

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
 * columns (generated ones excepted), and rel must be multi-region.
 */
static void
apply_rel_map(ApplyRel *ar, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	LogicalRepRelation *remote = ar->remoterel;
	MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
	int			matched = 0;
	CrColumns	columns;

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
							remote->nspname, remote->relname, CrPeerName),
					 errdetail("Column \"%s\" exists only in this region.",
							   NameStr(att->attname)),
					 errhint("Give the table the same columns in every region; replication of it waits until then.")));
		matched++;
		getTypeInputInfo(att->atttypid, &infunc, &ar->ioparams[i]);
		fmgr_info_cxt(infunc, &ar->infuncs[i], CrApplyContext);
	}
	if (matched != remote->natts)
	{
		for (int r = 0; r < remote->natts; r++)
		{
			if (SPI_fnumber(desc, remote->attnames[r]) <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("table \"%s.%s\" has different columns in region \"%s\"",
								remote->nspname, remote->relname, CrPeerName),
						 errdetail("Column \"%s\" exists only in region \"%s\".",
								   remote->attnames[r], CrPeerName),
						 errhint("Give the table the same columns in every region; replication of it waits until then.")));
		}
	}

	if (!cr_find_columns(desc, &columns))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" is multi-region in region \"%s\" but not in this region",
						remote->nspname, remote->relname, CrPeerName)));
	ar->version_att = columns.version;
	ar->base_att = columns.base;
	ar->config_att = columns.config;
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
