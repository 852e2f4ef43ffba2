/*-------------------------------------------------------------------------
 *
 * conflict.c
 *	  The one decision of apply: which remote change wins, whether it
 *	  collided with a write it had not seen, and how the table's conflict
 *	  policy resolves the collision.
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
 *	  Detection decides which changes go to the policy.  A change
 *	  conflicts when its writer had not seen what this region holds, and
 *	  this region's write had not seen the change.  Every write carries
 *	  the writes it had seen, as a version vector (_cr_seen, seen.c), so a
 *	  causal chain is told from concurrent writes however late its first
 *	  write arrives.
 *
 *	  Changes that are no conflict are decided by version under every
 *	  policy; conflicts by the table's policy (cr_decide): the version, a
 *	  path column, a resolver, or the version with the conflict left
 *	  pending (manual).
 *
 *	  A policy change (alter_table_policy) reaches regions at different
 *	  times, so two writes of a conflict may have been made under two
 *	  configurations.  Each write carries the version of the configuration
 *	  its writer had, and every region decides a conflict the same way:
 *	  the write of the newer configuration wins; two writes of one
 *	  configuration go to that configuration's policy (the caller passes
 *	  it, from the table's history).  Deciding a pair of two
 *	  configurations by either policy instead would not be an order of
 *	  all writes (three writes can beat each other in a circle), and
 *	  regions that receive them in different orders would end apart.
 *	  Writes made one after the other never go back in configuration (the
 *	  row trigger), so this order agrees with the version between them.
 *
 *	  Collisions on secondary unique indexes are decided by
 *	  cr_decide_collision, in the same order.  conflict_log.c records
 *	  them.
 *
 * IDENTIFICATION
 *	  src/conflict.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "catalog.h"
#include "conflict.h"
#include "hlc.h"
#include "names.h"
#include "seen.h"
#include "tombstone.h"

PG_FUNCTION_INFO_V1(cosmosrep_resolver_procedure);

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

/*
 * Whether a remote change collides with what this region holds, and how:
 * whether neither write had seen the other (seen.c).  A write that had
 * seen the other is no conflict however late the other arrives, over
 * however many regions the chain of writes ran.  The truncate horizon,
 * which no write carries in its history, is ordered by version: a change
 * older than it collided with the truncate.
 */
CrConflictKind
cr_detect_conflict(const CrIncoming *incoming, const CrLocalState *local)
{
	/* the same write twice, or nothing here to collide with */
	if (local->version == incoming->version || local->version == 0)
		return CR_CONFLICT_NONE;

	if (!local->row_found && local->config == CR_CONFIG_ANY)
	{
		if (incoming->kind == CR_CHANGE_DELETE || incoming->version > local->version)
			return CR_CONFLICT_NONE;
		return incoming->kind == CR_CHANGE_INSERT ? CR_CONFLICT_INSERT_DELETED :
			CR_CONFLICT_UPDATE_DELETED;
	}

	if (cr_seen_covers(cr_seen_or_base(incoming->seen, incoming->version, incoming->base),
					   local->version) ||
		cr_seen_covers(cr_seen_or_base(local->seen, local->version, local->base),
					   incoming->version))
		return CR_CONFLICT_NONE;

	if (!local->row_found)
	{
		/* a tombstone: two deletes of a key are no conflict */
		switch (incoming->kind)
		{
			case CR_CHANGE_INSERT:
				return CR_CONFLICT_INSERT_DELETED;
			case CR_CHANGE_UPDATE:
				return CR_CONFLICT_UPDATE_DELETED;
			case CR_CHANGE_DELETE:
				return CR_CONFLICT_NONE;
		}
	}
	switch (incoming->kind)
	{
		case CR_CHANGE_INSERT:
			return CR_CONFLICT_INSERT_EXISTS;
		case CR_CHANGE_UPDATE:
			return CR_CONFLICT_UPDATE_UPDATE;
		case CR_CHANGE_DELETE:
			return CR_CONFLICT_DELETE_UPDATED;
	}
	return CR_CONFLICT_NONE;
}


