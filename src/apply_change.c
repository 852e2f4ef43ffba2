/*-------------------------------------------------------------------------
 *
 * cr_apply_change.c
 *	  What each kind of remote change does to the local table.
 *
 * NOTES
 *	  The handlers of the apply worker's changes: insert, update, delete,
 *	  and the MESSAGEs of the stream (truncate, the rows of a table the
 *	  peer enabled, failover, write regions, resolved conflicts, DDL,
 *	  stable versions), found by prefix in message_kinds.
 *
 *	  Rows are applied at executor level: primary key index lookup
 *	  (RelationFindReplTupleByIndex) and ExecSimpleRelationInsert/Update/
 *	  Delete, with session_replication_role = replica so that the row
 *	  trigger keeps the incoming versions.  Each change runs as the table's
 *	  owner with SECURITY_RESTRICTED_OPERATION (change_begin).  Whether a
 *	  change wins, and whether it conflicts, is decided in conflict.c,
 *	  against the local row or the newest tombstone of its key (decide,
 *	  settle_collisions); the handlers here only find what the region
 *	  holds and carry out the decision.  An update that lacks values the
 *	  local row cannot supply reads the row from the peer (fetch_peer_row).
 *
 *	  A remote transaction whose changes failed cosmosrep.apply_attempts
 *	  times is applied change by change (cr_apply_change_carefully), each
 *	  in a subtransaction; a change that fails again is recorded in the
 *	  conflicts feed (record_rejected_change) and the stream goes on.
 *
 *	  Each change runs in a transaction the worker opened (apply_worker.c),
 *	  with the table's executor state from apply_relation.c; per-change
 *	  memory is in CrApplyMessageContext.
 *
 * IDENTIFICATION
 *	  src/cr_apply_change.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "libpq/pqformat.h"
#include "replication/logicalproto.h"
#include "replication/origin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "apply_internal.h"
#include "catalog.h"
#include "conflict.h"
#include "feed.h"
#include "hlc.h"
#include "names.h"
#include "protocol.h"
#include "remote.h"
#include "row_trigger.h"
#include "run_as.h"
#include "seen.h"
#include "tombstone.h"

/* the identity a change switched away from */
static CrUserContext change_user;

static bool settle_collisions(ApplyExec *ex, ApplyRel *ar, TupleTableSlot *row,
							  const CrIncoming *incoming, TupleTableSlot *self);
static ErrorData *run_in_subtransaction(ApplyExec *ex, void (*fn) (void *arg), void *arg);
static void record_rejected_change(LogicalRepMsgType action, StringInfo s,
								   const char *error);

/* ----------------------------------------------------------------
 * Executor state per change
 * ----------------------------------------------------------------
 */

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

	cr_apply_check_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	ex = cr_exec_open(ar);
	(void) cr_apply_rel_policy(ar, ex->rel);
	cr_switch_to_owner(ex->owner, &change_user);
	AfterTriggerBeginQuery();
	return ex;
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
	cr_changes_in_transaction++;
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
		if (r == CR_REMOTE_ABSENT)
			cr_absent_column_value(ar, desc, i, &slot->tts_values[i], &slot->tts_isnull[i]);
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

/* what a row (or a delete's key tuple) had seen, or NULL */
static bytea *
slot_seen(ApplyRel *ar, TupleTableSlot *slot)
{
	bool		isnull;
	Datum		d;

	if (ar->seen_att == 0)
		return NULL;
	d = slot_getattr(slot, ar->seen_att, &isnull);
	return isnull ? NULL : DatumGetByteaPP(d);
}

/* the base, configuration and history of a remote row or delete */
static void
incoming_stamps(ApplyRel *ar, TupleTableSlot *row, CrIncoming *incoming)
{
	bool		isnull;

	incoming->base = slot_version(row, ar->base_att, &isnull);
	incoming->config = slot_version(row, ar->config_att, &isnull);
	incoming->seen = slot_seen(ar, row);
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
		if (RelationFindReplTupleByIndex(ex->rri->ri_RelationDesc, ex->pkindex,
										 LockTupleExclusive, key, row))
			return true;
	}
	return false;
}

