/*-------------------------------------------------------------------------
 *
 * join.c
 *	  Joining a group: cosmosrep.join_region, run on the new region X with
 *	  the connection string of a member A of the group (the via region).
 *
 * NOTES
 *	  The join is the six steps of "Joining a group" in docs/design.md,
 *	  made of the functions below that cosmosrep_join_region calls:
 *
 *	  1. read_group, read_tables, check_local_tables: read the group's
 *		 regions and multi-region tables from A; every table must exist
 *		 here and be empty before anything changes.
 *	  2. create_local_slots: create X's slots for every member
 *		 (cr_X_<P>), before X writes anything, so each member will
 *		 receive all of X's writes.
 *	  3. create_member_slots: create every other member's slot for X
 *		 (cr_<P>_X) at LSN L_P and wait until A has confirmed P's stream
 *		 up to L_P (wait_for_catchup): all of P's writes before L_P are
 *		 then in A's data.
 *	  4. create_via_slot, record_group, copy_data: create A's slot for X
 *		 exporting its snapshot, record the group and X in the local
 *		 catalog, and copy every multi-region table from A at the exported
 *		 snapshot (join_copy.c).  A's writes up to the snapshot are in the
 *		 copy, later ones come from the slot: the copy and the stream start
 *		 at the same point.
 *	  5. position_origins: position X's origin for every P at L_P, so X's
 *		 apply workers start where the slots start.  Writes of P after L_P
 *		 that A had applied before its snapshot arrive twice and are
 *		 skipped by the version comparison (an equal version is not
 *		 newer).  It runs just before copy_data, whose session origin
 *		 (A's) it sets up.
 *	  6. register_everywhere: register X in every member
 *		 (cosmosrep.add_region), whose launcher then starts streaming
 *		 from X.
 *
 *	  The copy runs with A's replication origin as session origin, so X's
 *	  slots never send the copied rows back.  Everything local happens in
 *	  the caller's transaction.  The CrJoinState records what the join has
 *	  set up so far; teardown, the one cleanup of the error and the normal
 *	  path, closes every connection and, after a failure, drops the slots
 *	  the attempt created (on a best-effort basis).
 *
 * IDENTIFICATION
 *	  src/join.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "replication/origin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "catalog.h"
#include "failover.h"
#include "hlc.h"
#include "join.h"
#include "join_copy.h"
#include "launcher.h"
#include "names.h"
#include "remote.h"
#include "shmem.h"
#include "sql_api.h"
#include "wait.h"

/* how often the catch-up wait asks the member again */
#define CATCHUP_POLL_MS			100

/* settings */
static int	join_catchup_timeout_ms = 120000;

PG_FUNCTION_INFO_V1(cosmosrep_join_region);
PG_FUNCTION_INFO_V1(cosmosrep_output_plugin_allowed);

/* a member of the group, and what the join has set up in it */
typedef struct CrJoinMember
{
	int			id;
	char	   *name;
	char	   *dsn;
	bool		accepts_writes;
	PGconn	   *repl;			/* replication connection, for its slot */
	PGconn	   *sql;			/* SQL connection */
	XLogRecPtr	slot_lsn;		/* start of its slot for the new region */
	bool		slot_created;
	bool		local_slot_created;
} CrJoinMember;

/* the join in progress: its arguments, what it read and what it set up */
typedef struct CrJoinState
{
	char	   *name;			/* the joining region */
	char	   *dsn;			/* its connection string */
	char	   *via;			/* connection string of the via region */
	int			new_id;			/* the joining region's id */
	bool		writes_everywhere;	/* every member accepts writes */
	int64		writes_version;
	List	   *members;		/* of CrJoinMember */
	CrJoinMember *via_member;
	List	   *tables;			/* of CrJoinTable */
	char	   *snapshot;		/* exported by the via region's slot */
	PGconn	   *viaconn;		/* SQL connection to the via region */
	PGconn	   *localrepl;		/* replication connection to this region */
	bool		session_origin_set;
} CrJoinState;

