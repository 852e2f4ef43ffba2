/*-------------------------------------------------------------------------
 *
 * row_trigger.c
 *	  BEFORE row trigger of multi-region tables: stamps each local write.
 *
 * NOTES
 *	  Every local INSERT and UPDATE is marked with this region and with
 *	  the version of the table's configuration here (never older than the
 *	  row's it replaces), which decides conflicts across policy changes
 *	  (conflict.c), and with the writes it has seen (_cr_seen, seen.c):
 *	  the replaced row's, or for an insert the tombstone's of its key, and
 *	  itself.  INSERT gets a new version and base 0.  UPDATE gets a new version and,
 *	  as base, the version of the row it replaces: the base travels with the
 *	  new row and tells the other regions which version this write was made
 *	  against, so that "concurrent" can mean concurrent.  DELETE leaves the
 *	  row alone and writes a transactional logical message carrying a new
 *	  version for the delete, the deleted row's version as its base and
 *	  the configuration; the output plugin attaches them to the delete,
 *	  whose WAL record holds only the primary key.  The delete also leaves a tombstone (tombstone.c).
 *
 *	  An UPDATE that changes the primary key is, for the other regions, a
 *	  delete of the old key and an insert of the new one at the update's
 *	  version: it leaves a tombstone for the old key.  TRUNCATE fires the
 *	  statement trigger cosmosrep.stamp_truncate(), which takes a version
 *	  for the truncate, records it as the table's horizon and writes a
 *	  transactional message that the other regions apply as "delete every
 *	  row older than this version".
 *
 *	  On a partitioned table the row trigger is cloned to every partition
 *	  and fires there; it stamps the row with the configuration of the
 *	  partitioned table at the top of the tree, and keeps tombstones under
 *	  that table's name.  An UPDATE that moves a row to another partition
 *	  fires, on the row, BEFORE UPDATE in the old partition, then BEFORE
 *	  DELETE there and BEFORE INSERT in the new one (PostgreSQL deletes and
 *	  inserts it).  The other regions see a delete and an insert; they get
 *	  the update's version, base and configuration (pending_move), so the
 *	  move travels as exactly what an update that changes the primary key
 *	  is (the partition key is part of the primary key), and is decided the
 *	  same way.
 *
 *	  The trigger fires for local writes only.  Apply workers and the
 *	  initial copy run with session_replication_role = replica, so rows
 *	  arriving from other regions keep the version they were written with.
 *
 * IDENTIFICATION
 *	  src/row_trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "storage/proc.h"
#include "fmgr.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "catalog.h"
#include "consistency.h"
#include "ddl_fence.h"
#include "hlc.h"
#include "names.h"
#include "protocol.h"
#include "row_trigger.h"
#include "seen.h"
#include "signing.h"
#include "staleness.h"
#include "tombstone.h"

PG_FUNCTION_INFO_V1(cosmosrep_stamp_row);
PG_FUNCTION_INFO_V1(cosmosrep_stamp_truncate);
PG_FUNCTION_INFO_V1(cosmosrep_check_insert);

/*
 * What the trigger needs of a multi-region table, cached per backend: the
 * positions of cosmosrep's columns and the table's configuration version.
 * Dropped by a relcache invalidation of the table (its columns) or of
 * cosmosrep.replicated_table (its configuration).
 */
typedef struct StampInfo
{
	Oid			relid;			/* hash key */
	Oid			root;			/* the multi-region table: relid, or the
								 * partitioned table at the top of its tree */
	AttrNumber	version_att;
	AttrNumber	base_att;
	AttrNumber	region_att;
	AttrNumber	config_att;
	AttrNumber	seen_att;
	int64		config_version;
	uint64		no_tombstones_at;	/* 1 + cr_tombstones_recorded() when the
									 * table had none, or 0 */
} StampInfo;

static HTAB *stamp_infos = NULL;
static Oid	replicated_table_relid = InvalidOid;

/*
 * The row an UPDATE of this backend last stamped with a new primary key,
 * which PostgreSQL may go on to move to another partition: the delete
 * and insert of the move then carry the update's stamps.  Matched by the
 * local transaction, the partition and the row's position, and, for the
 * insert, the update's version, which no other row carries.
 */
