/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Reads and writes of cosmosrep.region, cosmosrep.replicated_table and
 *	  cosmosrep.policy_history.
 *
 * NOTES
 *	  Every access to these three configuration tables goes through this
 *	  file (the regions' failover priorities and write regions too, which
 *	  failover.c decides); the tables of data cosmosrep keeps (tombstones,
 *	  conflicts) belong to tombstone.c and conflict_log.c, which write them
 *	  through cr_catalog_write here.  The tables are small and written
 *	  rarely, so this uses SPI with plans parsed per call; the one hot
 *	  lookup, the local region id that the row trigger needs for every
 *	  write, is cached per backend and dropped by a relcache callback (the
 *	  trigger caches a table's configuration version itself).  The
 *	  statement trigger cosmosrep.config_changed() (launcher.c) on the
 *	  tables sends that invalidation, so a change made by any session (or a
 *	  restore) reaches every backend, and wakes the launcher.  This file
 *	  calls nothing above it: it only says what changed.
 *
 *	  It also says what a multi-region table's partitions are (the table
 *	  at the top of a partition's tree, which partitions hold rows,
 *	  whether every leaf has the table's layout), for enable_table
 *	  (tables.c) and for the partition statements of ddl.c.
 *
 *	  Callers must be inside a transaction.  Reads are not read-only SPI
 *	  calls, so they see what the caller's transaction wrote before them
 *	  (join_region writes the regions and then enables tables).  Returned
 *	  structs and strings are allocated in the caller's memory context.
 *
 * IDENTIFICATION
 *	  src/catalog.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "catalog/pg_authid.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "names.h"
#include "run_as.h"

/* per-backend cache of the local region id; -1 when not known */
static int	cached_local_region_id = -1;
static bool cached_accepts_writes = true;
static bool cached_upgrading = false;

/* changes whenever cosmosrep.region may have changed (for caches elsewhere) */
uint64		cr_regions_generation = 1;
static Oid	cached_region_relid = InvalidOid;
static bool callback_registered = false;

static SPIPlanPtr history_insert_plan = NULL;
static SPIPlanPtr history_forget_plan = NULL;

static void cr_region_cache_callback(Datum arg, Oid relid);
static void cr_spi_exec(const char *sql, int nargs, Oid *argtypes,
						Datum *values, const char *nulls, bool read_only);

Oid
cr_schema_oid(void)
{
	return get_namespace_oid(COSMOSREP_SCHEMA, false);
}

static void
cr_region_cache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cached_region_relid)
	{
		cached_local_region_id = -1;
		cr_regions_generation++;
	}
}

/*
 * This region's name, from the cached regions (no query when they did not
 * change); NULL before the region exists.
 */
const char *
cr_local_region_name(void)
{
	ListCell   *lc;

	foreach(lc, cr_get_regions_cached())
	{
		CrRegion   *r = lfirst(lc);

		if (r->is_local)
			return r->name;
	}
	return NULL;
}

/*
 * The arbiter: the region that resolves the conflicts of tables under a
 * resolver for the whole group (conflict.c).  It is the first region that
 * accepts writes in failover priority order (1, 2, ...; 0, no priority,
 * after every other), ties broken by region id; 0 when none accepts
 * writes.  Every region computes it from its own cosmosrep.region, which
 * converges like any configuration: while two regions disagree, both may
 * resolve a conflict, and their results are writes like any other.
 */
int
cr_arbiter_region_id(void)
{
	static uint64 generation = 0;
	static int	arbiter = 0;
	CrRegion   *best = NULL;
	ListCell   *lc;

	if (generation == cr_regions_generation && generation != 0)
		return arbiter;
	foreach(lc, cr_get_regions_cached())
	{
		CrRegion   *r = lfirst(lc);

		if (!r->accepts_writes)
			continue;
		if (best == NULL ||
			(r->failover_priority != 0 &&
			 (best->failover_priority == 0 || r->failover_priority < best->failover_priority)))
			best = r;
	}
	arbiter = best ? best->id : 0;
	/* only a known local region moves the generation on change */
	generation = cr_local_region_id(true) < 0 ? 0 : cr_regions_generation;
	return arbiter;
}