/* the policies, as SQL names them; a path does not change the name */
const char *const cr_policy_names[] = {
	[CR_POLICY_LWW] = "last_writer_wins",
	[CR_POLICY_PATH] = "last_writer_wins",
	[CR_POLICY_CUSTOM] = "custom",
	[CR_POLICY_MANUAL] = "manual",
};

/*
 * The kind of the policy named name (with a path, or not), or -1 for a
 * name that is no policy.
 */
int
cr_policy_kind(const char *name, bool has_path)
{
	for (int kind = 0; kind < lengthof(cr_policy_names); kind++)
	{
		if (strcmp(name, cr_policy_names[kind]) != 0)
			continue;
		if (kind == CR_POLICY_LWW && has_path)
			return CR_POLICY_PATH;
		return kind;
	}
	return -1;
}

/*
 * The function names that takes the arguments of a resolver of a table
 * of row type rowtype, or InvalidOid.
 */
static Oid
resolver_candidate(Oid rowtype, List *names)
{
	Oid			argtypes[4] = {rowtype, rowtype, BOOLOID, get_array_type(rowtype)};

	return LookupFuncName(names, 4, argtypes, true);
}

/*
 * Find the resolver function for rel: (incoming rel, existing rel,
 * is_tombstone boolean, conflicting rel[]) RETURNS rel, not STRICT (it
 * is called with a NULL row where a write deleted the key).  name is what
 * the user passed to enable_table or alter_table_policy (looked up in the
 * search_path unless qualified), or the schema-qualified name the
 * configuration keeps (cr_resolver_name): the catalog keeps the name, not
 * the function's OID, which pg_upgrade does not preserve, so the lookup of
 * a kept name depends on no search_path, and a function renamed or dropped
 * since fails here with the error of enable_table.  The argument types
 * come from rel, so renaming the table changes nothing.
 */
Oid
cr_lookup_resolver(Relation rel, const char *name)
{
	Oid			rowtype = rel->rd_rel->reltype;
	List	   *names = stringToQualifiedNameList(name);
	Oid			funcid = resolver_candidate(rowtype, names);
	char	   *rowtypename = format_type_be(rowtype);

	if (!OidIsValid(funcid) || get_func_rettype(funcid) != rowtype)
	{
		if (!OidIsValid(funcid) &&
			FuncnameGetCandidates(names, -1, NIL, false, false, false, true) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("resolver function \"%s\" does not exist", name)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function \"%s\" cannot resolve conflicts of table \"%s\"",
						name, RelationGetRelationName(rel)),
				 errdetail("A resolver must take (incoming %s, existing %s, is_tombstone boolean, conflicting %s[]) and return %s.",
						   rowtypename, rowtypename, rowtypename, rowtypename)));
	}
	if (func_strict(funcid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("resolver function \"%s\" must not be STRICT", name),
				 errdetail("A resolver is called with a NULL row where a write deleted the row.")));
	return funcid;
}

/*
 * cosmosrep.resolver_procedure(relation, resolver): the function the
 * configuration of relation names as resolver (cr_lookup_resolver), or
 * NULL where none is found; what cosmosrep.tables shows.
 */
Datum
cosmosrep_resolver_procedure(PG_FUNCTION_ARGS)
{
	Oid			rowtype = get_rel_type_id(PG_GETARG_OID(0));
	Oid			funcid;

	if (!OidIsValid(rowtype))
		PG_RETURN_NULL();
	funcid = resolver_candidate(rowtype,
								stringToQualifiedNameList(text_to_cstring(PG_GETARG_TEXT_PP(1))));
	if (!OidIsValid(funcid) || get_func_rettype(funcid) != rowtype)
		PG_RETURN_NULL();
	PG_RETURN_OID(funcid);
}

/*
 * The policy of rel as apply uses it, from its configuration, allocated
 * in the current memory context.
 */
