/*-------------------------------------------------------------------------
 *
 * membership.c
 *	  Region membership: joining a group, registering and removing
 *	  regions, pausing and resuming replication from a region.
 *
 * NOTES
 *	  Join (cosmosrep.join_region, run on the new region X with the
 *	  connection string of a member A of the group):
 *
 *	  1. Read the group's regions and multi-region tables from A.
 *	  2. Create X's slots for every member (cr_X_<P>), before X writes
 *		 anything, so each member will receive all of X's writes.
 *	  3. Create every other member's slot for X (cr_<P>_X) at LSN L_P and
 *		 wait until A has confirmed P's stream up to L_P: all of P's
 *		 writes before L_P are then in A's data.
 *	  4. Create A's slot for X exporting its snapshot; copy every
 *		 multi-region table from A at that snapshot.  A's writes up to the
 *		 snapshot are in the copy, later ones come from the slot: the copy
 *		 and the stream start at the same point.
 *	  5. Position X's origin for every P at L_P, so X's apply workers start
 *		 where the slots start.  Writes of P after L_P that A had applied
 *		 before its snapshot arrive twice and are skipped by the version
 *		 comparison (an equal version is not newer).
 *	  6. Register X in every member (cosmosrep.add_region), whose launcher
 *		 then starts streaming from X.
 *
 *	  The copy runs with A's replication origin as session origin, so X's
 *	  slots never send the copied rows back.  Everything local happens in
 *	  the caller's transaction; slots created before a failure are dropped
 *	  again on a best-effort basis.
 *
 * IDENTIFICATION
 *	  src/membership.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/copy.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "names.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/varlena.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "failover.h"
#include "hlc.h"
#include "launcher.h"
#include "membership.h"
#include "remote.h"
#include "run_as.h"
#include "shmem.h"
#include "tables.h"
#include "tombstone.h"
#include "wait.h"

#define JOIN_CATCHUP_TIMEOUT_MS		120000

PG_FUNCTION_INFO_V1(cosmosrep_join_region);
PG_FUNCTION_INFO_V1(cosmosrep_add_region);
PG_FUNCTION_INFO_V1(cosmosrep_forget_region);
PG_FUNCTION_INFO_V1(cosmosrep_remove_region);
PG_FUNCTION_INFO_V1(cosmosrep_pause_region);
PG_FUNCTION_INFO_V1(cosmosrep_resume_region);
PG_FUNCTION_INFO_V1(cosmosrep_output_plugin_allowed);

typedef struct JoinMember
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
} JoinMember;

typedef struct JoinTable
{
	char	   *nspname;
	char	   *relname;
	char	   *policy;
	char	   *path;
	char	   *resolver;
	int64		config_version;
} JoinTable;

/* what a join has set up so far, for the cleanup after an error */
typedef struct CrJoinState
{
	PGconn	   *viaconn;
	PGconn	   *localrepl;
	List	   *members;		/* of JoinMember */
	bool		session_origin_set;
} CrJoinState;

/* COPY data source of the join */
static PGconn *copy_conn = NULL;
static char *copy_buf = NULL;
static int	copy_len = 0;
static int	copy_pos = 0;
static bool copy_done = false;

static bool plugin_allowed(const char *setting);
static void check_plugin_allowed(PGconn *conn, const char *region);
static XLogRecPtr create_slot(PGconn *repl, const char *slot, const char *region,
							  char **snapshot);
static void wait_for_confirmed(JoinMember *member, const char *via_region,
							   const char *local_name);
static void copy_table(JoinTable *t, PGconn *conn, const char *via_region);
static void copy_tombstones(PGconn *conn, const char *via_region);
static void copy_policy_history(PGconn *conn, const char *via_region);
static int	copy_read_data(void *outbuf, int minread, int maxread);
static void stop_apply_worker(int peer_id);
static CrRegion *lookup_peer(const char *name, const char *hint);
static void forget_region(const char *name);
static void drop_slot(const char *slot);
static void run_forget(CrRegion *r, const char *name, bool must_succeed);
static void forget_group_in(CrRegion *removed, List *regions);

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
 * of member's new slot.
 */