typedef struct PendingMove
{
	LocalTransactionId lxid;	/* InvalidLocalTransactionId: none */
	Oid			relid;			/* the partition the row is in */
	Oid			root;
	ItemPointerData tid;		/* the old row's position */
	bool		deleted;		/* its delete has fired */
	int64		version;
	int64		base;
	int64		config;
	bytea	   *seen;			/* in TopTransactionContext */
} PendingMove;

static PendingMove pending_move = {InvalidLocalTransactionId};

/* this backend's local transaction id; PostgreSQL 17 moved it */
#if PG_VERSION_NUM >= 170000
#define CR_LOCAL_XID	(MyProc->vxid.lxid)
#else
#define CR_LOCAL_XID	(MyProc->lxid)
#endif

static StampInfo stamp_info(Relation rel, const char *function);
static void stamp_info_invalidate(Datum arg, Oid relid);
static void check_region_writes(Relation rel);
static bool primary_key_changed(Relation rel, HeapTuple oldtup, HeapTuple newtup);

/*
 * Before a local write to rel: refuse it while the region is prepared for
 * an upgrade (upgrade.c), and where multi-region writes are off and this
 * region is not the write region; under bounded staleness,
 * wait while another region is too far behind (staleness.c).
 */
static void
check_region_writes(Relation rel)
{
	cr_staleness_before_write(cr_consistency_bounded(), cr_session_wait_timeout_ms);
	if (cr_local_region_upgrading())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("region \"%s\" does not accept writes to multi-region table \"%s\"",
						cr_get_region_by_id(cr_local_region_id(false))->name,
						RelationGetRelationName(rel)),
				 errdetail("The region is prepared for an upgrade."),
				 errhint("Write in another region until cosmosrep.finish_upgrade() has run in this one.")));
	if (!cr_local_region_accepts_writes())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("region \"%s\" does not accept writes to multi-region table \"%s\"",
						cr_get_region_by_id(cr_local_region_id(false))->name,
						RelationGetRelationName(rel)),
				 errdetail("Multi-region writes are switched off."),
				 errhint("Write in the write region (cosmosrep.regions shows which accepts writes), or call cosmosrep.set_multiple_write_regions(true).")));
}

/*
 * What the trigger function (named for errors) needs of rel, from the
 * cache or read now.  A copy: the cache may lose the entry at any
 * invalidation the trigger processes.
 *
 * Only multi-region tables have an entry.  Any user may attach
 * cosmosrep's trigger functions to a table of their own (PostgreSQL
 * checks EXECUTE when a trigger is created, not when it fires): on any
 * other table they refuse to run, before they take a version, write a
 * tombstone or send a message.  The check costs nothing on the write
 * path: it is made when the entry is built.
 */
static StampInfo
stamp_info(Relation rel, const char *function)
{
	Oid			relid = RelationGetRelid(rel);
	StampInfo  *entry;
	StampInfo	info;
	CrColumns	columns;

	if (stamp_infos == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(StampInfo);
		stamp_infos = hash_create("cosmosrep stamp info", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(stamp_info_invalidate, (Datum) 0);
	}
	if (!OidIsValid(replicated_table_relid))
		replicated_table_relid = get_relname_relid("replicated_table", cr_schema_oid());
	entry = hash_search(stamp_infos, &relid, HASH_FIND, NULL);
	if (entry != NULL)
		return *entry;

	info.relid = relid;
	info.root = cr_partition_root(relid);
	info.config_version = cr_table_config_version(info.root);
	if (info.config_version < 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s fired on table \"%s\", which is not multi-region",
						function, RelationGetRelationName(rel)),
				 errdetail("cosmosrep's trigger functions run only on the tables that cosmosrep.enable_table made multi-region."),
				 errhint("Drop the trigger, or call cosmosrep.enable_table for the table.")));
	if (!cr_find_columns(RelationGetDescr(rel), &columns))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" lacks cosmosrep's columns", RelationGetRelationName(rel)),
				 errhint("Call cosmosrep.enable_table to make the table multi-region.")));
	info.version_att = columns.version;
	info.base_att = columns.base;
	info.region_att = columns.region;
	info.config_att = columns.config;
	info.seen_att = columns.seen;
	info.no_tombstones_at = 0;
	*(StampInfo *) hash_search(stamp_infos, &relid, HASH_ENTER, NULL) = info;
	return info;
}