CrPolicy *
cr_policy_load(Relation rel, const char *policy, const char *path,
			   const char *resolver)
{
	CrPolicy   *p = palloc0(sizeof(CrPolicy));
	CrColumns	columns;
	int			kind;

	p->name = pstrdup(policy);
	p->rowtype = rel->rd_rel->reltype;
	if (!cr_find_columns(RelationGetDescr(rel), &columns))
		elog(ERROR, "table \"%s\" lacks cosmosrep's columns", RelationGetRelationName(rel));
	p->version_att = columns.version;
	p->base_att = columns.base;
	p->region_att = columns.region;
	p->config_att = columns.config;
	p->seen_att = columns.seen;
	kind = cr_policy_kind(policy, path != NULL);
	if (kind < 0)
		elog(ERROR, "unknown conflict policy \"%s\"", policy);
	p->kind = kind;
	if (p->kind == CR_POLICY_CUSTOM)
		fmgr_info(cr_lookup_resolver(rel, resolver), &p->resolver);
	else if (p->kind == CR_POLICY_PATH)
	{
		Form_pg_attribute att;
		TypeCacheEntry *type;

		p->path_att = get_attnum(RelationGetRelid(rel), path);
		if (p->path_att == InvalidAttrNumber)
			elog(ERROR, "table \"%s\" has no column \"%s\"", RelationGetRelationName(rel), path);
		att = TupleDescAttr(RelationGetDescr(rel), p->path_att - 1);
		type = lookup_type_cache(att->atttypid, TYPECACHE_CMP_PROC_FINFO);
		if (!OidIsValid(type->cmp_proc_finfo.fn_oid))
			elog(ERROR, "column \"%s\" has no btree ordering", path);
		fmgr_info_copy(&p->path_cmp, &type->cmp_proc_finfo, CurrentMemoryContext);
		p->path_collation = att->attcollation;
	}
	return p;
}

/*
 * Whether the policy compares the rows of a conflict, so that apply must
 * have the whole remote row (an update leaves TOASTed values it did not
 * change out of the stream) before it decides.
 */
bool
cr_policy_reads_rows(const CrPolicy *policy)
{
	return policy->kind == CR_POLICY_PATH || policy->kind == CR_POLICY_CUSTOM;
}

/*
 * last_writer_wins on a path: whether the remote row's value of the path
 * column is higher than the local row's.  NULL loses to any value; equal
 * values (or two NULLs) fall back to the row version.
 */
static bool
path_remote_wins(const CrPolicy *policy, int64 incoming_version,
				 const CrLocalState *local, TupleTableSlot *local_row,
				 TupleTableSlot *remote_row)
{
	bool		lnull;
	bool		rnull;
	Datum		lval = slot_getattr(local_row, policy->path_att, &lnull);
	Datum		rval = slot_getattr(remote_row, policy->path_att, &rnull);
	int32		cmp;

	if (lnull != rnull)
		return lnull;
	if (!lnull)
	{
		cmp = DatumGetInt32(FunctionCall2Coll((FmgrInfo *) &policy->path_cmp,
											  policy->path_collation, rval, lval));
		if (cmp != 0)
			return cmp > 0;
	}
	return cr_remote_wins(incoming_version, local);
}

/* whether two rows of rel hold the same values outside cosmosrep's columns */
bool
cr_same_user_values(const CrPolicy *policy, TupleDesc desc, TupleTableSlot *a,
				 TupleTableSlot *b)
{
	slot_getallattrs(a);
	slot_getallattrs(b);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || i + 1 == policy->version_att ||
			i + 1 == policy->base_att || i + 1 == policy->region_att ||
			i + 1 == policy->config_att || i + 1 == policy->seen_att)
			continue;
		if (a->tts_isnull[i] != b->tts_isnull[i] ||
			(!a->tts_isnull[i] &&
			 !datum_image_eq(a->tts_values[i], b->tts_values[i],
							 att->attbyval, att->attlen)))
			return false;
	}
	return true;
}

/*
 * Whether an error says nothing of the change or the resolver that met
 * it: a deadlock or serialization failure, a lock or statement timeout,
 * lack of resources, a lost connection, a shutdown, an internal error.
 * Such an error is raised again, so that the transaction is retried as a
 * whole, never recorded as the outcome of a conflict or of a change:
 * that would decide it in this region only.
 */