static CrJoinState *start_join(FunctionCallInfo fcinfo);
static void read_group(CrJoinState *st);
static void read_tables(CrJoinState *st);
static void check_local_tables(CrJoinState *st);
static void create_local_slots(CrJoinState *st);
static void create_member_slots(CrJoinState *st);
static void create_via_slot(CrJoinState *st);
static void record_group(CrJoinState *st);
static void position_origins(CrJoinState *st);
static void copy_data(CrJoinState *st);
static void register_everywhere(CrJoinState *st);
static void teardown(CrJoinState *st, bool failed);
static bool plugin_allowed(const char *setting);
static void check_plugin_allowed(PGconn *conn, const char *region);
static XLogRecPtr create_slot(PGconn *repl, const char *slot, const char *region,
							  char **snapshot);
static void wait_for_catchup(CrJoinMember *member, const char *via_region);

/* define the settings of joining a group; called from _PG_init */
void
cr_join_define_settings(void)
{
	DefineCustomIntVariable("cosmosrep.join_catchup_timeout",
							"How long joining a group waits for the via region to have applied each other member's writes.",
							"The join copies the via region only once it has applied every other member's stream up to where the new region's slot on that member starts.",
							&join_catchup_timeout_ms,
							120000, 1000, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * Join the group that the via region is a member of, as the region name
 * reached by dsn; returns the new region's id.  See the file header for
 * the steps.
 */
Datum
cosmosrep_join_region(PG_FUNCTION_ARGS)
{
	CrJoinState *st = start_join(fcinfo);

	PG_TRY();
	{
		read_group(st);
		read_tables(st);
		check_local_tables(st);
		create_local_slots(st);
		create_member_slots(st);
		create_via_slot(st);
		record_group(st);
		position_origins(st);
		copy_data(st);
		register_everywhere(st);
	}
	PG_CATCH();
	{
		teardown(st, true);
		PG_RE_THROW();
	}
	PG_END_TRY();
	teardown(st, false);

	cr_wake_launcher_at_commit();
	PG_RETURN_INT16(st->new_id);
}

/*
 * Check join_region's arguments and this database, before anything is
 * set up; the state it returns is palloc'd in the caller's context.
 */
static CrJoinState *
start_join(FunctionCallInfo fcinfo)
{
	CrJoinState *st;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("region name, connection string and via must not be null")));
	st = palloc0(sizeof(CrJoinState));
	st->name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	st->dsn = text_to_cstring(PG_GETARG_TEXT_PP(1));
	st->via = text_to_cstring(PG_GETARG_TEXT_PP(2));
	st->new_id = 1;
	st->writes_everywhere = true;

	cr_require_preload();
	cr_validate_region_name(st->name);
	cr_validate_dsn(st->dsn);
	cr_validate_dsn(st->via);
	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cosmosrep.join_region cannot run inside a transaction block")));
	if (cr_local_region_id(true) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this database is already a cosmosrep region")));
	return st;
}

/*
 * Step 1: the group's regions, as the via region knows them; the joining
 * region takes one more than the largest id.
 */
static void
read_group(CrJoinState *st)
{
	PGresult   *res;

	st->viaconn = cr_remote_connect(st->via, false, "cosmosrep join", "via");
	res = cr_remote_exec(st->viaconn,
						 "SELECT region_id, region_name, dsn, is_local, accepts_writes,"
						 " pg_catalog.max(writes_version) OVER ()"
						 " FROM cosmosrep.region ORDER BY region_id",
						 PGRES_TUPLES_OK, "via");
	for (int i = 0; i < PQntuples(res); i++)
	{
		CrJoinMember *m = palloc0(sizeof(CrJoinMember));

		m->id = atoi(PQgetvalue(res, i, 0));
		m->name = pstrdup(PQgetvalue(res, i, 1));
		/* names go into slot names and commands: trust no peer */
		cr_validate_region_name(m->name);
		if (m->id < 1 || m->id > CR_MAX_REGION_ID)
			elog(ERROR, "region \"%s\" has invalid id %d", m->name, m->id);
		m->dsn = pstrdup(PQgetvalue(res, i, 2));
		m->accepts_writes = strcmp(PQgetvalue(res, i, 4), "t") == 0;
		st->writes_everywhere &= m->accepts_writes;
		st->writes_version = pg_strtoint64(PQgetvalue(res, i, 5));
		st->members = lappend(st->members, m);
		if (strcmp(PQgetvalue(res, i, 3), "t") == 0)
			st->via_member = m;
		st->new_id = Max(st->new_id, m->id + 1);
		if (strcmp(m->name, st->name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("region \"%s\" already exists", st->name)));
	}
	PQclear(res);
	if (st->via_member == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the database named by via is not a cosmosrep region"),
				 errhint("Call cosmosrep.create_region there first.")));
	if (st->new_id > CR_MAX_REGION_ID)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("a group has at most %d regions", CR_MAX_REGION_ID)));
	st->via_member->sql = st->viaconn;
}

