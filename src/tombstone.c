/*-------------------------------------------------------------------------
 *
 * tombstone.c
 *	  Tombstones: the versions of deleted rows and of truncates.
 *
 * NOTES
 *	  A delete leaves (table, primary key, delete version) in
 *	  cosmosrep.tombstone, in the region that made it (row trigger) and in
 *	  every region that applies it.  A change that arrives for a key that
 *	  is missing here is then ordered against the delete like any two
 *	  writes: it recreates the row only if its version is higher than the
 *	  tombstone's.  Without the tombstone a late insert or update would
 *	  resurrect a row that a newer delete removed, and regions would
 *	  diverge.
 *
 *	  A TRUNCATE at version V leaves the table's horizon, a tombstone with
 *	  the empty key: every row older than V is gone, and so is every row
 *	  that arrives later with an older version.  The tombstones of single
 *	  keys older than the horizon are dropped with it.
 *
 *	  The key is the binary send form of the primary key columns, in the
 *	  primary key's column order, each prefixed by its length.  Unlike the
 *	  text output functions it does not depend on session settings
 *	  (TimeZone, DateStyle, extra_float_digits), so a key deleted under
 *	  any settings matches the same key arriving from another region, and
 *	  a joining region can copy tombstones as they are.
 *
 *	  Lookups read the primary key index of cosmosrep.tombstone directly
 *	  (one index probe, no SQL); writes use statements prepared once per
 *	  backend (SPI_keepplan).  Both act as the bootstrap superuser, which
 *	  owns the table: callers act for a user who may delete or replicate
 *	  the row.
 *
 * IDENTIFICATION
 *	  src/tombstone.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "port/atomics.h"
#include "storage/shmem.h"

#include "catalog.h"
#include "names.h"
#include "run_as.h"
#include "tombstone.h"

PG_FUNCTION_INFO_V1(cosmosrep_tombstone_key_text);

/*
 * How to build the key of a table's rows: its primary key columns and
 * their send functions.  Cached per backend, dropped by relcache
 * invalidation of the table.
 */
typedef struct KeyInfo
{
	Oid			relid;			/* hash key */
	bool		valid;
	int			natts;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	FmgrInfo	send[INDEX_MAX_KEYS];
} KeyInfo;

static HTAB *KeyInfoCache = NULL;

static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr record_01_plan = NULL;
static SPIPlanPtr truncate_plan = NULL;
static SPIPlanPtr forget_plan = NULL;
static SPIPlanPtr lost_record_plan = NULL;
static SPIPlanPtr lost_take_plan = NULL;
static SPIPlanPtr lost_forget_plan = NULL;

/*
 * In shared memory: how many tombstones this server recorded since it
 * started, and the newest version among them.  They let the row trigger
 * skip its lookups of the tombstone table when no delete happened since
 * it last looked (row_trigger.c).
 */
typedef struct TombstoneShared
{
	pg_atomic_uint64 recorded;
	pg_atomic_uint64 newest;
} TombstoneShared;

static TombstoneShared *tombstone_shared = NULL;

static int	primary_key_columns(Oid relid, AttrNumber **attnums);
static void tombstone_counted(int64 version);
static bytea *horizon_key(void);
static KeyInfo *key_info(Relation rel);
static void key_info_invalidate(Datum arg, Oid relid);

/*
 * The columns of relid's primary key, in its order, in *attnums
 * (palloc'd); returns how many.
 */
