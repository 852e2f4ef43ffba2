/*-------------------------------------------------------------------------
 *
 * join_copy.c
 *	  The initial copy of a joining region: the rows of every multi-region
 *	  table, the tombstones and the configuration history, read from the
 *	  via region at the snapshot its new slot exported.
 *
 * NOTES
 *	  This is what core's tablesync.c does for a subscription, in one pass
 *	  and in the joining backend: join.c has created the via region's slot
 *	  for the new region with an exported snapshot, left the replication
 *	  connection idle (which keeps the snapshot valid) and set the via
 *	  region's origin as session origin.  Here the via region's SQL
 *	  connection opens a REPEATABLE READ transaction at that snapshot, and
 *	  for each table, in order:
 *
 *	  1. enable the local table with the via region's configuration;
 *	  2. COPY ... TO STDOUT on the via region, fed into the executor's
 *		 CopyFrom through copy_read_data, as the table's owner;
 *	  3. advance the local clock past every copied version.
 *
 *	  Then the tombstones and the configuration history, at the same
 *	  snapshot, and COMMIT.  The rows land with session_replication_role =
 *	  replica (ordinary triggers, including the row trigger, stay quiet:
 *	  the versions are copied as they are) and with the via origin, so the
 *	  new region's slots never send them back.  Everything happens in the
 *	  caller's transaction; an error leaves nothing behind here, and
 *	  join.c's teardown closes the connections.
 *
 *	  One copy runs at a time in a backend: the COPY data source is the
 *	  file-level state below, valid between BeginCopyFrom and EndCopyFrom.
 *
 * IDENTIFICATION
 *	  src/join_copy.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/copy.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "hlc.h"
#include "join_copy.h"
#include "names.h"
#include "remote.h"
#include "run_as.h"
#include "tables.h"
#include "tombstone.h"

/* COPY data source of the copy in progress */
static PGconn *copy_conn = NULL;
static char *copy_buf = NULL;
static int	copy_len = 0;
static int	copy_pos = 0;
static bool copy_done = false;

static int	copy_read_data(void *outbuf, int minread, int maxread);
static void copy_table(CrJoinTable *t, PGconn *conn, const char *via_region);
static void observe_copied_versions(CrJoinTable *t);
static Oid	remote_relid(PGresult *res, int i);
static void copy_tombstones(PGconn *conn, const char *via_region);
static void copy_policy_history(PGconn *conn, const char *via_region);

/*
 * Copy everything the joining region needs from the via region, at the
 * snapshot that the via region's slot for it exported: each table of
 * tables (of CrJoinTable), enabled here first, then the tombstones and the
 * configuration history.  conn is the via region's SQL connection, idle;
 * the caller has set the via region's origin as session origin.
 */
void
cr_join_copy_at_snapshot(PGconn *conn, const char *via_region,
						 const char *snapshot, List *tables)
{
	int			nestlevel = NewGUCNestLevel();
	ListCell   *lc;

	(void) set_config_option("session_replication_role", "replica",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	cr_remote_command(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
					  via_region);
	cr_remote_command(conn,
					  psprintf("SET TRANSACTION SNAPSHOT %s", quote_literal_cstr(snapshot)),
					  via_region);
	foreach(lc, tables)
	{
		CrJoinTable *t = lfirst(lc);
		Oid			relid = RangeVarGetRelid(makeRangeVar(t->nspname, t->relname, -1),
											 NoLock, false);

		cr_table_enable(relid, t->policy, t->path, t->resolver,
						t->config_version);
		copy_table(t, conn, via_region);
		observe_copied_versions(t);
	}
	copy_tombstones(conn, via_region);
	copy_policy_history(conn, via_region);
	cr_remote_command(conn, "COMMIT", via_region);
	AtEOXact_GUC(true, nestlevel);
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
copy_table(CrJoinTable *t, PGconn *conn, const char *via_region)
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

	/*
	 * COPY TO reads no partitioned table; its query form reads the rows of
	 * every partition (the link role's SELECT on the partitioned table
	 * covers them).  CopyFrom routes each into its partition here.
	 */
	res = cr_remote_exec(conn,
						 rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ?
						 psprintf("COPY (SELECT %s FROM %s) TO STDOUT", cols.data,
								  quote_qualified_identifier(t->nspname, t->relname)) :
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

/* the clock must run ahead of every version copied into t */
static void
observe_copied_versions(CrJoinTable *t)
{
	bool		isnull;
	Datum		maxv;

	SPI_connect();
	/* ONLY, but for a partitioned table, whose rows are in its partitions */
	SPI_execute(psprintf("SELECT pg_catalog.max(%s) FROM %s%s", CR_VERSION_COLUMN,
						 get_rel_relkind(RangeVarGetRelid(makeRangeVar(t->nspname, t->relname, -1),
														  NoLock, false)) == RELKIND_PARTITIONED_TABLE ?
						 "" : "ONLY ",
						 quote_qualified_identifier(t->nspname, t->relname)),
				true, 1);
	maxv = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		cr_hlc_observe(DatumGetInt64(maxv));
	SPI_finish();
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
									 "SELECT n.nspname, c.relname, t.key, t.version, t.base, t.config, t.seen"
									 " FROM cosmosrep.tombstone t"
									 " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid"
									 " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace",
									 PGRES_TUPLES_OK, via_region);

	for (int i = 0; i < PQntuples(res); i++)
	{
		bytea	   *key = DatumGetByteaPP(DirectFunctionCall1(byteain,
															  CStringGetDatum(PQgetvalue(res, i, 2))));

		bytea	   *seen = PQgetisnull(res, i, 6) ? NULL :
			DatumGetByteaPP(DirectFunctionCall1(byteain,
												CStringGetDatum(PQgetvalue(res, i, 6))));

		cr_tombstone_record(remote_relid(res, i), key, pg_strtoint64(PQgetvalue(res, i, 3)),
							pg_strtoint64(PQgetvalue(res, i, 4)),
							pg_strtoint64(PQgetvalue(res, i, 5)), seen);
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
									 "SELECT n.nspname, c.relname, h.policy, h.path, h.resolver, h.config_version"
									 " FROM cosmosrep.policy_history h"
									 " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) h.relid"
									 " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace",
									 PGRES_TUPLES_OK, via_region);

	for (int i = 0; i < PQntuples(res); i++)
		cr_table_remember_config(remote_relid(res, i), PQgetvalue(res, i, 2),
								 PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
								 PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4),
								 pg_strtoint64(PQgetvalue(res, i, 5)));
	PQclear(res);
}