static void
stamp_info_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	StampInfo  *entry;

	if (OidIsValid(relid) && relid != replicated_table_relid)
	{
		(void) hash_search(stamp_infos, &relid, HASH_REMOVE, NULL);
		return;
	}
	hash_seq_init(&status, stamp_infos);
	while ((entry = hash_seq_search(&status)) != NULL)
		(void) hash_search(stamp_infos, &entry->relid, HASH_REMOVE, NULL);
	replicated_table_relid = InvalidOid;
}

/* whether an update changes a column of rel's primary key */
static bool
primary_key_changed(Relation rel, HeapTuple oldtup, HeapTuple newtup)
{
	Bitmapset  *pkattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	TupleDesc	desc = RelationGetDescr(rel);
	int			col = -1;
	bool		changed = false;

	while (!changed && (col = bms_next_member(pkattrs, col)) >= 0)
	{
		AttrNumber	attnum = col + FirstLowInvalidHeapAttributeNumber;
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
		bool		oldnull;
		bool		newnull;
		Datum		oldval = heap_getattr(oldtup, attnum, desc, &oldnull);
		Datum		newval = heap_getattr(newtup, attnum, desc, &newnull);

		changed = oldnull != newnull ||
			(!oldnull && !datumIsEqual(oldval, newval, att->attbyval, att->attlen));
	}
	bms_free(pkattrs);
	return changed;
}

/*
 * What the row tuple of rel (also in slot) has seen (seen.c): its
 * _cr_seen, or, for a row written before cosmosrep kept vectors, its
 * version and its base.  A row that another region wrote may have
 * replaced writes of this region that it had not seen (apply_change.c):
 * those stay unseen by the write made on it.
 */
static bytea *
row_seen(const StampInfo *info, HeapTuple tuple, TupleDesc desc, Relation rel,
		 TupleTableSlot *slot)
{
	bool		isnull = true;
	bool		base_null;
	Datum		d = (Datum) 0;
	int64		version;
	int64		base;
	bytea	   *seen;

	if (info->seen_att > 0)
		d = heap_getattr(tuple, info->seen_att, desc, &isnull);
	version = DatumGetInt64(heap_getattr(tuple, info->version_att, desc, &base_null));
	if (base_null)
		version = 0;
	base = DatumGetInt64(heap_getattr(tuple, info->base_att, desc, &base_null));
	seen = isnull ? cr_seen_or_base(NULL, version, base_null ? 0 : base) : DatumGetByteaPP(d);
	d = heap_getattr(tuple, info->region_att, desc, &isnull);
	if (!isnull && DatumGetInt16(d) != cr_local_region_id(false))
		seen = cr_seen_with_lost(seen, cr_lost_take(info->root,
													cr_tombstone_key(rel, slot)));
	return seen;
}

/*
 * What an insert of the row in slot has seen: the delete of its key here,
 * if there was one, and what that delete had seen (NULL: nothing).  The
 * tombstone table is read only when a tombstone was recorded since this
 * backend last found none of the table's: an application that inserts
 * without deleting pays no lookup.
 */
static bytea *
insert_seen(Relation rel, StampInfo *info, TupleTableSlot *slot)
{
	Oid			relid = RelationGetRelid(rel);
	uint64		recorded = cr_tombstones_recorded();
	StampInfo  *entry;

	if (info->no_tombstones_at == recorded + 1)
		return NULL;
	if (!cr_tombstone_any(info->root))
	{
		entry = hash_search(stamp_infos, &relid, HASH_FIND, NULL);
		if (entry != NULL)
			entry->no_tombstones_at = recorded + 1;
		return NULL;
	}
	return cr_tombstone_lookup(info->root, cr_tombstone_key(rel, slot)).seen;
}

/*
 * Send a delete's version, base, configuration and what it has seen, in
 * the transactional message that the output plugin puts in the delete's
 * key tuple: for a local delete (below) and for an arbiter's resolution
 * that deletes (apply_change.c).
 */
void
cr_log_delete_base(const CrDeleteBase *payload, const bytea *seen)
{
	StringInfoData message;

	initStringInfo(&message);
	appendBinaryStringInfo(&message, (const char *) payload, sizeof(CrDeleteBase));
	appendBinaryStringInfo(&message, VARDATA_ANY(seen), VARSIZE_ANY_EXHDR(seen));
	cr_log_message(CR_DELETE_BASE_PREFIX, message.data, message.len, true);
	pfree(message.data);
}