static int
primary_key_columns(Oid relid, AttrNumber **attnums)
{
	Relation	rel = table_open(relid, NoLock);
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	HeapTuple	tup;
	Form_pg_index index;
	int			n;

	table_close(rel, NoLock);
	if (!OidIsValid(pkoid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key", get_rel_name(relid))));
	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for index %u", pkoid);
	index = (Form_pg_index) GETSTRUCT(tup);
	n = index->indnkeyatts;
	*attnums = palloc(sizeof(AttrNumber) * n);
	for (int i = 0; i < n; i++)
		(*attnums)[i] = index->indkey.values[i];
	ReleaseSysCache(tup);
	return n;
}

/* cosmosrep.tombstone, cosmosrep.lost_write and their primary keys */
static Oid	tombstone_relid = InvalidOid;
static Oid	tombstone_index_relid = InvalidOid;
static Oid	lost_relid = InvalidOid;
static Oid	lost_index_relid = InvalidOid;
static bool tombstone_has_seen = false;	/* not under 0.1's catalog */

static void
key_info_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	KeyInfo    *info;

	if (relid == InvalidOid || relid == tombstone_relid || relid == lost_relid)
		tombstone_relid = tombstone_index_relid = lost_relid = lost_index_relid = InvalidOid;
	hash_seq_init(&status, KeyInfoCache);
	while ((info = hash_seq_search(&status)) != NULL)
	{
		if (relid == InvalidOid || info->relid == relid)
			info->valid = false;
	}
}

/* the caches of this file, and cosmosrep.tombstone's relids */
static void
tombstone_cache_init(void)
{
	if (KeyInfoCache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(KeyInfo);
		ctl.hcxt = CacheMemoryContext;
		KeyInfoCache = hash_create("cosmosrep tombstone keys", 32, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(key_info_invalidate, (Datum) 0);
	}
	if (!OidIsValid(tombstone_relid))
	{
		tombstone_relid = get_relname_relid("tombstone", cr_schema_oid());
		tombstone_index_relid = get_relname_relid("tombstone_pkey", cr_schema_oid());
		lost_relid = get_relname_relid("lost_write", cr_schema_oid());
		lost_index_relid = get_relname_relid("lost_write_pkey", cr_schema_oid());
		tombstone_has_seen = get_attnum(tombstone_relid, "seen") != InvalidAttrNumber;
	}
}

/* the key columns and send functions of rel, from the cache */
static KeyInfo *
key_info(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	KeyInfo    *info;
	bool		found;

	tombstone_cache_init();
	info = hash_search(KeyInfoCache, &relid, HASH_ENTER, &found);
	if (!found || !info->valid)
	{
		AttrNumber *attnums;

		info->valid = false;
		info->natts = primary_key_columns(relid, &attnums);
		for (int i = 0; i < info->natts; i++)
		{
			Oid			typsend;
			bool		isvarlena;

			info->attnums[i] = attnums[i];
			getTypeBinaryOutputInfo(TupleDescAttr(RelationGetDescr(rel), attnums[i] - 1)->atttypid,
									&typsend, &isvarlena);
			fmgr_info_cxt(typsend, &info->send[i], CacheMemoryContext);
		}
		pfree(attnums);
		info->valid = true;
	}
	return info;
}

/*
 * The tombstone key of the row in slot (a row of rel), in the caller's
 * memory context: for each primary key column, its length as a 4-byte
 * integer (-1 for NULL) and its binary send form.
 */
bytea *
cr_tombstone_key(Relation rel, TupleTableSlot *slot)
{
	KeyInfo    *info = key_info(rel);
	StringInfoData buf;

	pq_begintypsend(&buf);
	slot_getallattrs(slot);
	for (int i = 0; i < info->natts; i++)
	{
		int			att = info->attnums[i] - 1;
		bytea	   *value;

		if (slot->tts_isnull[att])
		{
			pq_sendint32(&buf, -1);
			continue;
		}
		value = SendFunctionCall(&info->send[i], slot->tts_values[att]);
		pq_sendint32(&buf, VARSIZE(value) - VARHDRSZ);
		pq_sendbytes(&buf, VARDATA(value), VARSIZE(value) - VARHDRSZ);
		pfree(value);
	}
	return pq_endtypsend(&buf);
}

/* whether two tombstone keys are the same key */
bool
cr_tombstone_key_equal(const bytea *a, const bytea *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/*
 * The tombstone key as text, for people: the primary key values as a row
 * literal, e.g. (42,"a b").  Behind the view cosmosrep.tombstones, which
 * any user may read: NULL for a table the caller may not read, or where
 * row-level security of the table applies to the caller (the key was a
 * row's, and no policy is checked against it).  The values are decoded as
 * the table's owner (a primary key of the owner's domain runs its CHECK
 * expressions in domain_recv), never as the reader.
 */
Datum
cosmosrep_tombstone_key_text(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	bytea	   *key = PG_GETARG_BYTEA_PP(1);
	StringInfoData in;
	StringInfoData out;
	AttrNumber *attnums;
	int			n;
	CrUserContext user;

	if (get_rel_relkind(relid) == '\0' ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		PG_RETURN_NULL();
	if (check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		PG_RETURN_NULL();
	if (VARSIZE_ANY_EXHDR(key) == 0)
		PG_RETURN_TEXT_P(cstring_to_text("(truncated)"));
	n = primary_key_columns(relid, &attnums);
	cr_switch_to_owner(cr_relation_owner(relid), &user);

	in.data = VARDATA_ANY(key);
	in.len = VARSIZE_ANY_EXHDR(key);
	in.maxlen = in.len;
	in.cursor = 0;
	initStringInfo(&out);
	appendStringInfoChar(&out, '(');
	for (int i = 0; i < n; i++)
	{
		int			len = pq_getmsgint(&in, 4);
		Oid			typid = get_atttype(relid, attnums[i]);
		Oid			typreceive;
		Oid			typioparam;
		Oid			typoutput;
		bool		isvarlena;
		StringInfoData value;
		char	   *text;

		if (i > 0)
			appendStringInfoChar(&out, ',');
		if (len < 0)
			continue;
		initStringInfo(&value);
		appendBinaryStringInfo(&value, pq_getmsgbytes(&in, len), len);
		getTypeBinaryInputInfo(typid, &typreceive, &typioparam);
		getTypeOutputInfo(typid, &typoutput, &isvarlena);
		text = OidOutputFunctionCall(typoutput,
									 OidReceiveFunctionCall(typreceive, &value,
															typioparam, -1));
		if (text[0] == '\0' || strpbrk(text, ",()\"\\ ") != NULL)
		{
			appendStringInfoChar(&out, '"');
			for (char *c = text; *c; c++)
			{
				if (*c == '"' || *c == '\\')
					appendStringInfoChar(&out, *c);
				appendStringInfoChar(&out, *c);
			}
			appendStringInfoChar(&out, '"');
		}
		else
			appendStringInfoString(&out, text);
	}
	appendStringInfoChar(&out, ')');
	cr_restore_user(&user);
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/*
 * Remember that the row with key, at version base, was deleted at version
 * under configuration config, by a delete that had seen seen (NULL: not
 * known).  Of two deletes of a key the one that wins
 * stays: the one of the newer configuration, else the newer one (the
 * order of conflict.c; deletes made one after the other come in both
 * orders alike).
 */
void
cr_tombstone_record(Oid relid, bytea *key, int64 version, int64 base, int64 config,
					bytea *seen)
{
	Oid			argtypes[6] = {OIDOID, BYTEAOID, INT8OID, INT8OID, INT8OID, BYTEAOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	tombstone_counted(version);
	tombstone_cache_init();
	values[0] = ObjectIdGetDatum(relid);
	values[1] = PointerGetDatum(key);
	values[2] = Int64GetDatum(version);
	values[3] = Int64GetDatum(base);
	values[4] = Int64GetDatum(config);
	values[5] = PointerGetDatum(seen);
	if (seen == NULL)
		nulls[5] = 'n';

	if (!tombstone_has_seen)
	{
		/* 0.1's catalog, until ALTER EXTENSION cosmosrep UPDATE */
		(void) cr_catalog_write(&record_01_plan,
								"INSERT INTO cosmosrep.tombstone AS t (relid, key, version, base, config)"
								" VALUES ($1, $2, $3, $4, $5)"
								" ON CONFLICT (relid, key) DO UPDATE"
								" SET version = excluded.version, base = excluded.base,"
								" config = excluded.config, deleted_at = pg_catalog.now()"
								" WHERE t.config OPERATOR(pg_catalog.<) excluded.config"
								" OR (t.config OPERATOR(pg_catalog.=) excluded.config"
								"     AND t.version OPERATOR(pg_catalog.<) excluded.version)",
								5, argtypes, values, nulls, SPI_OK_INSERT);
		return;
	}
	(void) cr_catalog_write(&record_plan,
							"INSERT INTO cosmosrep.tombstone AS t (relid, key, version, base, config, seen)"
							" VALUES ($1, $2, $3, $4, $5, $6)"
							" ON CONFLICT (relid, key) DO UPDATE"
							" SET version = excluded.version, base = excluded.base,"
							" config = excluded.config, seen = excluded.seen,"
							" deleted_at = pg_catalog.now()"
							" WHERE t.config OPERATOR(pg_catalog.<) excluded.config"
							" OR (t.config OPERATOR(pg_catalog.=) excluded.config"
							"     AND t.version OPERATOR(pg_catalog.<) excluded.version)",
							6, argtypes, values, nulls, SPI_OK_INSERT);
}

Size
cr_tombstone_shmem_size(void)
{
	return MAXALIGN(sizeof(TombstoneShared));
}

/* from the shmem startup hook, with AddinShmemInitLock held */
void
cr_tombstone_shmem_init(void)
{
	bool		found;

	tombstone_shared = ShmemInitStruct("cosmosrep tombstones", cr_tombstone_shmem_size(),
									   &found);
	if (!found)
	{
		pg_atomic_init_u64(&tombstone_shared->recorded, 0);
		pg_atomic_init_u64(&tombstone_shared->newest, 0);
	}
}

/* how many tombstones were recorded since the server started */
uint64
cr_tombstones_recorded(void)
{
	if (tombstone_shared == NULL)
		return PG_UINT64_MAX;
	return pg_atomic_read_u64(&tombstone_shared->recorded);
}

/* the newest version of a tombstone recorded since the server started */
int64
cr_newest_tombstone(void)
{
	if (tombstone_shared == NULL)
		return PG_INT64_MAX;
	return (int64) pg_atomic_read_u64(&tombstone_shared->newest);
}

/* count a tombstone recorded at version */
static void
tombstone_counted(int64 version)
{
	uint64		newest;

	if (tombstone_shared == NULL)
		return;
	newest = pg_atomic_read_u64(&tombstone_shared->newest);
	pg_atomic_fetch_add_u64(&tombstone_shared->recorded, 1);
	while ((uint64) version > newest &&
		   !pg_atomic_compare_exchange_u64(&tombstone_shared->newest, &newest,
										   (uint64) version))
		;
}

/* the key of a table's truncate horizon: empty */
static bytea *
horizon_key(void)
{
	bytea	   *key = (bytea *) palloc(VARHDRSZ);

	SET_VARSIZE(key, VARHDRSZ);
	return key;
}

/*
 * The newest delete of key; with key NULL, the table's truncate horizon;
 * zeros if there is none.  Reads the primary key index of
 * cosmosrep.tombstone with a fresh snapshot, so it sees what the caller's
 * transaction wrote and what others committed.
 */
CrTombstone
cr_tombstone_lookup(Oid relid, bytea *key)
{
	Snapshot	snapshot;
	Relation	rel;
	Oid			index_relid;
	CrTombstone result = {0, 0, 0, NULL};

	tombstone_cache_init();
	index_relid = tombstone_index_relid;
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(tombstone_relid, AccessShareLock);
	{
		ScanKeyData skey[2];
		SysScanDesc scan;
		HeapTuple	tup;

		ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, F_OIDEQ,
					ObjectIdGetDatum(relid));
		ScanKeyInit(&skey[1], 2, BTEqualStrategyNumber, F_BYTEAEQ,
					PointerGetDatum(key ? key : horizon_key()));
		scan = systable_beginscan(rel, index_relid, true, snapshot, 2, skey);
		if (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			bool		isnull;
			Datum		seen;
			int64		version = DatumGetInt64(heap_getattr(tup, 3, RelationGetDescr(rel),
															 &isnull));

			if (version > result.version)
			{
				result.version = version;
				result.base = DatumGetInt64(heap_getattr(tup, 5, RelationGetDescr(rel),
														 &isnull));
				result.config = DatumGetInt64(heap_getattr(tup, 6, RelationGetDescr(rel),
														   &isnull));
				seen = tombstone_has_seen ?
					heap_getattr(tup, 7, RelationGetDescr(rel), &isnull) : (Datum) 0;
				if (tombstone_has_seen && !isnull)
					result.seen = DatumGetByteaPCopy(seen);
			}
		}
		systable_endscan(scan);
	}
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snapshot);
	return result;
}

/* whether relid has any tombstone (or horizon) that this backend can see */
bool
cr_tombstone_any(Oid relid)
{
	Snapshot	snapshot;
	Relation	rel;
	ScanKeyData skey;
	SysScanDesc scan;
	bool		found;

	tombstone_cache_init();
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(tombstone_relid, AccessShareLock);
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, tombstone_index_relid, true, snapshot, 1, &skey);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * The versions of the newest deletes of the keys of the n rows in slots,
 * rows of rel, into versions (0 where a key has none), as
 * cr_tombstone_lookup would find them one by one: with one fresh
 * snapshot, taken now, and one scan of the primary key index of
 * cosmosrep.tombstone.  It first looks for any tombstone of the table (a
 * table never deleted from nor truncated has none), and only then forms
 * the keys, in the current memory context, and rescans per key.  For a
 * batch of rows the apply worker has just written (apply_batch.c).
 */
void
cr_tombstone_lookup_rows(Relation rel, TupleTableSlot **slots, int n,
						 int64 *versions)
{
	Oid			relid = RelationGetRelid(rel);
	Snapshot	snapshot;
	Relation	tombstones;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData skey[2];

	tombstone_cache_init();
	memset(versions, 0, sizeof(int64) * n);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	tombstones = table_open(tombstone_relid, AccessShareLock);
	index = index_open(tombstone_index_relid, AccessShareLock);
	slot = table_slot_create(tombstones, NULL);

	/* index column 1: relid; any tombstone of the table at all? */
	scan = index_beginscan(tombstones, index, snapshot, 1, 0);
	ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	index_rescan(scan, skey, 1, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		/* a scan's number of keys is fixed when it begins */
		index_endscan(scan);
		scan = index_beginscan(tombstones, index, snapshot, 2, 0);
		for (int i = 0; i < n; i++)
		{
			/* index columns 1 and 2: relid and key */
			ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, F_OIDEQ,
						ObjectIdGetDatum(relid));
			ScanKeyInit(&skey[1], 2, BTEqualStrategyNumber, F_BYTEAEQ,
						PointerGetDatum(cr_tombstone_key(rel, slots[i])));
			index_rescan(scan, skey, 2, NULL, 0);
			if (index_getnext_slot(scan, ForwardScanDirection, slot))
			{
				bool		isnull;
				Datum		version = slot_getattr(slot, 3, &isnull);

				if (!isnull)
					versions[i] = DatumGetInt64(version);
			}
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(tombstones, AccessShareLock);
	UnregisterSnapshot(snapshot);
}

/*
 * A truncate of relid at version: record it as the table's horizon and
 * drop the tombstones of single keys it makes redundant.
 */
void
cr_tombstone_truncate(Oid relid, int64 version)
{
	Oid			argtypes[2] = {OIDOID, INT8OID};
	Datum		values[2];
	cr_tombstone_record(relid, horizon_key(), version, 0, 0, NULL);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int64GetDatum(version);
	(void) cr_catalog_write(&truncate_plan,
							"DELETE FROM cosmosrep.tombstone"
							" WHERE relid OPERATOR(pg_catalog.=) $1"
							" AND key OPERATOR(pg_catalog.<>) ''::pg_catalog.bytea"
							" AND version OPERATOR(pg_catalog.<) $2",
							2, argtypes, values, NULL, SPI_OK_DELETE);
}

/*
 * Drop the tombstones (and lost writes) of a table that stops being
 * multi-region.
 */
void
cr_tombstone_forget_table(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	(void) cr_catalog_write(&forget_plan,
							"DELETE FROM cosmosrep.tombstone"
							" WHERE relid OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, SPI_OK_DELETE);
	(void) cr_catalog_write(&lost_forget_plan,
							"DELETE FROM cosmosrep.lost_write"
							" WHERE relid OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, SPI_OK_DELETE);
}

/*
 * Remember this region's writes of key that a remote write replaced
 * without having seen them (lost, exclusions of a version vector:
 * seen.c), beside what is remembered already.
 */
void
cr_lost_record(Oid relid, bytea *key, bytea *lost)
{
	Oid			argtypes[3] = {OIDOID, BYTEAOID, BYTEAOID};
	Datum		values[3];

	tombstone_cache_init();
	if (!OidIsValid(lost_relid))
		return;					/* 0.1's catalog: not kept until the update */
	values[0] = ObjectIdGetDatum(relid);
	values[1] = PointerGetDatum(key);
	values[2] = PointerGetDatum(lost);
	(void) cr_catalog_write(&lost_record_plan,
							"INSERT INTO cosmosrep.lost_write AS l (relid, key, lost)"
							" VALUES ($1, $2, $3)"
							" ON CONFLICT (relid, key) DO UPDATE"
							" SET lost = l.lost OPERATOR(pg_catalog.||) excluded.lost",
							3, argtypes, values, NULL, SPI_OK_INSERT);
}

/*
 * What cr_lost_record remembered for key, forgotten now (the caller's
 * write carries it on), or NULL.  One probe of the index when there is
 * nothing, which is almost always.
 */
bytea *
cr_lost_take(Oid relid, bytea *key)
{
	Snapshot	snapshot;
	Relation	rel;
	ScanKeyData skey[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bytea	   *lost = NULL;

	tombstone_cache_init();
	if (!OidIsValid(lost_relid))
		return NULL;
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(lost_relid, AccessShareLock);
	ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&skey[1], 2, BTEqualStrategyNumber, F_BYTEAEQ, PointerGetDatum(key));
	scan = systable_beginscan(rel, lost_index_relid, true, snapshot, 2, skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;

		lost = DatumGetByteaPCopy(heap_getattr(tup, 3, RelationGetDescr(rel), &isnull));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snapshot);
	if (lost != NULL)
	{
		Oid			argtypes[2] = {OIDOID, BYTEAOID};
		Datum		values[2] = {ObjectIdGetDatum(relid), PointerGetDatum(key)};

		(void) cr_catalog_write(&lost_take_plan,
								"DELETE FROM cosmosrep.lost_write"
								" WHERE relid OPERATOR(pg_catalog.=) $1"
								" AND key OPERATOR(pg_catalog.=) $2",
								2, argtypes, values, NULL, SPI_OK_DELETE);
	}
	return lost;
}