bool
cr_error_is_transient(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_TRANSACTION_ROLLBACK:
		case ERRCODE_INSUFFICIENT_RESOURCES:
		case ERRCODE_OPERATOR_INTERVENTION:
		case ERRCODE_SYSTEM_ERROR:
		case ERRCODE_CONNECTION_EXCEPTION:
		case ERRCODE_INTERNAL_ERROR:
			return true;
	}
	return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/*
 * Call the resolver of rel in a subtransaction with incoming and existing
 * (composite datums, 0 for a write that deleted the key), is_tombstone
 * when incoming is a delete, and the rows of the key that wait in the
 * feed.  The row it returns is stored in merged; *deleted when it returns
 * NULL.  False, with *error set, when the resolver failed, or returned a
 * row of another type or another key.
 */
bool
cr_call_resolver(const CrPolicy *policy, Relation rel, bytea *key,
				 Datum incoming, Datum existing, TupleTableSlot *merged,
				 bool *deleted, char **error)
{
	MemoryContext callerctx = CurrentMemoryContext;
	ResourceOwner callerowner = CurrentResourceOwner;
	TupleDesc	desc = RelationGetDescr(rel);
	LOCAL_FCINFO(fcinfo, 4);
	bool		ok = false;

	InitFunctionCallInfoData(*fcinfo, (FmgrInfo *) &policy->resolver, 4,
							 InvalidOid, NULL, NULL);
	fcinfo->args[0].value = incoming;
	fcinfo->args[0].isnull = incoming == (Datum) 0;
	fcinfo->args[1].value = existing;
	fcinfo->args[1].isnull = existing == (Datum) 0;
	fcinfo->args[2].value = BoolGetDatum(incoming == (Datum) 0);
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = cr_feed_rows(RelationGetRelid(rel), key, policy->rowtype);
	fcinfo->args[3].isnull = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(callerctx);
	PG_TRY();
	{
		Datum		result;
		AclResult	aclresult;

		/*
		 * The caller runs the resolver as the table's owner, which must
		 * still be allowed to execute it: one it may no longer execute
		 * fails like any resolver.
		 */
#if PG_VERSION_NUM >= 160000
		aclresult = object_aclcheck(ProcedureRelationId, policy->resolver.fn_oid,
									GetUserId(), ACL_EXECUTE);
#else
		aclresult = pg_proc_aclcheck(policy->resolver.fn_oid, GetUserId(), ACL_EXECUTE);
#endif
		if (aclresult != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for function %s",
							get_func_name(policy->resolver.fn_oid))));
		result = FunctionCallInvoke(fcinfo);

		*deleted = fcinfo->isnull;
		if (!*deleted)
		{
			HeapTupleHeader hdr = DatumGetHeapTupleHeader(result);
			HeapTupleData tuple;

			if (HeapTupleHeaderGetTypeId(hdr) != policy->rowtype)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("resolver returned a row of type %s instead of %s",
								format_type_be(HeapTupleHeaderGetTypeId(hdr)),
								format_type_be(policy->rowtype))));
			tuple.t_len = HeapTupleHeaderGetDatumLength(hdr);
			ItemPointerSetInvalid(&tuple.t_self);
			tuple.t_tableOid = RelationGetRelid(rel);
			tuple.t_data = hdr;
			ExecClearTuple(merged);
			heap_deform_tuple(&tuple, desc, merged->tts_values, merged->tts_isnull);
			ExecStoreVirtualTuple(merged);
			/* a copy, independent of the subtransaction's memory */
			ExecMaterializeSlot(merged);
			if (!cr_tombstone_key_equal(cr_tombstone_key(rel, merged), key))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("resolver returned a row with another primary key")));
		}
		ReleaseCurrentSubTransaction();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(callerctx);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(callerctx);
		CurrentResourceOwner = callerowner;
		if (cr_error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
		*error = edata->message;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(callerctx);
	CurrentResourceOwner = callerowner;
	return ok;
}