/*
 * A local delete: a new version for it, sent with the deleted row's
 * version, the configuration and what the delete has seen (the row's
 * writes and itself); and the key's tombstone.
 */
static void
stamp_delete(Relation rel, const StampInfo *info, TriggerData *trigdata, int64 config)
{
	TupleDesc	desc = RelationGetDescr(rel);
	CrDeleteBase payload;
	bytea	   *seen;
	bool		isnull;
	bool		moving = pending_move.lxid == CR_LOCAL_XID &&
		pending_move.relid == info->relid &&
		ItemPointerEquals(&pending_move.tid, &trigdata->tg_trigtuple->t_self);

	payload.relid = RelationGetRelid(rel);
	payload.base_version =
		DatumGetInt64(heap_getattr(trigdata->tg_trigtuple, info->version_att,
								   desc, &isnull));
	payload.config_version = config;
	if (moving)
	{
		/* the update recorded the old key's tombstone already */
		payload.version = pending_move.version;
		payload.base_version = pending_move.base;
		payload.config_version = pending_move.config;
		seen = pending_move.seen;
		pending_move.deleted = true;
	}
	else
	{
		payload.version = cr_hlc_next_version(cr_local_region_id(false));
		seen = cr_seen_add(row_seen(info, trigdata->tg_trigtuple, desc, rel,
									trigdata->tg_trigslot),
						   payload.version);
	}
	cr_log_delete_base(&payload, seen);
	if (!moving)
		cr_tombstone_record(info->root, cr_tombstone_key(rel, trigdata->tg_trigslot),
							payload.version, payload.base_version, config, seen);
}

Datum
cosmosrep_stamp_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	StampInfo	info;
	int			region;
	int64		config;
	int64		version;
	bytea	   *seen = NULL;
	int			cols[5];
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	bool		isnull;
	int64		base = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cosmosrep.stamp_row() must be called as a BEFORE row trigger")));

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	info = stamp_info(rel, "cosmosrep.stamp_row()");
	check_region_writes(rel);
	cr_fence_check_write(info.root);

	/* configurations only grow along the writes of a row */
	config = info.config_version;
	if (!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		Datum		old = heap_getattr(trigdata->tg_trigtuple, info.config_att, desc, &isnull);

		if (!isnull)
			config = Max(config, DatumGetInt64(old));
	}

	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		if (XLogLogicalInfoActive())
			stamp_delete(rel, &info, trigdata, config);
		return PointerGetDatum(trigdata->tg_trigtuple);
	}

	/* the insert of a row that an update moves keeps the update's stamps */
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) && pending_move.deleted &&
		pending_move.lxid == CR_LOCAL_XID && pending_move.root == info.root)
	{
		Datum		version = heap_getattr(trigdata->tg_trigtuple, info.version_att,
										   desc, &isnull);

		if (!isnull && DatumGetInt64(version) == pending_move.version)
		{
			pending_move.lxid = InvalidLocalTransactionId;
			return PointerGetDatum(trigdata->tg_trigtuple);
		}
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		Datum		old = heap_getattr(trigdata->tg_trigtuple, info.version_att,
									   desc, &isnull);

		if (!isnull)
		{
			base = DatumGetInt64(old);
			/* a local update always supersedes the row it replaces */
			cr_hlc_observe(base);
		}
		if (info.seen_att > 0)
			seen = row_seen(&info, trigdata->tg_trigtuple, desc, rel, trigdata->tg_trigslot);
	}
	else
	{
		/*
		 * An insert has seen the delete of its key here, if there was one,
		 * and what that delete had seen: a key deleted and inserted again
		 * is one history.
		 */
		if (info.seen_att > 0)
			seen = insert_seen(rel, &info, trigdata->tg_trigslot);
	}

	region = cr_local_region_id(false);
	version = cr_hlc_next_version(region);
	seen = cr_seen_add(seen, version);

	/*
	 * A new key: the old one is deleted at this version.  If the row moves
	 * to another partition, the delete and insert that follow carry this
	 * update's stamps.
	 */
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		primary_key_changed(rel, trigdata->tg_trigtuple, trigdata->tg_newtuple))
	{
		cr_tombstone_record(info.root,
							cr_tombstone_key(rel, trigdata->tg_trigslot),
							version, base, config, seen);
		if (info.root != info.relid)
		{
			MemoryContext oldctx = MemoryContextSwitchTo(TopTransactionContext);

			pending_move.lxid = CR_LOCAL_XID;
			pending_move.relid = info.relid;
			pending_move.root = info.root;
			pending_move.tid = trigdata->tg_trigtuple->t_self;
			pending_move.deleted = false;
			pending_move.version = version;
			pending_move.base = base;
			pending_move.config = config;
			pending_move.seen = (bytea *) PG_DETOAST_DATUM_COPY(PointerGetDatum(seen));
			MemoryContextSwitchTo(oldctx);
		}
	}
	cols[0] = info.version_att;
	values[0] = Int64GetDatum(version);
	cols[1] = info.base_att;
	values[1] = Int64GetDatum(base);
	cols[2] = info.region_att;
	values[2] = Int16GetDatum((int16) region);
	cols[3] = info.config_att;
	values[3] = Int64GetDatum(config);
	/* a table without _cr_seen (enabled under 0.1, not yet updated) */
	cols[4] = info.seen_att;
	values[4] = PointerGetDatum(seen);

	return PointerGetDatum(heap_modify_tuple_by_cols(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
													 trigdata->tg_newtuple :
													 trigdata->tg_trigtuple,
													 desc, info.seen_att > 0 ? 5 : 4,
													 cols, values, nulls));
}