static void
wait_for_confirmed(JoinMember *member, const char *via_region,
				   const char *local_name)
{
	char	   *sql = psprintf("SELECT confirmed_flush_lsn OPERATOR(pg_catalog.>=) '%X/%X'::pg_catalog.pg_lsn"
							   " FROM pg_catalog.pg_replication_slots"
							   " WHERE slot_name OPERATOR(pg_catalog.=) '%s'",
							   LSN_FORMAT_ARGS(member->slot_lsn),
							   cr_slot_name(member->name, via_region));
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   JOIN_CATCHUP_TIMEOUT_MS);

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
		cr_sleep_ms(100);
	}
}

/* COPY FROM callback: the next bytes of the COPY TO STDOUT from the peer */
static int
copy_read_data(void *outbuf, int minread, int maxread)
{
	int			total = 0;

	while (total < maxread && !copy_done)
	{
		if (copy_pos < copy_len)
		{
			int			n = Min(copy_len - copy_pos, maxread - total);

			memcpy((char *) outbuf + total, copy_buf + copy_pos, n);
			copy_pos += n;
			total += n;
			continue;
		}
		if (copy_buf)
		{
			PQfreemem(copy_buf);
			copy_buf = NULL;
		}
		copy_len = PQgetCopyData(copy_conn, &copy_buf, 1);
		copy_pos = 0;
		if (copy_len == 0)
		{
			/* nothing buffered: hand over what we have, or wait */
			if (total >= minread)
				break;
			cr_remote_wait_readable(copy_conn);
			if (!PQconsumeInput(copy_conn))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("lost connection during the initial copy: %s",
								PQerrorMessage(copy_conn))));
		}
		else if (copy_len == -1)
		{
			PGresult   *res = PQgetResult(copy_conn);

			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("initial copy failed: %s", PQresultErrorMessage(res))));
			PQclear(res);
			while ((res = PQgetResult(copy_conn)) != NULL)
				PQclear(res);
			copy_buf = NULL;
			copy_len = 0;
			copy_done = true;
		}
		else if (copy_len < 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("initial copy failed: %s", PQerrorMessage(copy_conn))));
	}
	return total;
}

/*
 * Copy one multi-region table from the via region into the (empty,
 * already enabled) local table, versions included.
 */
static void
copy_table(JoinTable *t, PGconn *conn, const char *via_region)
{
	Oid			relid = RangeVarGetRelid(makeRangeVar(t->nspname, t->relname, -1),
										 RowExclusiveLock, false);
	Relation	rel = table_open(relid, NoLock);
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *attnames = NIL;
	StringInfoData cols;
	ParseState *pstate;
	CopyFromState cstate;
	PGresult   *res;
	CrUserContext user;

	initStringInfo(&cols);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		attnames = lappend(attnames, makeString(pstrdup(NameStr(att->attname))));
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "",
						 quote_identifier(NameStr(att->attname)));
	}

	res = cr_remote_exec(conn,
						 psprintf("COPY %s (%s) TO STDOUT",
								  quote_qualified_identifier(t->nspname, t->relname),
								  cols.data),
						 PGRES_COPY_OUT, via_region);
	PQclear(res);

	copy_conn = conn;
	copy_buf = NULL;
	copy_len = copy_pos = 0;
	copy_done = false;

	pstate = make_parsestate(NULL);
	(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
										 NULL, false, false);

	/*
	 * The copy runs the owner's code: input functions of the columns'
	 * types, defaults, generated columns, CHECK and domain constraints,
	 * index expressions, ENABLE ALWAYS triggers.  It runs as the owner,
	 * with SECURITY_RESTRICTED_OPERATION and an empty search_path, never as
	 * the superuser who joins.  Called from C with a data source, CopyFrom
	 * checks no privilege (DoCopy does), and the owner may write its table
	 * anyway; cosmosrep's catalog writes inside (tombstones) switch to the
	 * bootstrap superuser themselves.
	 */
	cr_switch_to_owner(rel->rd_rel->relowner, &user);
	cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, copy_read_data,
						   attnames, NIL);
	(void) CopyFrom(cstate);
	EndCopyFrom(cstate);
	cr_restore_user(&user);
	table_close(rel, NoLock);
	copy_conn = NULL;
	CommandCounterIncrement();
}