/*
 * The custom policy, in the arbiter (catalog.c): the resolver's row for
 * the two writes as they met here (incoming, as it arrived, and existing,
 * what this region held), written as a new write of this region, with a
 * version above both, whatever the resolver returned (even one of the two
 * writes unchanged).  The other regions hold one of the two writes for
 * now, by version; the new write replaces it everywhere, as a write made
 * after seeing both.  The resolver runs once per conflict in the group,
 * so it need not be deterministic, commutative or associative.
 *
 * A resolver that fails leaves the conflict decided by version, as the
 * other regions decided it, and in the feed with its error.
 */
static void
decide_custom(const CrPolicy *policy, Relation rel, const CrIncoming *incoming,
			  const CrLocalState *local, bytea *key, TupleTableSlot *local_row,
			  TupleTableSlot *remote_row, TupleTableSlot *merged, CrDecision *d)
{
	int			region = cr_local_region_id(false);
	bool		deleted;

	if (!cr_call_resolver(policy, rel, key,
						  remote_row ? ExecFetchSlotHeapTupleDatum(remote_row) : (Datum) 0,
						  local_row ? ExecFetchSlotHeapTupleDatum(local_row) : (Datum) 0,
						  merged, &deleted, &d->error))
	{
		d->resolution = CR_RESOLUTION_ERROR;
		return;
	}
	d->resolution = CR_RESOLUTION_MERGED;
	d->apply_remote = false;
	d->merged_version = cr_hlc_next_version(region);
	/* what it replaced here: unchanged TOASTed values are that row's */
	d->merged_base = local->row_found ? local->version : 0;
	d->merged_config = Max(incoming->config, local->config);
	d->merged_seen = cr_seen_add(cr_seen_merge(cr_seen_or_base(incoming->seen, incoming->version,
															   incoming->base),
											   cr_seen_or_base(local->seen, local->version,
															   local->base)),
								 d->merged_version);
	if (deleted)
		d->delete_merged = true;
	else
	{
		d->write_merged = true;
		merged->tts_values[policy->version_att - 1] = Int64GetDatum(d->merged_version);
		merged->tts_isnull[policy->version_att - 1] = false;
		merged->tts_values[policy->base_att - 1] = Int64GetDatum(d->merged_base);
		merged->tts_isnull[policy->base_att - 1] = false;
		merged->tts_values[policy->region_att - 1] = Int16GetDatum((int16) region);
		merged->tts_isnull[policy->region_att - 1] = false;
		merged->tts_values[policy->config_att - 1] = Int64GetDatum(d->merged_config);
		merged->tts_isnull[policy->config_att - 1] = false;
		if (policy->seen_att > 0)
		{
			merged->tts_values[policy->seen_att - 1] = PointerGetDatum(d->merged_seen);
			merged->tts_isnull[policy->seen_att - 1] = false;
		}
	}
}

/* whether incoming and local, a conflict, were made under two configurations */
static bool
configurations_differ(const CrIncoming *incoming, const CrLocalState *local)
{
	return local->config != CR_CONFIG_ANY && incoming->config != local->config;
}

/*
 * Whether cr_decide may write the remote change, or a row made from it:
 * apply needs the whole remote row then.
 */
bool
cr_remote_may_win(const CrPolicy *policy, const CrIncoming *incoming,
				  const CrLocalState *local)
{
	if (cr_detect_conflict(incoming, local) == CR_CONFLICT_NONE)
		return cr_remote_wins(incoming->version, local);
	if (configurations_differ(incoming, local))
		return incoming->config > local->config;
	return cr_policy_reads_rows(policy) || cr_remote_wins(incoming->version, local);
}