/*
 * Run one statement through SPI, to which the caller has connected, as
 * the bootstrap superuser: cosmosrep's tables are not readable by PUBLIC,
 * and it owns them.  Callers check the privileges of the user they act for
 * (table ownership, function grants) first.  The statement runs with a
 * pinned search_path (cr_pin_search_path), whatever the caller set.  With
 * plan, the statement is prepared once per backend into *plan.  Returns
 * SPI's result code; errors if the statement fails.
 */
int
cr_catalog_query(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				 Datum *values, const char *nulls, bool read_only)
{
	int			rc;
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel = cr_pin_search_path();

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (plan != NULL)
	{
		if (*plan == NULL)
		{
			SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

			if (p == NULL)
				elog(ERROR, "SPI_prepare failed for \"%s\": %s",
					 sql, SPI_result_code_string(SPI_result));
			SPI_keepplan(p);
			*plan = p;
		}
		rc = SPI_execute_plan(*plan, values, nulls, read_only, 0);
	}
	else
		rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, read_only, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	cr_unpin_search_path(nestlevel);
	if (rc < 0)
		elog(ERROR, "could not execute \"%s\": %s", sql, SPI_result_code_string(rc));
	return rc;
}

static void
cr_spi_exec(const char *sql, int nargs, Oid *argtypes, Datum *values,
			const char *nulls, bool read_only)
{
	(void) cr_catalog_query(NULL, sql, nargs, argtypes, values, nulls, read_only);
}

/*
 * The owner of relid, which the caller has locked.
 */
Oid
cr_relation_owner(Oid relid)
{
	Relation	rel = table_open(relid, NoLock);
	Oid			owner = rel->rd_rel->relowner;

	table_close(rel, NoLock);
	return owner;
}

/*
 * The owner of relid, which must have the name owner, the table's owner
 * in origin_region where a change of the table (nspname.relname) was
 * made: the change is repeated here as that owner.  An error otherwise.
 */
Oid
cr_relation_owner_named(Oid relid, const char *owner, const char *nspname,
						const char *relname, const char *origin_region)
{
	Oid			local_owner_id = cr_relation_owner(relid);
	char	   *local_owner = GetUserNameFromId(local_owner_id, false);

	if (strcmp(owner, local_owner) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("table \"%s.%s\" is owned by \"%s\" in region \"%s\" but by \"%s\" in this region",
						nspname, relname, owner, origin_region, local_owner),
				 errdetail("A multi-region table must have owners of the same name in every region."),
				 errhint("Change the owner of the table in one of the regions; replication from \"%s\" resumes then.",
						 origin_region)));
	return local_owner_id;
}

/*
 * The table whose configuration governs relid's rows: relid itself, or,
 * for a partition, the partitioned table at the top of its tree, which
 * is what enable_table makes multi-region (README, "Partitioned tables").
 * The caller has locked relid.
 */
Oid
cr_partition_root(Oid relid)
{
	List	   *ancestors;
	Oid			root;

	if (!get_rel_relispartition(relid))
		return relid;
	ancestors = get_partition_ancestors(relid);
	root = llast_oid(ancestors);
	list_free(ancestors);
	return root;
}

/*
 * Whether rel, a table or a partitioned table the caller has locked, holds
 * any row (ddl.c asks it of a partition attached or detached).
 */