/* the local table that columns 0 and 1 (schema, name) of row i of res name */
static Oid
remote_relid(PGresult *res, int i)
{
	return RangeVarGetRelid(makeRangeVar(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), -1),
							NoLock, false);
}

/*
 * Copy the via region's tombstones, at the copy's snapshot: without them a
 * change older than a delete that the via region had applied before the
 * join would recreate the row here.  Keys are independent of settings
 * and of OIDs (tombstone.c); tables are matched by name.
 */
static void
copy_tombstones(PGconn *conn, const char *via_region)
{
	PGresult   *res = cr_remote_exec(conn,
									 "SELECT n.nspname, c.relname, t.key, t.version, t.base, t.config"
									 " FROM cosmosrep.tombstone t"
									 " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid"
									 " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace",
									 PGRES_TUPLES_OK, via_region);

	for (int i = 0; i < PQntuples(res); i++)
	{
		bytea	   *key = DatumGetByteaPP(DirectFunctionCall1(byteain,
															  CStringGetDatum(PQgetvalue(res, i, 2))));

		cr_tombstone_record(remote_relid(res, i), key, pg_strtoint64(PQgetvalue(res, i, 3)),
							pg_strtoint64(PQgetvalue(res, i, 4)),
							pg_strtoint64(PQgetvalue(res, i, 5)));
	}
	PQclear(res);
}

/*
 * Copy the via region's configuration history, at the copy's snapshot:
 * the copied rows, and the tombstones, were written under those
 * configurations, and their conflicts are decided by them (conflict.c).
 */
static void
copy_policy_history(PGconn *conn, const char *via_region)
{
	PGresult   *res = cr_remote_exec(conn,
									 "SELECT n.nspname, c.relname, h.policy, h.path,"
									 " CASE WHEN h.resolver IS NULL THEN NULL"
									 " ELSE pg_catalog.quote_ident(pn.nspname) OPERATOR(pg_catalog.||) '.'"
									 " OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p.proname) END,"
									 " h.config_version"
									 " FROM cosmosrep.policy_history h"
									 " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) h.relid"
									 " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
									 " LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) h.resolver"
									 " LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.pronamespace",
									 PGRES_TUPLES_OK, via_region);

	for (int i = 0; i < PQntuples(res); i++)
		cr_table_remember_config(remote_relid(res, i), PQgetvalue(res, i, 2),
								 PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
								 PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4),
								 pg_strtoint64(PQgetvalue(res, i, 5)));
	PQclear(res);
}