/* step 1: the group's multi-region tables and their configuration */
static void
read_tables(CrJoinState *st)
{
	PGresult   *res;

	res = cr_remote_exec(st->viaconn,
						 "SELECT n.nspname, c.relname, t.policy, t.path, t.resolver, t.config_version"
						 " FROM cosmosrep.replicated_table t"
						 " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid"
						 " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
						 " ORDER BY 1, 2",
						 PGRES_TUPLES_OK, st->via_member->name);
	for (int i = 0; i < PQntuples(res); i++)
	{
		CrJoinTable *t = palloc0(sizeof(CrJoinTable));

		t->nspname = pstrdup(PQgetvalue(res, i, 0));
		t->relname = pstrdup(PQgetvalue(res, i, 1));
		t->policy = pstrdup(PQgetvalue(res, i, 2));
		t->path = PQgetisnull(res, i, 3) ? NULL : pstrdup(PQgetvalue(res, i, 3));
		t->resolver = PQgetisnull(res, i, 4) ? NULL : pstrdup(PQgetvalue(res, i, 4));
		t->config_version = pg_strtoint64(PQgetvalue(res, i, 5));
		st->tables = lappend(st->tables, t);
	}
	PQclear(res);
}

/* step 1: every local table must exist and be empty before anything changes */
static void
check_local_tables(CrJoinState *st)
{
	ListCell   *lc;

	foreach(lc, st->tables)
	{
		CrJoinTable *t = lfirst(lc);
		Oid			relid = RangeVarGetRelid(makeRangeVar(t->nspname, t->relname, -1),
											 NoLock, true);
		bool		empty;

		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("multi-region table \"%s.%s\" does not exist in this database",
							t->nspname, t->relname),
					 errhint("Create every multi-region table of the group, with the same columns, before joining.")));
		SPI_connect();
		SPI_execute(psprintf("SELECT NOT EXISTS (SELECT 1 FROM %s)",
							 quote_qualified_identifier(t->nspname, t->relname)),
					true, 1);
		empty = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
		SPI_finish();
		if (!empty)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s.%s\" is not empty", t->nspname, t->relname),
					 errhint("A joining region receives the rows of multi-region tables from the group; start with empty tables.")));
	}
}

/* step 2: slots here for every member, before this region writes */
static void
create_local_slots(CrJoinState *st)
{
	ListCell   *lc;

	check_plugin_allowed(st->viaconn, st->via_member->name);
	check_plugin_allowed(NULL, st->name);
	st->localrepl = cr_remote_connect(st->dsn, true, "cosmosrep join", st->name);
	foreach(lc, st->members)
	{
		CrJoinMember *m = lfirst(lc);

		(void) create_slot(st->localrepl, cr_slot_name(st->name, m->name), st->name, NULL);
		m->local_slot_created = true;
	}
}

/*
 * Step 3: every other member's slot for this region, and the via region
 * caught up with each member up to the start of that slot.
 */
static void
create_member_slots(CrJoinState *st)
{
	ListCell   *lc;

	foreach(lc, st->members)
	{
		CrJoinMember *m = lfirst(lc);

		if (m == st->via_member)
			continue;
		m->sql = cr_remote_connect(m->dsn, false, "cosmosrep join", m->name);
		check_plugin_allowed(m->sql, m->name);
		m->repl = cr_remote_connect(m->dsn, true, "cosmosrep join", m->name);
		m->slot_lsn = create_slot(m->repl, cr_slot_name(m->name, st->name),
								  m->name, NULL);
		m->slot_created = true;
		wait_for_catchup(m, st->via_member->name);
	}
}

/*
 * Step 4: the via region's slot for this region, exporting the snapshot
 * the copy reads at; the replication connection stays idle until the
 * teardown, which keeps the snapshot valid.
 */