bool
cr_table_has_rows(Relation rel)
{
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		found;

	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		return cr_partitions_with_rows(rel) != NIL;
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	slot = table_slot_create(rel, NULL);
	found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * The OIDs of the leaf partitions of rel, a partitioned table the caller
 * has locked, that hold rows (locked AccessShareLock until commit).
 */
List *
cr_partitions_with_rows(Relation rel)
{
	List	   *leaves = NIL;
	ListCell   *lc;

	foreach(lc, find_all_inheritors(RelationGetRelid(rel), AccessShareLock, NULL))
	{
		Relation	part;

		if (get_rel_relkind(lfirst_oid(lc)) != RELKIND_RELATION)
			continue;
		part = table_open(lfirst_oid(lc), NoLock);
		if (cr_table_has_rows(part))
			leaves = lappend_oid(leaves, lfirst_oid(lc));
		table_close(part, NoLock);
	}
	return leaves;
}

/*
 * Apply writes a partitioned table's rows into its leaf partitions in the
 * partitioned table's own column layout (apply_relation.c): every leaf
 * must have the columns of the table at the same positions, dropped ones
 * included, which CREATE TABLE ... PARTITION OF gives, and be an ordinary
 * table.  The caller has locked rel.  Also checked after a partition is
 * attached (ddl.c, attaching: the hint says so).
 */
void
cr_check_partition_layouts(Relation rel, bool attaching)
{
	ListCell   *lc;

	foreach(lc, find_all_inheritors(RelationGetRelid(rel), AccessShareLock, NULL))
	{
		Oid			partid = lfirst_oid(lc);
		char		relkind = get_rel_relkind(partid);
		Relation	part;

		if (relkind == RELKIND_PARTITIONED_TABLE)
			continue;
		if (relkind != RELKIND_RELATION)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("partition \"%s\" of table \"%s\" is not an ordinary table",
							get_rel_name(partid), RelationGetRelationName(rel)),
					 errdetail("Rows of a multi-region table are applied in every region, which only ordinary partitions allow.")));
		part = table_open(partid, NoLock);
		if (!cr_same_column_layout(RelationGetDescr(rel), RelationGetDescr(part)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("partition \"%s\" of table \"%s\" has its columns at other positions than the table",
							RelationGetRelationName(part), RelationGetRelationName(rel)),
					 errdetail("cosmosrep writes a partitioned table's rows into its partitions in the table's column layout, dropped columns included."),
					 attaching ?
					 errhint("Create the partition with CREATE TABLE ... PARTITION OF instead.") :
					 errhint("Recreate the partition with CREATE TABLE ... PARTITION OF, then call cosmosrep.enable_table again.")));
		table_close(part, NoLock);
	}
}

/*
 * Execute a statement that writes cosmosrep's state tables (tombstones,
 * conflicts, region priorities) as their owner (cr_catalog_query), and
 * check its result code; returns the number of rows it processed.
 * Connects to SPI itself.  The caller has checked that the user it acts
 * for may cause the write.
 */
uint64
cr_catalog_write(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				 Datum *values, const char *nulls, int expected)
{
	int			rc;
	uint64		processed;

	SPI_connect();
	rc = cr_catalog_query(plan, sql, nargs, argtypes, values, nulls, false);
	processed = SPI_processed;
	SPI_finish();
	if (rc != expected)
		elog(ERROR, "could not execute \"%s\": %s", sql, SPI_result_code_string(rc));
	return processed;
}

/*
 * The id of this database's region, or -1 (with missing_ok) when
 * cosmosrep.create_region has not been called yet.
 */
int
cr_local_region_id(bool missing_ok)
{
	if (cached_local_region_id < 0)
	{
		bool		isnull;

		if (!callback_registered)
		{
			CacheRegisterRelcacheCallback(cr_region_cache_callback, (Datum) 0);
			callback_registered = true;
		}
		cached_region_relid = get_relname_relid("region", cr_schema_oid());

		SPI_connect();
		cr_spi_exec("SELECT region_id, accepts_writes FROM cosmosrep.region WHERE is_local",
					0, NULL, NULL, NULL, false);
		if (SPI_processed == 1)
		{
			cached_local_region_id =
				DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
			cached_accepts_writes =
				DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull));
		}
		SPI_finish();
		cached_upgrading = cached_local_region_id >= 0 && cr_upgrade_prepared();
	}

	if (cached_local_region_id < 0 && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is not a cosmosrep region"),
				 errhint("Call cosmosrep.create_region or cosmosrep.join_region first.")));
	return cached_local_region_id;
}