Datum
cosmosrep_join_region(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *dsn;
	char	   *via;
	CrJoinState  *st = palloc0(sizeof(CrJoinState));
	List	   *tables = NIL;
	JoinMember *via_member = NULL;
	char	   *snapshot = NULL;
	int			new_id = 1;
	bool		writes_everywhere = true;
	int64		writes_version = 0;
	ListCell   *lc;
	PGresult   *res;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("region name, connection string and via must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	dsn = text_to_cstring(PG_GETARG_TEXT_PP(1));
	via = text_to_cstring(PG_GETARG_TEXT_PP(2));

	cr_require_preload();
	cr_validate_region_name(name);
	cr_validate_dsn(dsn);
	cr_validate_dsn(via);
	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cosmosrep.join_region cannot run inside a transaction block")));
	if (cr_local_region_id(true) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this database is already a cosmosrep region")));

	PG_TRY();
	{
		/* 1. the group, as the via region knows it */
		st->viaconn = cr_remote_connect(via, false, "cosmosrep join", "via");
		res = cr_remote_exec(st->viaconn,
							 "SELECT region_id, region_name, dsn, is_local, accepts_writes,"
							 " pg_catalog.max(writes_version) OVER ()"
							 " FROM cosmosrep.region ORDER BY region_id",
							 PGRES_TUPLES_OK, "via");
		for (int i = 0; i < PQntuples(res); i++)
		{
			JoinMember *m = palloc0(sizeof(JoinMember));

			m->id = atoi(PQgetvalue(res, i, 0));
			m->name = pstrdup(PQgetvalue(res, i, 1));
			/* names go into slot names and commands: trust no peer */
			cr_validate_region_name(m->name);
			if (m->id < 1 || m->id > CR_MAX_REGION_ID)
				elog(ERROR, "region \"%s\" has invalid id %d", m->name, m->id);
			m->dsn = pstrdup(PQgetvalue(res, i, 2));
			m->accepts_writes = strcmp(PQgetvalue(res, i, 4), "t") == 0;
			writes_everywhere &= m->accepts_writes;
			writes_version = pg_strtoint64(PQgetvalue(res, i, 5));
			st->members = lappend(st->members, m);
			if (strcmp(PQgetvalue(res, i, 3), "t") == 0)
				via_member = m;
			new_id = Max(new_id, m->id + 1);
			if (strcmp(m->name, name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_OBJECT),
						 errmsg("region \"%s\" already exists", name)));
		}
		PQclear(res);
		if (via_member == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the database named by via is not a cosmosrep region"),
					 errhint("Call cosmosrep.create_region there first.")));
		if (new_id > CR_MAX_REGION_ID)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("a group has at most %d regions", CR_MAX_REGION_ID)));
		via_member->sql = st->viaconn;

		res = cr_remote_exec(st->viaconn,
							 "SELECT n.nspname, c.relname, t.policy, t.path,"
							 " CASE WHEN t.resolver IS NULL THEN NULL"
							 " ELSE pg_catalog.quote_ident(pn.nspname) OPERATOR(pg_catalog.||) '.'"
							 " OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p.proname) END,"
							 " t.config_version"
							 " FROM cosmosrep.replicated_table t"
							 " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid"
							 " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
							 " LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.resolver"
							 " LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.pronamespace"
							 " ORDER BY 1, 2",
							 PGRES_TUPLES_OK, via_member->name);
		for (int i = 0; i < PQntuples(res); i++)
		{
			JoinTable  *t = palloc0(sizeof(JoinTable));

			t->nspname = pstrdup(PQgetvalue(res, i, 0));
			t->relname = pstrdup(PQgetvalue(res, i, 1));
			t->policy = pstrdup(PQgetvalue(res, i, 2));
			t->path = PQgetisnull(res, i, 3) ? NULL : pstrdup(PQgetvalue(res, i, 3));
			t->resolver = PQgetisnull(res, i, 4) ? NULL : pstrdup(PQgetvalue(res, i, 4));
			t->config_version = pg_strtoint64(PQgetvalue(res, i, 5));
			tables = lappend(tables, t);
		}
		PQclear(res);

		/* every local table must exist and be empty before anything changes */
		foreach(lc, tables)
		{
			JoinTable  *t = lfirst(lc);
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

		/* 2. slots here for every member, before this region writes */
		check_plugin_allowed(st->viaconn, via_member->name);
		check_plugin_allowed(NULL, name);
		st->localrepl = cr_remote_connect(dsn, true, "cosmosrep join", name);
		foreach(lc, st->members)
		{
			JoinMember *m = lfirst(lc);

			(void) create_slot(st->localrepl, cr_slot_name(name, m->name), name, NULL);
			m->local_slot_created = true;
		}

		/* 3. the other st->members' slots, and the via region caught up with them */
		foreach(lc, st->members)
		{
			JoinMember *m = lfirst(lc);

			if (m == via_member)
				continue;
			m->sql = cr_remote_connect(m->dsn, false, "cosmosrep join", m->name);
			check_plugin_allowed(m->sql, m->name);
			m->repl = cr_remote_connect(m->dsn, true, "cosmosrep join", m->name);
			m->slot_lsn = create_slot(m->repl, cr_slot_name(m->name, name),
									  m->name, NULL);
			m->slot_created = true;
			wait_for_confirmed(m, via_member->name, name);
		}

		/* 4. the via region's slot and its snapshot */
		via_member->repl = cr_remote_connect(via_member->dsn, true, "cosmosrep join",
											 via_member->name);
		via_member->slot_lsn = create_slot(via_member->repl,
										   cr_slot_name(via_member->name, name),
										   via_member->name, &snapshot);
		via_member->slot_created = true;

		/* local catalog: the group and this region */
		foreach(lc, st->members)
		{
			JoinMember *m = lfirst(lc);
			CrRegion	r = {m->id, m->name, m->dsn, false, 0, false, m->accepts_writes};

			cr_insert_region(&r);
		}
		{
			/* a group with one write region keeps it */
			CrRegion	self = {new_id, name, dsn, true, 0, false, writes_everywhere};

			cr_insert_region(&self);
		}
		cr_write_regions_adopt_version(writes_version);

		/* 5. origins at the start of each slot; copy under the via origin */
		foreach(lc, st->members)
		{
			JoinMember *m = lfirst(lc);
			char	   *origin_name = cr_origin_name(m->name);
			RepOriginId origin = replorigin_by_name(origin_name, true);

			if (origin == InvalidRepOriginId)
				origin = replorigin_create(origin_name);
			replorigin_advance(origin, m->slot_lsn, InvalidXLogRecPtr, true, true);
			if (m == via_member)
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

		{
			int			nestlevel = NewGUCNestLevel();

			(void) set_config_option("session_replication_role", "replica",
									 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
									 true, 0, false);
			cr_remote_command(st->viaconn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
							  via_member->name);
			cr_remote_command(st->viaconn,
							  psprintf("SET TRANSACTION SNAPSHOT %s", quote_literal_cstr(snapshot)),
							  via_member->name);
			foreach(lc, tables)
			{
				JoinTable  *t = lfirst(lc);
				Oid			relid = RangeVarGetRelid(makeRangeVar(t->nspname, t->relname, -1),
													 NoLock, false);

				cr_table_enable(relid, t->policy, t->path, t->resolver,
								t->config_version);
				copy_table(t, st->viaconn, via_member->name);

				/* the clock must run ahead of every copied version */
				SPI_connect();
				SPI_execute(psprintf("SELECT pg_catalog.max(%s) FROM ONLY %s", CR_VERSION_COLUMN,
									 quote_qualified_identifier(t->nspname, t->relname)),
							true, 1);
				{
					bool		isnull;
					Datum		maxv = SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull);

					if (!isnull)
						cr_hlc_observe(DatumGetInt64(maxv));
				}
				SPI_finish();
			}
			copy_tombstones(st->viaconn, via_member->name);
			copy_policy_history(st->viaconn, via_member->name);
			cr_remote_command(st->viaconn, "COMMIT", via_member->name);
			AtEOXact_GUC(true, nestlevel);
		}
		replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
		st->session_origin_set = false;

		/* 6. register this region in every member */
		foreach(lc, st->members)
		{
			JoinMember *m = lfirst(lc);

			if (m->sql == NULL)
				m->sql = cr_remote_connect(m->dsn, false, "cosmosrep join", m->name);

			/*
			 * This region's clock starts past every member's: a member may
			 * purge a tombstone as soon as its clock is past it, and no
			 * write of this region may then be older (stability.c).
			 */
			res = cr_remote_exec(m->sql, "SELECT cosmosrep.current_version()",
								 PGRES_TUPLES_OK, m->name);
			cr_hlc_observe(pg_strtoint64(PQgetvalue(res, 0, 0)));
			PQclear(res);
			{
				const char *params[3] = {psprintf("%d", new_id), name, dsn};

				/* the dsn, which may hold a password, travels as a parameter */
				PQclear(cr_remote_exec_params(m->sql,
											  "SELECT cosmosrep.add_region($1::pg_catalog.int2, $2, $3)",
											  3, params, PGRES_TUPLES_OK, m->name));
			}
		}
	}
	PG_CATCH();
	{
		if (st->session_origin_set)
		{
			replorigin_session_reset();
			replorigin_session_origin = InvalidRepOriginId;
		}
		/* best effort: drop the slots this attempt created */
		foreach(lc, st->members)
		{
			JoinMember *m = lfirst(lc);

			if (m->slot_created && m->repl)
				PQclear(PQexec(m->repl, psprintf("DROP_REPLICATION_SLOT %s", cr_slot_name(m->name, name))));
			if (m->local_slot_created && st->localrepl)
				PQclear(PQexec(st->localrepl, psprintf("DROP_REPLICATION_SLOT %s", cr_slot_name(name, m->name))));
			if (m->repl)
				PQfinish(m->repl);
			if (m->sql && m->sql != st->viaconn)
				PQfinish(m->sql);
		}
		if (st->localrepl)
			PQfinish(st->localrepl);
		if (st->viaconn)
			PQfinish(st->viaconn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	foreach(lc, st->members)
	{
		JoinMember *m = lfirst(lc);

		if (m->repl)
			PQfinish(m->repl);
		if (m->sql && m->sql != st->viaconn)
			PQfinish(m->sql);
	}
	PQfinish(st->localrepl);
	PQfinish(st->viaconn);

	cr_wake_launcher_at_commit();
	PG_RETURN_INT16(new_id);
}

/*
 * Register a region that joins the group; called by join_region through
 * a connection from the joining region.
 */
Datum
cosmosrep_add_region(PG_FUNCTION_ARGS)
{
	int			id = PG_GETARG_INT16(0);
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *dsn = text_to_cstring(PG_GETARG_TEXT_PP(2));
	CrRegion	region = {id, name, dsn, false, 0, false, true};
	ListCell   *lc;

	cr_require_preload();
	cr_local_region_id(false);
	cr_validate_region_name(name);
	cr_validate_dsn(dsn);
	if (cr_get_region_by_name(name) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("region \"%s\" already exists", name)));
	if (cr_get_region_by_id(id) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("region id %d is already used", id)));
	/* a group with one write region keeps it */
	foreach(lc, cr_get_regions())
		region.accepts_writes &= ((CrRegion *) lfirst(lc))->accepts_writes;
	cr_insert_region(&region);
	cr_write_regions_adopt_version(0);
	PG_RETURN_VOID();
}