/*
 * Decide a remote change (incoming, with remote_row, or NULL for a delete)
 * against what this region holds for its key (local, with local_row, or
 * NULL without a row).  Writes that are not in conflict are decided by
 * version.  Conflicts go to the table's policy:
 *
 *	last_writer_wins	the higher version wins;
 *	... on a path		between two rows, the higher value of the path
 *						column wins (NULL loses, a tie goes to the version);
 *						a delete wins against a concurrent insert or update,
 *						whatever its path value, as in Cosmos DB (an order
 *						of all writes, so that three regions converge);
 *	manual				decided by version for now, and pending in the feed;
 *	custom				in the arbiter, the resolver's row, as a new write
 *						(decide_custom); elsewhere by version, tentatively,
 *						until the arbiter's write arrives.
 *
 * policy is that of the configuration incoming was made under; a conflict
 * between writes of two configurations goes to the newer one's write.
 *
 * key holds the key of the change (the old key of an update that changed
 * it), and merged is a slot of rel's row type for the custom policy's
 * row.
 */
CrDecision
cr_decide(const CrPolicy *policy, Relation rel, const CrIncoming *incoming,
		  const CrLocalState *local, TupleTableSlot *key, TupleTableSlot *local_row,
		  TupleTableSlot *remote_row, TupleTableSlot *merged)
{
	CrDecision	d = {0};

	d.kind = cr_detect_conflict(incoming, local);
	d.apply_remote = cr_remote_wins(incoming->version, local);
	if (d.kind != CR_CONFLICT_NONE && configurations_differ(incoming, local))
	{
		d.by_configuration = true;
		d.apply_remote = incoming->config > local->config;
	}
	else if (d.kind != CR_CONFLICT_NONE)
	{
		/* the feed finds its entries by key */
		if (policy->kind == CR_POLICY_CUSTOM || policy->kind == CR_POLICY_MANUAL)
			d.key = cr_tombstone_key(rel, key);
		switch (policy->kind)
		{
			case CR_POLICY_LWW:
				break;
			case CR_POLICY_PATH:
				/* between two rows the path decides; a delete always wins */
				if (local_row != NULL && remote_row != NULL)
					d.apply_remote = path_remote_wins(policy, incoming->version, local,
													  local_row, remote_row);
				else
					d.apply_remote = remote_row == NULL;
				break;
			case CR_POLICY_MANUAL:
				d.resolution = CR_RESOLUTION_PENDING;
				return d;
			case CR_POLICY_CUSTOM:
				if (cr_arbiter_region_id() != cr_local_region_id(false))
				{
					/* by version for now: the arbiter's write follows */
					d.resolution = CR_RESOLUTION_TENTATIVE;
					return d;
				}
				decide_custom(policy, rel, incoming, local, d.key, local_row,
							  remote_row, merged, &d);
				return d;
		}
	}
	d.resolution = d.apply_remote ? CR_RESOLUTION_REMOTE_APPLIED : CR_RESOLUTION_LOCAL_KEPT;
	return d;
}

/*
 * Decide a collision on a secondary unique index: the remote row, written
 * by incoming, holds a value that other, the row of another key here
 * (other_row), holds too.  The remote row may be written only if it wins,
 * and then other goes.  Between writes of two configurations the newer
 * configuration's wins; else decided by the policy's order between two
 * rows: the path, where there is one, else the version (a resolver sees
 * the writes of one key only); manual leaves it pending in the feed.
 */
CrDecision
cr_decide_collision(const CrPolicy *policy, Relation rel, const CrIncoming *incoming,
					const CrLocalState *other, TupleTableSlot *other_row,
					TupleTableSlot *remote_row)
{
	CrDecision	d = {0};

	d.kind = CR_CONFLICT_UNIQUE;
	if (incoming->config != other->config)
	{
		d.by_configuration = true;
		d.apply_remote = incoming->config > other->config;
	}
	else if (policy->kind == CR_POLICY_PATH)
		d.apply_remote = path_remote_wins(policy, incoming->version, other,
										  other_row, remote_row);
	else
		d.apply_remote = cr_remote_wins(incoming->version, other);
	if (policy->kind == CR_POLICY_MANUAL && !d.by_configuration)
	{
		d.resolution = CR_RESOLUTION_PENDING;
		d.key = cr_tombstone_key(rel, other_row);
	}
	else
		d.resolution = d.apply_remote ? CR_RESOLUTION_REMOTE_APPLIED : CR_RESOLUTION_LOCAL_KEPT;
	return d;
}