/* what a local row of ar's table holds: its version, base, configuration */
static CrLocalState
row_state(ApplyRel *ar, TupleTableSlot *row)
{
	CrLocalState state = {true, 0, 0, 0, NULL};
	bool		isnull;

	state.version = slot_version(row, ar->version_att, &isnull);
	state.base = slot_version(row, ar->base_att, &isnull);
	state.config = slot_version(row, ar->config_att, &isnull);
	state.seen = slot_seen(ar, row);
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
	CrLocalState local = {false, 0, 0, 0, NULL};

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
		local.seen = tombstone.seen;
	}
	return local;
}


/*
 * Count a conflict and record it, the one rule for both kinds (a key's
 * conflict and a unique collision): every conflict while
 * cosmosrep.record_resolved_conflicts is on, and always the feed's
 * entries (pending, error).  A tentative decision (a conflict under a
 * resolver, outside the arbiter) is kept too, apart from the conflicts
 * (cosmosrep.tentative_conflicts), until an arbiter's resolution marks it:
 * a region that becomes the arbiter resolves those no arbiter resolved
 * (feed.c).
 */
static void
record_decision(ApplyExec *ex, const CrPolicy *policy, const CrIncoming *incoming,
				const CrLocalState *local, const CrDecision *d,
				TupleTableSlot *local_row, TupleTableSlot *remote_row,
				TupleTableSlot *merged)
{
	cr_conflicts_in_transaction++;
	if (cr_record_resolved_conflicts || d->resolution == CR_RESOLUTION_PENDING ||
		d->resolution == CR_RESOLUTION_ERROR || d->resolution == CR_RESOLUTION_TENTATIVE)
		cr_record_conflict(ex->rel,
						   d->by_configuration ? CR_POLICY_NEWER_CONFIGURATION : policy->name,
						   incoming, local, d, local_row, remote_row, merged);
}
/*
 * Write what the arbiter's resolver decided (conflict.c): a new write of
 * this region, replacing local_row (or the tombstone of the key), which
 * the other regions must receive like any local write.  Its WAL records
 * therefore carry no replication origin (the output plugin sends only
 * changes without one), and the worker commits the transaction without
 * one too (apply_worker.c), since decoding skips a transaction whose
 * commit names an origin.  A resolution that deletes the key sends its
 * version as the row trigger does for a local delete.  A resolved message
 * marks the tentative entries of the other regions (feed.c).
 */
static void
write_resolution(ApplyExec *ex, ApplyRel *ar, const CrIncoming *incoming,
				 const CrLocalState *local, const CrDecision *d,
				 TupleTableSlot *local_row)
{
	RepOriginId peer_origin = replorigin_session_origin;

	cr_local_writes_in_transaction = true;
	replorigin_session_origin = InvalidRepOriginId;
	PG_TRY();
	{
		if (d->write_merged &&
			settle_collisions(ex, ar, ex->mergedslot, incoming,
							  local->row_found ? local_row : NULL))
		{
			if (local->row_found)
				ExecSimpleRelationUpdate(ex->rri, ex->estate, &ex->epqstate,
										 local_row, ex->mergedslot);
			else
				ExecSimpleRelationInsert(ex->rri, ex->estate, ex->mergedslot);
		}
		else if (d->delete_merged)
		{
			CrDeleteBase payload;

			payload.relid = RelationGetRelid(ex->rel);
			payload.version = d->merged_version;
			payload.base_version = d->merged_base;
			payload.config_version = d->merged_config;
			if (local->row_found)
			{
				cr_log_delete_base(&payload, d->merged_seen);
				ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate, local_row);
			}
			cr_tombstone_record(payload.relid, d->key, d->merged_version,
								d->merged_base, d->merged_config, d->merged_seen);
		}
		/* the regions that decided the conflict by version mark their entries */
		cr_feed_resolve_key(ex->rel, d->key, Max(incoming->version, local->version),
							cr_resolution_names[CR_RESOLUTION_MERGED], (Datum) 0,
							cr_local_region_name());
	}
	PG_FINALLY();
	{
		replorigin_session_origin = peer_origin;
	}
	PG_END_TRY();
}

/*
 * A remote change that wins a conflict replaces what this region held.
 * This region's writes that the replaced row held and the change had not
 * seen (seen.c) must not be claimed by the region's next write of the
 * key: they are remembered beside the row (cr_lost_record), or, for a
 * delete, in its tombstone (d->seen).
 */