/*
 * Stop the apply worker streaming from peer_id and wait until it is gone,
 * keeping the launcher from starting another one for a while (until this
 * transaction's removal of the peer commits, in practice).
 */
static void
stop_apply_worker(int peer_id)
{
	CrPeerStatus *ps = NULL;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);

	LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_EXCLUSIVE);
	for (int i = 0; i < cr_peer_status_count(); i++)
	{
		CrPeerStatus *p = cr_peer_status(i);

		if (p->in_use && p->dboid == MyDatabaseId && p->peer_id == peer_id)
		{
			ps = p;
			ps->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60000);
			if (ps->pid > 0)
				kill(ps->pid, SIGTERM);
		}
	}
	LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));

	while (ps != NULL)
	{
		bool		gone;

		LWLockAcquire(cr_shmem_lwlock(CR_LWLOCK_WORKERS), LW_SHARED);
		gone = ps->pid == 0 || kill(ps->pid, 0) != 0;
		LWLockRelease(cr_shmem_lwlock(CR_LWLOCK_WORKERS));
		if (gone)
			break;
		if (GetCurrentTimestamp() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("the apply worker of region %d did not stop", peer_id)));
		cr_sleep_ms(10);
	}
}

/*
 * Another region of the group, by name; hint says what to do instead when
 * name is this region.
 */