/*
 * Whether this region may write multi-region tables (a region of a group
 * that is not one yet may).  Cached with the region id.
 */
bool
cr_local_region_accepts_writes(void)
{
	return cr_local_region_id(true) < 0 || cached_accepts_writes;
}

/*
 * Whether the region is prepared for an upgrade: cosmosrep.upgrade has a
 * row.  False in a catalog without the table (0.1, served by this
 * library until ALTER EXTENSION cosmosrep UPDATE).  Runs a query: the
 * write check caches it (cr_local_region_upgrading), the launcher asks
 * once per cycle.
 */
bool
cr_upgrade_prepared(void)
{
	bool		prepared;

	if (!OidIsValid(get_relname_relid("upgrade", cr_schema_oid())))
		return false;
	SPI_connect();
	(void) cr_catalog_query(NULL, "SELECT FROM cosmosrep.upgrade", 0, NULL, NULL, NULL, true);
	prepared = SPI_processed > 0;
	SPI_finish();
	return prepared;
}

/*
 * The name under which the configuration keeps the resolver funcid:
 * schema-qualified and quoted, for cr_lookup_resolver.
 */
char *
cr_resolver_name(Oid funcid)
{
	return quote_qualified_identifier(get_namespace_name(get_func_namespace(funcid)),
									  get_func_name(funcid));
}

/*
 * Whether this region is prepared for an upgrade (upgrade.c), which stops
 * its local writes to multi-region tables.  Cached with the region id.
 */
bool
cr_local_region_upgrading(void)
{
	return cr_local_region_id(true) >= 0 && cached_upgrading;
}

/*
 * All regions, local one included, ordered by id.
 */
List *
cr_get_regions(void)
{
	List	   *result = NIL;
	MemoryContext callerctx = CurrentMemoryContext;

	SPI_connect();
	cr_spi_exec("SELECT region_id, region_name, dsn, is_local, failover_priority, paused,"
				" accepts_writes FROM cosmosrep.region ORDER BY region_id",
				0, NULL, NULL, NULL, false);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext spictx = MemoryContextSwitchTo(callerctx);
		CrRegion   *r = palloc0(sizeof(CrRegion));
		bool		isnull;

		r->id = DatumGetInt16(SPI_getbinval(tup, desc, 1, &isnull));
		r->name = SPI_getvalue(tup, desc, 2);
		r->dsn = SPI_getvalue(tup, desc, 3);
		r->is_local = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		r->failover_priority = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		r->paused = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		r->accepts_writes = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		result = lappend(result, r);
		MemoryContextSwitchTo(spictx);
	}
	SPI_finish();
	return result;
}

/*
 * The regions as cr_get_regions returns them, kept until cosmosrep.region
 * changes: for the checks made at every statement or commit (consistency
 * levels, bounded staleness).  The caller must not change the list.
 */
List *
cr_get_regions_cached(void)
{
	static MemoryContext cxt = NULL;
	static List *cached = NIL;
	static uint64 generation = 0;

	/* the invalidation callback that moves the generation */
	if (cr_local_region_id(true) < 0)
		return cr_get_regions();
	if (cxt == NULL)
		cxt = AllocSetContextCreate(CacheMemoryContext, "cosmosrep regions",
									ALLOCSET_SMALL_SIZES);
	if (generation != cr_regions_generation)
	{
		MemoryContext oldctx;

		MemoryContextReset(cxt);
		oldctx = MemoryContextSwitchTo(cxt);
		cached = cr_get_regions();
		MemoryContextSwitchTo(oldctx);
		generation = cr_regions_generation;
	}
	return cached;
}

CrRegion *
cr_get_region_by_name(const char *name)
{
	ListCell   *lc;

	foreach(lc, cr_get_regions())
	{
		CrRegion   *r = lfirst(lc);

		if (strcmp(r->name, name) == 0)
			return r;
	}
	return NULL;
}