/*
 * AFTER INSERT row trigger of multi-region tables: refuse an insert that a
 * delete of the same key overtook.  An insert takes its version in the
 * BEFORE trigger, before its unique check; a delete of the key (local, or
 * applied from another region) can take a higher version and commit
 * while the insert waits on it or before it gets there.  The insert would
 * then commit here with a version lower than the delete's, and every
 * other region, which orders the two by version, would drop it.  Such an
 * insert fails as a serialization failure, which the application retries
 * (its new attempt has a version above the delete's); every region then
 * ends alike.
 */
Datum
cosmosrep_check_insert(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	StampInfo	info;
	bool		isnull;
	int64		version;
	CrTombstone tombstone;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cosmosrep.check_insert() must be called as an AFTER INSERT row trigger")));

	rel = trigdata->tg_relation;
	info = stamp_info(rel, "cosmosrep.check_insert()");
	version = DatumGetInt64(heap_getattr(trigdata->tg_trigtuple, info.version_att,
										 RelationGetDescr(rel), &isnull));
	/* no tombstone newer than the insert was recorded: nothing to look up */
	if (isnull || cr_newest_tombstone() <= version)
		return PointerGetDatum(NULL);
	tombstone = cr_tombstone_lookup(info.root,
									cr_tombstone_key(rel, trigdata->tg_trigslot));
	if (tombstone.version > version)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to concurrent delete of the same key in table \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail("The insert took its version before a delete of the same key that committed first; the other regions would order the insert before that delete."),
				 errhint("Retry the transaction.")));
	return PointerGetDatum(NULL);
}

/*
 * BEFORE TRUNCATE statement trigger of multi-region tables: the truncate
 * gets a version, becomes the table's horizon here, and travels to the
 * other regions as a message (schema, table and version as NUL-terminated
 * strings) that they apply as a delete of every older row.
 */
Datum
cosmosrep_stamp_truncate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	int64		version;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cosmosrep.stamp_truncate() must be called as a BEFORE TRUNCATE trigger")));

	rel = trigdata->tg_relation;
	cr_fence_check_write(stamp_info(rel, "cosmosrep.stamp_truncate()").root);
	check_region_writes(rel);
	version = cr_hlc_next_version(cr_local_region_id(false));
	cr_tombstone_truncate(RelationGetRelid(rel), version);
	if (XLogLogicalInfoActive())
	{
		const char *fields[3];

		fields[0] = get_namespace_name(RelationGetNamespace(rel));
		fields[1] = RelationGetRelationName(rel);
		fields[2] = psprintf(INT64_FORMAT, version);
		cr_log_fields_message(CR_TRUNCATE_MESSAGE_PREFIX, fields, lengthof(fields));
	}
	return PointerGetDatum(NULL);
}