static CrRegion *
lookup_peer(const char *name, const char *hint)
{
	CrRegion   *peer = cr_get_region_by_name(name);

	if (peer == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("region \"%s\" does not exist", name)));
	if (peer->is_local)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("region \"%s\" is this region", name),
				 errhint("%s", hint)));
	return peer;
}

/*
 * Remove a peer from this region only: its row, the slot it streams from
 * here and the origin of its stream.
 */
static void
forget_region(const char *name)
{
	CrRegion   *peer = lookup_peer(name, "Remove a region from another member of the group.");
	CrRegion   *local = cr_get_region_by_id(cr_local_region_id(false));
	char	   *slot;


	cr_delete_region(peer->id);
	stop_apply_worker(peer->id);
	replorigin_drop_by_name(cr_origin_name(name), true, false);

	slot = cr_slot_name(local->name, name);
	drop_slot(slot);
	cr_wake_launcher_at_commit();
}

/*
 * Drop a slot that the removed region may still be streaming from, and
 * may reconnect to at any moment: end its walsender and try to drop the
 * slot before the next connection takes it, for at most 30 seconds.
 */
static void
drop_slot(const char *slot)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);
	MemoryContext oldctx = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	while (SearchNamedReplicationSlot(slot, true) != NULL)
	{
		bool		dropped = false;

		SPI_connect();
		SPI_execute(psprintf("SELECT pg_catalog.pg_terminate_backend(active_pid, 5000)"
							 " FROM pg_catalog.pg_replication_slots"
							 " WHERE slot_name OPERATOR(pg_catalog.=) %s AND active_pid IS NOT NULL",
							 quote_literal_cstr(slot)), false, 0);
		SPI_finish();

		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			ReplicationSlotDrop(slot, true);
			ReleaseCurrentSubTransaction();
			dropped = true;
		}
		PG_CATCH();
		{
			/* taken again meanwhile: try once more */
			MemoryContextSwitchTo(oldctx);
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldctx);
		CurrentResourceOwner = oldowner;

		if (dropped)
			break;
		if (GetCurrentTimestamp() > deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("replication slot \"%s\" stays in use", slot),
					 errhint("Stop the region that streams from it, then call the function again.")));
		cr_sleep_ms(10);
	}
}