CrRegion *
cr_get_region_by_id(int id)
{
	ListCell   *lc;

	foreach(lc, cr_get_regions())
	{
		CrRegion   *r = lfirst(lc);

		if (r->id == id)
			return r;
	}
	return NULL;
}

void
cr_delete_region(int id)
{
	Oid			argtypes[1] = {INT2OID};
	Datum		values[1] = {Int16GetDatum(id)};

	SPI_connect();
	cr_spi_exec("DELETE FROM cosmosrep.region WHERE region_id OPERATOR(pg_catalog.=) $1",
				1, argtypes, values, NULL, false);
	SPI_finish();
}

void
cr_set_region_paused(int id, bool paused)
{
	Oid			argtypes[2] = {INT2OID, BOOLOID};
	Datum		values[2] = {Int16GetDatum(id), BoolGetDatum(paused)};

	SPI_connect();
	cr_spi_exec("UPDATE cosmosrep.region SET paused = $2 WHERE region_id OPERATOR(pg_catalog.=) $1",
				2, argtypes, values, NULL, false);
	SPI_finish();
}

void
cr_insert_region(const CrRegion *region)
{
	Oid			argtypes[6] = {INT2OID, TEXTOID, TEXTOID, BOOLOID, INT4OID, BOOLOID};
	Datum		values[6];

	values[0] = Int16GetDatum(region->id);
	values[1] = CStringGetTextDatum(region->name);
	values[2] = CStringGetTextDatum(region->dsn);
	values[3] = BoolGetDatum(region->is_local);
	values[4] = Int32GetDatum(region->failover_priority);
	values[5] = BoolGetDatum(region->accepts_writes);

	SPI_connect();
	cr_spi_exec("INSERT INTO cosmosrep.region"
				" (region_id, region_name, dsn, is_local, failover_priority, accepts_writes)"
				" VALUES ($1, $2, $3, $4, $5, $6)",
				6, argtypes, values, NULL, false);
	SPI_finish();
}

/*
 * The resolver's name from a resolver column of type typid: text in 0.2,
 * regprocedure in the catalog of 0.1, which this library reads between
 * its start and ALTER EXTENSION cosmosrep UPDATE.
 */
static char *
resolver_name(Datum value, Oid typid)
{
	if (typid == TEXTOID)
		return TextDatumGetCString(value);
	return cr_resolver_name(DatumGetObjectId(value));
}

/*
 * A configuration from the policy, path and resolver of an SPI result
 * row, in ctx.
 */
static CrTableConfig *
config_from_tuple(HeapTuple tup, TupleDesc desc, Oid relid, int64 config_version,
				  MemoryContext ctx)
{
	MemoryContext oldctx = MemoryContextSwitchTo(ctx);
	CrTableConfig *config = palloc0(sizeof(CrTableConfig));
	bool		isnull;
	Datum		resolver;

	config->relid = relid;
	config->policy = SPI_getvalue(tup, desc, 1);
	config->path = SPI_getvalue(tup, desc, 2);
	resolver = SPI_getbinval(tup, desc, 3, &isnull);
	config->resolver = isnull ? NULL : resolver_name(resolver, SPI_gettypeid(desc, 3));
	config->config_version = config_version;
	MemoryContextSwitchTo(oldctx);
	return config;
}

/*
 * The configuration of a multi-region table, or NULL if it is not one.
 */
CrTableConfig *
cr_get_table_config(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	CrTableConfig *config = NULL;
	MemoryContext callerctx = CurrentMemoryContext;

	SPI_connect();
	cr_spi_exec("SELECT policy, path, resolver, config_version"
				" FROM cosmosrep.replicated_table WHERE relid OPERATOR(pg_catalog.=) $1",
				1, argtypes, values, NULL, false);
	if (SPI_processed == 1)
	{
		bool		isnull;

		config = config_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, relid,
								   DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 4,
															   &isnull)),
								   callerctx);
	}
	SPI_finish();
	return config;
}