static void
create_via_slot(CrJoinState *st)
{
	CrJoinMember *via = st->via_member;

	via->repl = cr_remote_connect(via->dsn, true, "cosmosrep join", via->name);
	via->slot_lsn = create_slot(via->repl, cr_slot_name(via->name, st->name),
								via->name, &st->snapshot);
	via->slot_created = true;
}

/* step 4: the local catalog, the group and this region */
static void
record_group(CrJoinState *st)
{
	ListCell   *lc;

	foreach(lc, st->members)
	{
		CrJoinMember *m = lfirst(lc);
		CrRegion	r = {m->id, m->name, m->dsn, false, 0, false, m->accepts_writes};

		cr_insert_region(&r);
	}
	{
		/* a group with one write region keeps it */
		CrRegion	self = {st->new_id, st->name, st->dsn, true, 0, false, st->writes_everywhere};

		cr_insert_region(&self);
	}
	cr_write_regions_adopt_version(st->writes_version);
}

/*
 * Step 5: this region's origin for every member at the start of the
 * member's slot; the via region's origin becomes the session origin, for
 * the copy.
 */
static void
position_origins(CrJoinState *st)
{
	ListCell   *lc;

	foreach(lc, st->members)
	{
		CrJoinMember *m = lfirst(lc);
		char	   *origin_name = cr_origin_name(m->name);
		RepOriginId origin = replorigin_by_name(origin_name, true);

		if (origin == InvalidRepOriginId)
			origin = replorigin_create(origin_name);
		replorigin_advance(origin, m->slot_lsn, InvalidXLogRecPtr, true, true);
		if (m == st->via_member)
		{
#if PG_VERSION_NUM >= 160000
			replorigin_session_setup(origin, 0);
#else
			replorigin_session_setup(origin);
#endif
			replorigin_session_origin = origin;
			st->session_origin_set = true;
		}
	}
}

/* step 4: the copy at the via region's snapshot, under the via origin */
static void
copy_data(CrJoinState *st)
{
	cr_join_copy_at_snapshot(st->viaconn, st->via_member->name, st->snapshot,
							 st->tables);
	replorigin_session_reset();
	replorigin_session_origin = InvalidRepOriginId;
	st->session_origin_set = false;
}

/* step 6: register this region in every member */
static void
register_everywhere(CrJoinState *st)
{
	ListCell   *lc;

	foreach(lc, st->members)
	{
		CrJoinMember *m = lfirst(lc);
		PGresult   *res;
		const char *params[3] = {psprintf("%d", st->new_id), st->name, st->dsn};

		if (m->sql == NULL)
			m->sql = cr_remote_connect(m->dsn, false, "cosmosrep join", m->name);

		/*
		 * This region's clock starts past every member's: a member may purge
		 * a tombstone as soon as its clock is past it, and no write of this
		 * region may then be older (stability.c).
		 */
		res = cr_remote_exec(m->sql, "SELECT cosmosrep.current_version()",
							 PGRES_TUPLES_OK, m->name);
		cr_hlc_observe(pg_strtoint64(PQgetvalue(res, 0, 0)));
		PQclear(res);

		/* the dsn, which may hold a password, travels as a parameter */
		PQclear(cr_remote_exec_params(m->sql,
									  "SELECT cosmosrep.add_region($1::pg_catalog.int2, $2, $3)",
									  3, params, PGRES_TUPLES_OK, m->name));
	}
}

/*
 * The one cleanup of a join, after it failed or succeeded: reset the
 * session origin if the copy left it set, drop the slots a failed attempt
 * created (best effort: the error being handled is the one reported),
 * and close every connection.  It must not throw after a failure.
 */
static void
teardown(CrJoinState *st, bool failed)
{
	ListCell   *lc;

	if (st->session_origin_set)
	{
		replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
		st->session_origin_set = false;
	}
	foreach(lc, st->members)
	{
		CrJoinMember *m = lfirst(lc);

		if (failed && m->slot_created && m->repl)
			PQclear(PQexec(m->repl, psprintf("DROP_REPLICATION_SLOT %s",
											 cr_slot_name(m->name, st->name))));
		if (failed && m->local_slot_created && st->localrepl)
			PQclear(PQexec(st->localrepl, psprintf("DROP_REPLICATION_SLOT %s",
												   cr_slot_name(st->name, m->name))));
		if (m->repl)
			PQfinish(m->repl);
		if (m->sql && m->sql != st->viaconn)
			PQfinish(m->sql);
	}
	if (st->localrepl)
		PQfinish(st->localrepl);
	if (st->viaconn)
		PQfinish(st->viaconn);
}