Datum
cosmosrep_forget_region(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	forget_region(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * Remove a region from the group: forget it here and in every other
 * remaining region.
 */
/*
 * Remove a region from the group.  The removed region forgets the group
 * first, when it can be reached, so that it stops streaming from the
 * others; then every remaining region forgets it.
 */
Datum
cosmosrep_remove_region(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CrRegion   *removed;
	List	   *regions;
	ListCell   *lc;

	cr_require_preload();
	regions = cr_get_regions();
	removed = cr_get_region_by_name(name);
	if (removed != NULL && !removed->is_local)
		forget_group_in(removed, regions);

	forget_region(name);
	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);

		if (r->is_local || strcmp(r->name, name) == 0)
			continue;
		run_forget(r, name, true);
	}
	PG_RETURN_VOID();
}

/*
 * Call cosmosrep.forget_region(name) in region r; with must_succeed false
 * an unreachable region is only reported.
 */
static void
run_forget(CrRegion *r, const char *name, bool must_succeed)
{
	PGconn	   *conn;

	if (!must_succeed)
	{
		MemoryContext oldctx = CurrentMemoryContext;

		PG_TRY();
		{
			run_forget(r, name, true);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(oldctx);
			edata = CopyErrorData();
			FlushErrorState();
			ereport(WARNING,
					(errmsg("region \"%s\" could not forget region \"%s\": %s",
							r->name, name, edata->message)));
			FreeErrorData(edata);
		}
		PG_END_TRY();
		return;
	}

	conn = cr_remote_connect(r->dsn, false, "cosmosrep remove_region", r->name);
	PG_TRY();
	{
		PQclear(cr_remote_exec(conn,
							   psprintf("SELECT cosmosrep.forget_region(%s)",
										quote_literal_cstr(name)),
							   PGRES_TUPLES_OK, r->name));
	}
	PG_FINALLY();
	{
		PQfinish(conn);
	}
	PG_END_TRY();
}

/* the removed region forgets every other region, if it can be reached */
static void
forget_group_in(CrRegion *removed, List *regions)
{
	ListCell   *lc;

	foreach(lc, regions)
	{
		CrRegion   *r = lfirst(lc);

		if (r->id != removed->id)
			run_forget(removed, r->name, false);
	}
}

static void
set_paused(const char *name, bool paused)
{
	CrRegion   *peer;

	cr_require_preload();
	peer = lookup_peer(name, "Pause replication from the other regions instead.");
	cr_set_region_paused(peer->id, paused);
}

Datum
cosmosrep_pause_region(PG_FUNCTION_ARGS)
{
	set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	PG_RETURN_VOID();
}

Datum
cosmosrep_resume_region(PG_FUNCTION_ARGS)
{
	set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	PG_RETURN_VOID();
}
