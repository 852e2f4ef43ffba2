/*-------------------------------------------------------------------------
 *
 * remote.c
 *	  libpq connections from cosmosrep backends and workers to other regions.
 *
 * NOTES
 *	  Everything here is non-blocking libpq driven by WaitLatchOrSocket, so
 *	  a backend or worker waiting on a peer still answers SIGTERM, query
 *	  cancel and postmaster death.  Errors are reported with ereport and
 *	  name the region; the caller owns the PGconn and must PQfinish it
 *	  (including on error, from a PG_FINALLY block).  Every connection pins
 *	  the output formats that values sent as text depend on (DateStyle,
 *	  IntervalStyle, extra_float_digits), whatever the peer's defaults are.
 *	  SQL connections set search_path to '' first; all cosmosrep SQL is
 *	  schema-qualified.
 *
 * IDENTIFICATION
 *	  src/remote.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "protocol.h"
#include "remote.h"

static const char *session_options(void);
static char *conn_error(PGconn *conn);
static PGresult *remote_exec_last(PGconn *conn, const char *sql, int nparams,
								  const char *const *values, const char *region);
static PGconn *remote_connect(const char *dsn, bool replication,
							  const char *appname, const char *region,
							  const char *const *extra_keys,
							  const char *const *extra_vals);

/*
 * The server options of every connection to a region (libpq's "options"):
 * values travel as text, so pin the formats that text depends on
 * (cr_text_formats) whatever the peer's defaults are; and pin the name lookup (an empty search_path: all of
 * cosmosrep's SQL is schema-qualified) and row security of everything
 * run on the peer.
 */
static const char *
session_options(void)
{
	static char *options = NULL;

	if (options == NULL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		for (const CrTextFormat *f = cr_text_formats; f->name; f++)
			appendStringInfo(&buf, "-c %s=%s ", f->name, f->value);
		appendStringInfoString(&buf, "-c search_path= -c row_security=off");
		options = MemoryContextStrdup(TopMemoryContext, buf.data);
		pfree(buf.data);
	}
	return options;
}

/* libpq's error text without its trailing newline, in palloc'd memory */
static char *
conn_error(PGconn *conn)
{
	char	   *msg = pstrdup(PQerrorMessage(conn));
	size_t		len = strlen(msg);

	while (len > 0 && msg[len - 1] == '\n')
		msg[--len] = '\0';
	return msg;
}

/*
 * Connect to a region.  With replication, the connection speaks the
 * replication protocol in the database named by the dsn.
 */
PGconn *
cr_remote_connect(const char *dsn, bool replication, const char *appname,
				  const char *region)
{
	return remote_connect(dsn, replication, appname, region, NULL, NULL);
}

/*
 * Connect to a region as cr_remote_connect does, with TCP keepalives: the
 * kernel probes a connection idle for idle_s seconds every interval_s
 * seconds, and drops it after count probes unanswered.  Keepalive options
 * in the dsn take precedence.
 */
PGconn *
cr_remote_connect_keepalives(const char *dsn, bool replication,
							 const char *appname, const char *region,
							 int idle_s, int interval_s, int count)
{
	const char *keys[] = {
		"keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", NULL
	};
	const char *vals[] = {
		"1", psprintf("%d", idle_s), psprintf("%d", interval_s),
		psprintf("%d", count), NULL
	};

	return remote_connect(dsn, replication, appname, region, keys, vals);
}

/*
 * Connect; the options extra_keys and extra_vals (NULL-terminated, or
 * NULL) come before the dsn's, which therefore override them.
 */
static PGconn *
remote_connect(const char *dsn, bool replication, const char *appname,
			   const char *region, const char *const *extra_keys,
			   const char *const *extra_vals)
{
	const char *keys[12];
	const char *vals[12];
	int			n = 0;
	PGconn	   *conn;
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	for (int i = 0; extra_keys != NULL && extra_keys[i] != NULL && n < 6; i++)
	{
		keys[n] = extra_keys[i];
		vals[n++] = extra_vals[i];
	}
	keys[n] = "dbname";
	vals[n++] = dsn;
	if (replication)
	{
		keys[n] = "replication";
		vals[n++] = "database";
	}
	keys[n] = "fallback_application_name";
	vals[n++] = appname;
	keys[n] = "client_encoding";
	vals[n++] = GetDatabaseEncodingName();
	keys[n] = "options";
	vals[n++] = session_options();
	keys[n] = NULL;
	vals[n] = NULL;

	conn = PQconnectStartParams(keys, vals, true);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while connecting to region \"%s\"", region)));

	while (PQstatus(conn) != CONNECTION_BAD && status != PGRES_POLLING_OK &&
		   status != PGRES_POLLING_FAILED)
	{
		int			events = status == PGRES_POLLING_READING ?
			WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
		int			rc;

		rc = WaitLatchOrSocket(MyLatch, events | WL_LATCH_SET | WL_EXIT_ON_PM_DEATH,
							   PQsocket(conn), -1L, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			if (InterruptPending)
			{
				PQfinish(conn);
				CHECK_FOR_INTERRUPTS();
			}
		}
		status = PQconnectPoll(conn);
	}

	if (PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = conn_error(conn);

		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to region \"%s\": %s", region, msg)));
	}

	return conn;
}