/* the five arguments every write of replicated_table binds */
static void
cr_table_config_args(const CrTableConfig *config, Oid *argtypes,
					 Datum *values, char *nulls)
{
	argtypes[0] = OIDOID;
	argtypes[1] = TEXTOID;
	argtypes[2] = NAMEOID;
	argtypes[3] = TEXTOID;
	argtypes[4] = INT8OID;
	values[0] = ObjectIdGetDatum(config->relid);
	values[1] = CStringGetTextDatum(config->policy);
	values[2] = config->path ? CStringGetDatum(config->path) : (Datum) 0;
	values[3] = config->resolver ? CStringGetTextDatum(config->resolver) : (Datum) 0;
	values[4] = Int64GetDatum(config->config_version);
	nulls[0] = ' ';
	nulls[1] = ' ';
	nulls[2] = config->path ? ' ' : 'n';
	nulls[3] = config->resolver ? ' ' : 'n';
	nulls[4] = ' ';
}

void
cr_insert_table_config(const CrTableConfig *config)
{
	Oid			argtypes[5];
	Datum		values[5];
	char		nulls[5];

	cr_table_config_args(config, argtypes, values, nulls);
	SPI_connect();
	cr_spi_exec("INSERT INTO cosmosrep.replicated_table"
				" (relid, policy, path, resolver, config_version)"
				" VALUES ($1, $2, $3, $4, $5)",
				5, argtypes, values, nulls, false);
	SPI_finish();
}

void
cr_update_table_config(const CrTableConfig *config)
{
	Oid			argtypes[5];
	Datum		values[5];
	char		nulls[5];

	cr_table_config_args(config, argtypes, values, nulls);
	SPI_connect();
	cr_spi_exec("UPDATE cosmosrep.replicated_table"
				" SET policy = $2, path = $3, resolver = $4, config_version = $5"
				" WHERE relid OPERATOR(pg_catalog.=) $1",
				5, argtypes, values, nulls, false);
	SPI_finish();
}

void
cr_delete_table_config(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	SPI_connect();
	cr_spi_exec("DELETE FROM cosmosrep.replicated_table WHERE relid OPERATOR(pg_catalog.=) $1",
				1, argtypes, values, NULL, false);
	SPI_finish();
}

/*
 * The version of the configuration relid has in this region (that of the
 * enable or policy change that set it), or -1 if it is not multi-region:
 * the row trigger stamps every local write with it (and caches it), and
 * refuses to run on a table without one.
 * Read with the latest snapshot, so a writer whose transaction snapshot
 * predates a policy change it waited for (on the table's lock) sees that
 * change.
 */
int64
cr_table_config_version(Oid relid)
{
	Oid			tablerelid = get_relname_relid("replicated_table", cr_schema_oid());
	Relation	rel = table_open(tablerelid, AccessShareLock);
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		config_version = -1;

	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, get_relname_relid("replicated_table_pkey", cr_schema_oid()),
							  true, snapshot, 1, &skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;

		config_version = DatumGetInt64(heap_getattr(tup,
													get_attnum(tablerelid, "config_version"),
													RelationGetDescr(rel), &isnull));
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	return config_version;
}

/*
 * Remember config in the table's configuration history (if this version
 * is not there yet; a user catalog table takes no ON CONFLICT).
 */
void
cr_record_policy_history(const CrTableConfig *config)
{
	Oid			argtypes[5];
	Datum		values[5];
	char		nulls[5];

	cr_table_config_args(config, argtypes, values, nulls);
	(void) cr_catalog_write(&history_insert_plan,
							"INSERT INTO cosmosrep.policy_history"
							" (relid, policy, path, resolver, config_version)"
							" SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS"
							" (SELECT FROM cosmosrep.policy_history"
							"   WHERE relid OPERATOR(pg_catalog.=) $1"
							"   AND config_version OPERATOR(pg_catalog.=) $5)",
							5, argtypes, values, nulls, SPI_OK_INSERT);
}