static void
remember_lost_writes(ApplyExec *ex, const CrIncoming *incoming,
					 const CrLocalState *local, TupleTableSlot *key,
					 TupleTableSlot *remote_row, CrDecision *d)
{
	bytea	   *in = cr_seen_or_base(incoming->seen, incoming->version, incoming->base);
	bytea	   *lost = cr_seen_lost(in, cr_seen_or_base(local->seen, local->version,
														local->base),
									cr_local_region_id(false));

	if (lost == NULL)
		return;
	if (remote_row == NULL)
		d->seen = cr_seen_with_lost(in, lost);
	else
		cr_lost_record(RelationGetRelid(ex->rel), cr_tombstone_key(ex->rel, key), lost);
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
	const CrPolicy *policy = cr_policy_at(ar, ex->rel, incoming->config);
	CrDecision	d = cr_decide(policy, ex->rel, incoming, local, key,
							  local->row_found ? local_row : NULL, remote_row,
							  ex->mergedslot);

	if (d.kind == CR_CONFLICT_NONE)
		return d;
	if (d.apply_remote)
		remember_lost_writes(ex, incoming, local, key, remote_row, &d);
	record_decision(ex, policy, incoming, local, &d,
					local->row_found ? local_row : NULL, remote_row,
					d.write_merged ? ex->mergedslot : NULL);
	if (d.write_merged || d.delete_merged)
		write_resolution(ex, ar, incoming, local, &d, local_row);
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
	CrLocalState local;
	CrDecision	d;

	cr_exec_route(ex, row);
	local = local_state(ex, ar, row, ex->otherslot, false);
	d = decide(ex, ar, incoming, &local, row, ex->otherslot, row);

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
	const CrPolicy *policy = cr_policy_at(ar, ex->rel, incoming->config);
	bool	   *found = ex->collided;
	bool		wins = true;

	for (int i = 0; i < ex->nunique; i++)
	{
		TupleTableSlot *other = ex->colliders[i];

		/* keeping the values of the row it replaces, it cannot collide */
		found[i] = (self == NULL || !cr_unique_values_kept(ex, i, row, self)) &&
			RelationFindReplTupleByIndex(ex->rri->ri_RelationDesc, ex->unique_indexes[i],
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
			record_decision(ex, policy, incoming, &state, &d, other, row, NULL);
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

	if (CrPeerSqlConn == NULL)
		CrPeerSqlConn = cr_apply_connect(false, "cosmosrep apply");

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
	/* a partitioned table's rows are in its partitions: no ONLY */
	appendStringInfo(&sql, " FROM %s%s WHERE true",
					 ex->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
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

	res = cr_remote_exec(CrPeerSqlConn, sql.data, PGRES_TUPLES_OK, CrPeerName);
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
 * Row changes
 * ----------------------------------------------------------------
 */

/* an insert: the remote row, if it wins over what this region holds */
static void
handle_insert(StringInfo s)
{
	LogicalRepTupleData newtup;
	ApplyRel   *ar = cr_apply_rel_lookup(logicalrep_read_insert(s, &newtup));
	ApplyExec  *ex = change_begin(ar);
	CrIncoming	incoming;

	slot_fill(ar, &newtup, ex->remoteslot, NULL);
	incoming.kind = CR_CHANGE_INSERT;
	incoming.version = observed_version(ex->remoteslot, ar);
	incoming_stamps(ar, ex->remoteslot, &incoming);
	/* a plain new row may join the table's batch (apply_batch.c) */
	if (!cr_batch_add(ex, ar, ex->remoteslot, &incoming))
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

	ar = cr_apply_rel_lookup(logicalrep_read_update(s, &has_oldtup, &oldtup, &newtup));
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

	cr_exec_route(ex, key);
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
			cr_remote_may_win(cr_policy_at(ar, ex->rel, incoming.config), &incoming, &local))
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
							incoming.base, incoming.config,
							d.seen ? d.seen : incoming.seen);
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
	ApplyRel   *ar = cr_apply_rel_lookup(logicalrep_read_delete(s, &oldtup));
	ApplyExec  *ex = change_begin(ar);
	CrLocalState local = {false, 0, 0, 0, NULL};
	CrIncoming	incoming;
	bool		unversioned;
	bool		applied;

	slot_fill(ar, &oldtup, ex->remoteslot, NULL);
	incoming.kind = CR_CHANGE_DELETE;
	incoming.version = slot_version(ex->remoteslot, ar->version_att, &unversioned);
	incoming_stamps(ar, ex->remoteslot, &incoming);
	if (!unversioned)
		cr_hlc_observe(incoming.version);

	cr_exec_route(ex, ex->remoteslot);
	if (find_local_row(ex, ex->remoteslot, ex->localslot, true))
		local = row_state(ar, ex->localslot);
	if (unversioned)
		applied = local.row_found;
	else
	{
		CrDecision	d = decide(ex, ar, &incoming, &local, ex->remoteslot,
							   ex->localslot, NULL);

		applied = d.apply_remote && local.row_found;
		if (d.seen)
			incoming.seen = d.seen;
	}
	if (applied)
		ExecSimpleRelationDelete(ex->rri, ex->estate, &ex->epqstate, ex->localslot);
	if (!unversioned)
		cr_tombstone_record(RelationGetRelid(ex->rel),
							cr_tombstone_key(ex->rel, ex->remoteslot),
							incoming.version, incoming.base, incoming.config,
							incoming.seen);

	change_end(ex);
}

/*
 * An insert that apply_batch.c took into a batch and then found may not go
 * in as it is (a row here holds its key or a unique value, or its key has
 * a tombstone): applied the usual way, as if it had come alone, by
 * the same decision.  It was counted as a change when it was read.
 */
void
cr_apply_insert_again(ApplyRel *ar, TupleTableSlot *row, const CrIncoming *incoming)
{
	ApplyExec  *ex = change_begin(ar);
	CrIncoming	again = *incoming;

	/* what it had seen, from the row (the batch kept no pointer into it) */
	again.seen = slot_seen(ar, row);
	apply_row(ex, ar, row, &again);
	change_end(ex);
	cr_changes_in_transaction--;
}

/* ----------------------------------------------------------------
 * Change by change, after failed attempts
 * ----------------------------------------------------------------
 */

/* a row change */
void
cr_apply_change(LogicalRepMsgType action, StringInfo s)
{
	if (action == LOGICAL_REP_MSG_INSERT)
		handle_insert(s);
	else if (action == LOGICAL_REP_MSG_UPDATE)
		handle_update(s);
	else
		handle_delete(s);
}

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

	cr_apply_change(change->action, change->s);
}

static void
run_slot_fill(void *arg)
{
	RowArgs    *r = arg;

	slot_fill(r->ar, r->tup, r->row, NULL);
}

static void
run_route(void *arg)
{
	RowArgs    *r = arg;

	cr_exec_route(r->ar->exec, r->row);
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

/*
 * A row change of the transaction that failed cosmosrep.apply_attempts
 * times, in a subtransaction: if it fails again, it is undone (with the conflicts it
 * recorded) and recorded in the feed instead.  The table's executor state
 * is opened first, outside the subtransaction, which must not own it.
 */
void
cr_apply_change_carefully(LogicalRepMsgType action, StringInfo s)
{
	int			cursor = s->cursor;
	ApplyRel   *ar = cr_apply_rel_lookup(pq_getmsgint(s, 4));
	ApplyExec  *ex;
	ErrorData  *edata;
	ChangeArgs	change = {action, s};

	s->cursor = cursor;
	cr_apply_check_in_transaction();

	/*
	 * What earlier changes recorded is written first: the change may write
	 * the conflicts (cr_feed_rows), and undoing it must not undo those.
	 */
	cr_flush_conflicts();
	PushActiveSnapshot(GetTransactionSnapshot());
	ex = cr_exec_open(ar);
	(void) cr_apply_rel_policy(ar, ex->rel);
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
	CrLocalState local = {false, 0, 0, 0, NULL};
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
	ar = cr_apply_rel_lookup(relid);
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
		/*
		 * A row no partition here accepts has no local row (and the
		 * subtransaction's undoing cleared the row: it is read again).
		 */
		if (run_in_subtransaction(ex, run_route, &rowargs) != NULL)
			(void) run_in_subtransaction(ex, run_slot_fill, &rowargs);
		else if (find_local_row(ex, row, ex->localslot, false))
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
					RelationGetRelationName(ex->rel), CrPeerName),
			 errdetail("%s", error)));
}