/*
 * Whether a value of output_plugin_libraries admits cosmosrep; NULL (a
 * server before 15.19, which has no such setting) admits every plugin.
 */
static bool
plugin_allowed(const char *setting)
{
	List	   *plugins;
	ListCell   *lc;

	if (setting == NULL)
		return true;
	if (!SplitIdentifierString(pstrdup(setting), ',', &plugins))
		return false;
	foreach(lc, plugins)
	{
		if (strcmp((char *) lfirst(lc), COSMOSREP_PLUGIN) == 0)
			return true;
	}
	return false;
}

/*
 * Refuse early, with cosmosrep's own message, a region whose server would
 * refuse the output plugin at CREATE_REPLICATION_SLOT (PostgreSQL 15.19
 * and later).  conn is NULL for this region.
 */
static void
check_plugin_allowed(PGconn *conn, const char *region)
{
	bool		ok;

	if (conn == NULL)
		ok = plugin_allowed(GetConfigOption("output_plugin_libraries", true, false));
	else
	{
		/* the link role may not read the setting itself */
		PGresult   *res = cr_remote_exec(conn,
										 "SELECT cosmosrep.output_plugin_allowed()",
										 PGRES_TUPLES_OK, region);

		ok = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("region \"%s\" does not allow the cosmosrep output plugin", region),
				 errhint("Add cosmosrep to \"output_plugin_libraries\" in the postgresql.conf of region \"%s\" and reload it.",
						 region)));
}

/*
 * Whether this server admits the cosmosrep output plugin; join_region asks
 * every member, as the link role, which may not read
 * output_plugin_libraries (a setting only superusers and
 * pg_read_all_settings may examine).
 */
Datum
cosmosrep_output_plugin_allowed(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(plugin_allowed(GetConfigOption("output_plugin_libraries", true, false)));
}

/*
 * Create a logical slot using the cosmosrep plugin; with snapshot, export
 * the slot's snapshot (valid while repl stays idle) and return its name.
 */
static XLogRecPtr
create_slot(PGconn *repl, const char *slot, const char *region, char **snapshot)
{
	PGresult   *res;
	XLogRecPtr	lsn;

	res = cr_remote_exec(repl,
						 psprintf("CREATE_REPLICATION_SLOT %s LOGICAL %s (SNAPSHOT '%s')",
								  slot, COSMOSREP_PLUGIN,
								  snapshot ? "export" : "nothing"),
						 PGRES_TUPLES_OK, region);
	lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
										  CStringGetDatum(PQgetvalue(res, 0, 1))));
	if (snapshot)
		*snapshot = pstrdup(PQgetvalue(res, 0, 2));
	PQclear(res);
	return lsn;
}

/*
 * Wait until the via region has confirmed member's stream up to the start
 * of member's new slot, for at most cosmosrep.join_catchup_timeout.
 */
static void
wait_for_catchup(CrJoinMember *member, const char *via_region)
{
	char	   *sql = psprintf("SELECT confirmed_flush_lsn OPERATOR(pg_catalog.>=) '%X/%X'::pg_catalog.pg_lsn"
							   " FROM pg_catalog.pg_replication_slots"
							   " WHERE slot_name OPERATOR(pg_catalog.=) '%s'",
							   LSN_FORMAT_ARGS(member->slot_lsn),
							   cr_slot_name(member->name, via_region));
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   join_catchup_timeout_ms);

	for (;;)
	{
		PGresult   *res = cr_remote_exec(member->sql, sql, PGRES_TUPLES_OK, member->name);
		bool		done = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;

		PQclear(res);
		if (done)
			return;
		if (GetCurrentTimestamp() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("region \"%s\" has not caught up with region \"%s\"",
							via_region, member->name),
					 errdetail("Region \"%s\" must have applied the writes of region \"%s\" up to %X/%X before it can be copied.",
							   via_region, member->name, LSN_FORMAT_ARGS(member->slot_lsn)),
					 errhint("Check cosmosrep.replication_status in region \"%s\", then call cosmosrep.join_region again.",
							 via_region)));
		cr_sleep_ms(CATCHUP_POLL_MS);
	}
}