/*
 * The configuration of relid at config_version from its history, or
 * NULL if this region does not know that version; with config_version 0
 * (which no configuration has), the oldest configuration of relid, or NULL
 * if it has no history (it never was multi-region).  Read with the catalog
 * snapshot: the output plugin calls it while decoding, where that is the
 * historic snapshot of the change being decoded (the table is a user
 * catalog table).
 */
CrTableConfig *
cr_get_policy_history(Oid relid, int64 config_version)
{
	Relation	rel = table_open(get_relname_relid("policy_history", cr_schema_oid()),
								 AccessShareLock);
	ScanKeyData skey[2];
	SysScanDesc scan;
	HeapTuple	tup;
	CrTableConfig *config = NULL;

	ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&skey[1], 2, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(config_version));
	scan = systable_beginscan(rel, get_relname_relid("policy_history_pkey", cr_schema_oid()),
							  true, NULL, config_version == 0 ? 1 : 2, skey);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull;
		Datum		d;
		AttrNumber	attnum;

		config = palloc0(sizeof(CrTableConfig));
		config->relid = relid;
		config->config_version = DatumGetInt64(heap_getattr(tup, 2, desc, &isnull));
		config->policy = TextDatumGetCString(heap_getattr(tup, 3, desc, &isnull));
		d = heap_getattr(tup, 4, desc, &isnull);
		config->path = isnull ? NULL : pstrdup(NameStr(*DatumGetName(d)));
		/* by name: 0.2 added it, text, after 0.1's regprocedure one */
		attnum = get_attnum(RelationGetRelid(rel), "resolver");
		d = heap_getattr(tup, attnum, desc, &isnull);
		config->resolver = isnull ? NULL :
			resolver_name(d, TupleDescAttr(desc, attnum - 1)->atttypid);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return config;
}

/* forget the configuration history of a table that stops being multi-region */
void
cr_forget_policy_history(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	(void) cr_catalog_write(&history_forget_plan,
							"DELETE FROM cosmosrep.policy_history WHERE relid OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, SPI_OK_DELETE);
}

/* store priority for region name unless a newer change set it already */
void
cr_set_failover_priority(const char *name, int priority, int64 version)
{
	Oid			argtypes[3] = {TEXTOID, INT4OID, INT8OID};
	Datum		values[3];

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(priority);
	values[2] = Int64GetDatum(version);
	(void) cr_catalog_write(NULL,
							"UPDATE cosmosrep.region"
							" SET failover_priority = $2, failover_version = $3"
							" WHERE region_name OPERATOR(pg_catalog.=) $1"
							" AND failover_version OPERATOR(pg_catalog.<) $3",
							3, argtypes, values, NULL, SPI_OK_UPDATE);
}

/*
 * Let every region write (write_region NULL), or write_region only,
 * unless a newer change set it already.
 */
void
cr_set_write_regions(const char *write_region, int64 version)
{
	Oid			argtypes[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	char		nulls[2] = {write_region ? ' ' : 'n', ' '};

	values[0] = write_region ? CStringGetTextDatum(write_region) : (Datum) 0;
	values[1] = Int64GetDatum(version);
	(void) cr_catalog_write(NULL,
							"UPDATE cosmosrep.region"
							" SET accepts_writes = $1 IS NULL OR region_name OPERATOR(pg_catalog.=) $1,"
							"     writes_version = $2"
							" WHERE writes_version OPERATOR(pg_catalog.<) $2",
							2, argtypes, values, nulls, SPI_OK_UPDATE);
}

/*
 * After regions were added here (add_region, join_region): every row takes
 * the newest version of the write regions setting known here or in the
 * group (version), so that an older change arriving later changes no row.
 */
void
cr_write_regions_adopt_version(int64 version)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(version)};

	(void) cr_catalog_write(NULL,
							"UPDATE cosmosrep.region"
							" SET writes_version = GREATEST($1,"
							"     (SELECT pg_catalog.max(writes_version) FROM cosmosrep.region))",
							1, argtypes, values, NULL, SPI_OK_UPDATE);
}