/*
 * Wait until the connection has input, answering interrupts meanwhile.
 */
void
cr_remote_wait_readable(PGconn *conn)
{
	int			rc;

	rc = WaitLatchOrSocket(MyLatch, WL_SOCKET_READABLE | WL_LATCH_SET | WL_EXIT_ON_PM_DEATH,
						   PQsocket(conn), -1L, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Run one statement and return its last result, which must have status
 * expected.  The caller PQclears the result.
 */
PGresult *
cr_remote_exec(PGconn *conn, const char *sql, ExecStatusType expected,
			   const char *region)
{
	return cr_remote_exec_params(conn, sql, 0, NULL, expected, region);
}

/*
 * The same with text parameters $1..$nparams.  Values that must not reach
 * a server log, such as connection strings, travel as parameters: neither
 * the remote statement text nor this side's error context holds them.
 */
PGresult *
cr_remote_exec_params(PGconn *conn, const char *sql, int nparams,
					  const char *const *values, ExecStatusType expected,
					  const char *region)
{
	PGresult   *last = remote_exec_last(conn, sql, nparams, values, region);

	if (last == NULL || PQresultStatus(last) != expected)
		cr_remote_fail(conn, last, sql, region);
	return last;
}

/*
 * Raise the error of a statement that failed: last is its last result
 * (PQcleared here) or NULL.
 */
void
cr_remote_fail(PGconn *conn, PGresult *last, const char *sql, const char *region)
{
	char	   *msg = last ? cr_remote_result_message(last) : conn_error(conn);

	if (last)
		PQclear(last);
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_EXCEPTION),
			 errmsg("query on region \"%s\" failed: %s", region, msg),
			 errcontext("remote query: %s", sql)));
}

/*
 * Run one statement and return its last result whatever its status, or
 * NULL if there was none; errors of the connection are raised.  The
 * caller PQclears the result.
 */
PGresult *
cr_remote_exec_any(PGconn *conn, const char *sql, const char *region)
{
	return remote_exec_last(conn, sql, 0, NULL, region);
}

/* a failed result's message (with DETAIL and HINT), without the last newline */
char *
cr_remote_result_message(const PGresult *res)
{
	char	   *msg = pstrdup(PQresultErrorMessage(res));
	size_t		len = strlen(msg);

	while (len > 0 && msg[len - 1] == '\n')
		msg[--len] = '\0';
	return msg;
}

/* send a statement and collect its last result (see cr_remote_exec_params) */
static PGresult *
remote_exec_last(PGconn *conn, const char *sql, int nparams,
				 const char *const *values, const char *region)
{
	PGresult   *last = NULL;
	PGresult   *res;
	int			sent;

	sent = nparams > 0 ?
		PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0) :
		PQsendQuery(conn, sql);
	if (!sent)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send query to region \"%s\": %s",
						region, conn_error(conn))));
	for (;;)
	{
		while (PQisBusy(conn))
		{
			cr_remote_wait_readable(conn);
			if (!PQconsumeInput(conn))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("lost connection to region \"%s\": %s",
								region, conn_error(conn))));
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		if (last)
			PQclear(last);
		last = res;
		/* CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT keeps the result open */
		if (PQresultStatus(res) == PGRES_COPY_OUT || PQresultStatus(res) == PGRES_COPY_BOTH)
			break;
	}
	return last;
}

/* run a statement that returns no rows */
void
cr_remote_command(PGconn *conn, const char *sql, const char *region)
{
	PQclear(cr_remote_exec(conn, sql, PGRES_COMMAND_OK, region));
}
