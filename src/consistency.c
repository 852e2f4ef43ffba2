/*-------------------------------------------------------------------------
 *
 * consistency.c
 *	  Consistency levels and session tokens (read your writes across
 *	  regions).
 *
 * NOTES
 *	  cosmosrep.default_consistency is the server-wide level;
 *	  cosmosrep.consistency lets a session relax it, never strengthen it
 *	  (its check hook refuses a stronger level).  Under session (the
 *	  default) or a stronger level, a session that sets a session token
 *	  waits, before its next statement runs, until this region has applied
 *	  what the token names, or fails after cosmosrep.session_wait_timeout.
 *	  consistent_prefix and eventual do not wait: every region applies each
 *	  other region's transactions whole and in commit order, so a reader
 *	  always sees a prefix of each region's history.
 *
 *	  A token lists, per region id, a position in that region's WAL:
 *	  "1:0/1A2B3C4,3:0/5D6E7F0".  After each commit that wrote rows of
 *	  multi-region tables, the session's token gains this region's commit
 *	  position and is reported to the client (cosmosrep.session_token is
 *	  GUC_REPORT: libpq shows it as a parameter status, PostgreSQL's
 *	  counterpart of Cosmos DB's x-ms-session-token header).  A position
 *	  of another region is applied here once the replication origin of
 *	  that region has reached it.
 *
 *	  strong needs a single write region (failover.c): a statement under
 *	  strong is refused while several regions accept writes.  In the write
 *	  region, a commit that wrote multi-region rows waits, with
 *	  synchronous_commit = remote_apply, until the regions that
 *	  synchronous_standby_names names (every region, or a quorum) have
 *	  applied it: PostgreSQL's synchronous replication, whose standbys are
 *	  the other regions' apply workers.  In another region, a statement
 *	  first asks the write region for the end of its last commit that
 *	  wrote multi-region rows (cosmosrep.last_write_position) and waits
 *	  until this region has applied that far, like a session token.
 *
 * IDENTIFICATION
 *	  src/consistency.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "libpq-fe.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "names.h"
#include "pgstat.h"
#include "replication/syncrep.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "consistency.h"
#include "hlc.h"
#include "peers.h"
#include "remote.h"
#include "shmem.h"
#include "staleness.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(cosmosrep_session_token);
PG_FUNCTION_INFO_V1(cosmosrep_last_write_position);

typedef enum CrConsistency
{
	CR_EVENTUAL = 1,
	CR_CONSISTENT_PREFIX,
	CR_SESSION,
	CR_BOUNDED_STALENESS,
	CR_STRONG
} CrConsistency;

static const struct config_enum_entry consistency_levels[] = {
	{"eventual", CR_EVENTUAL, false},
	{"consistent_prefix", CR_CONSISTENT_PREFIX, false},
	{"session", CR_SESSION, false},
	{"bounded_staleness", CR_BOUNDED_STALENESS, false},
	{"strong", CR_STRONG, false},
	{NULL, 0, false}
};

/* a position of one region in a session token */
typedef struct TokenEntry
{
	int			region_id;
	XLogRecPtr	lsn;
} TokenEntry;

static int	default_consistency = CR_SESSION;
static char *session_consistency = NULL;
static char *session_token = NULL;
int			cr_session_wait_timeout_ms = 5000;

/* the token last found applied here, so that it is checked once */
static char *applied_token = NULL;

/* the statements of the wait itself do not wait */
static bool waiting_for_token = false;

/* the statement a client sent has been checked under strong */
static bool strong_checked = false;

static ExecutorStart_hook_type prev_executor_start = NULL;
static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorFinish_hook_type prev_executor_finish = NULL;

/*
 * How deep in executor calls this backend is: the statements that a
 * statement runs (in functions) are checked with it, not each again.
 */
static int	executor_depth = 0;

/* a connection to the write region, for strong reads elsewhere */
static PGconn *write_region_conn = NULL;
static int	write_region_conn_id = 0;

static int	level_of(const char *name);
static int	parse_token(const char *token, TokenEntry *entries, int max);
static bool check_consistency(char **newval, void **extra, GucSource source);
static bool check_session_token(char **newval, void **extra, GucSource source);
static const char *show_session_token(void);
static bool check_default_consistency(int *newval, void **extra, GucSource source);
static bool touches_multi_region(PlannedStmt *stmt);
static void consistency_executor_start(QueryDesc *queryDesc, int eflags);
static void consistency_executor_run(QueryDesc *queryDesc, ScanDirection direction,
									 uint64 count, bool execute_once);
static void consistency_executor_finish(QueryDesc *queryDesc);
static void wait_for_token(void);
static void wait_for_position(CrRegion *region, XLogRecPtr lsn, const char *what,
							  TimestampTz deadline);
static void strong_read(void);

/* the level named name, 0 for none */
static int
level_of(const char *name)
{
	for (const struct config_enum_entry *e = consistency_levels; e->name; e++)
	{
		if (pg_strcasecmp(e->name, name) == 0)
			return e->val;
	}
	return 0;
}

/*
 * Parse a token into at most max entries; returns how many, or -1 if it
 * is malformed.
 */
static int
parse_token(const char *token, TokenEntry *entries, int max)
{
	int			n = 0;
	const char *p = token;

	while (*p)
	{
		unsigned int hi;
		unsigned int lo;
		int			id;
		int			len;

		if (n == max ||
			sscanf(p, "%d:%X/%X%n", &id, &hi, &lo, &len) != 3 ||
			id < 1 || id > CR_MAX_REGION_ID)
			return -1;
		entries[n].region_id = id;
		entries[n].lsn = ((uint64) hi << 32) | lo;
		n++;
		p += len;
		if (*p == ',' && p[1] != '\0')
			p++;
		else if (*p != '\0')
			return -1;
	}
	return n;
}

static bool
check_consistency(char **newval, void **extra, GucSource source)
{
	int			level;

	if (**newval == '\0')
		return true;
	level = level_of(*newval);
	if (level == 0)
	{
		GUC_check_errdetail("The consistency levels are strong, bounded_staleness, session, consistent_prefix and eventual.");
		return false;
	}
	if (level > default_consistency)
	{
		GUC_check_errmsg("consistency level \"%s\" is stronger than the server-wide level \"%s\"",
						 *newval, consistency_levels[default_consistency - 1].name);
		GUC_check_errhint("A session may only relax the consistency level set by cosmosrep.default_consistency.");
		return false;
	}
	return true;
}

/*
 * ALTER SYSTEM SET cosmosrep.default_consistency = 'strong' in a database
 * whose group has several write regions is refused where it is made, as
 * Cosmos DB refuses strong with several write regions.  Only there: the
 * check runs without a transaction (a reload, the postmaster) and in
 * databases without a region too, where it cannot know; a value that
 * passes anyway refuses only statements that read or write multi-region
 * tables (strong_read), never a session's other statements.
 */
static bool
check_default_consistency(int *newval, void **extra, GucSource source)
{
	int			writers = 0;
	ListCell   *lc;

	if (*newval != CR_STRONG || source != PGC_S_FILE || !IsTransactionState() ||
		!OidIsValid(get_namespace_oid(COSMOSREP_SCHEMA, true)))
		return true;
	PushActiveSnapshot(GetTransactionSnapshot());
	if (cr_local_region_id(true) > 0)
	{
		foreach(lc, cr_get_regions_cached())
			writers += ((CrRegion *) lfirst(lc))->accepts_writes ? 1 : 0;
	}
	PopActiveSnapshot();
	if (writers > 1)
	{
		GUC_check_errmsg("consistency level \"strong\" needs a single write region");
		GUC_check_errdetail("%d regions accept writes.", writers);
		GUC_check_errhint("Call cosmosrep.set_multiple_write_regions(false) first.");
		return false;
	}
	return true;
}

/*
 * Whether a statement reads or writes a multi-region table (one with
 * cosmosrep's columns): a syscache lookup per table of its range table.
 */
static bool
touches_multi_region(PlannedStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind == RTE_RELATION &&
			get_attnum(rte->relid, CR_VERSION_COLUMN) != InvalidAttrNumber)
			return true;
	}
	return false;
}

static bool
check_session_token(char **newval, void **extra, GucSource source)
{
	TokenEntry	entries[CR_MAX_REGION_ID];

	if (parse_token(*newval, entries, CR_MAX_REGION_ID) < 0)
	{
		GUC_check_errmsg("invalid session token \"%s\"", *newval);
		GUC_check_errdetail("A session token lists region:position pairs, such as \"1:0/1A2B3C4,2:0/5D6E7F0\".");
		return false;
	}
	return true;
}

/* the settings; defined whether or not the library is preloaded */
void
cr_consistency_define_settings(void)
{
	DefineCustomEnumVariable("cosmosrep.default_consistency",
							 "The server-wide consistency level; sessions may relax it.",
							 NULL,
							 &default_consistency,
							 CR_SESSION, consistency_levels,
							 PGC_SIGHUP, 0, check_default_consistency, NULL, NULL);
	DefineCustomStringVariable("cosmosrep.consistency",
							   "This session's consistency level: cosmosrep.default_consistency or a weaker one.",
							   "Empty means the server-wide level.",
							   &session_consistency,
							   "", PGC_USERSET, 0,
							   check_consistency, NULL, NULL);
	DefineCustomStringVariable("cosmosrep.session_token",
							   "What this session has written or must see: region:position pairs.",
							   "Set it to a token from another region to read your writes here.",
							   &session_token,
							   "", PGC_USERSET, GUC_REPORT,
							   check_session_token, NULL, show_session_token);
	DefineCustomIntVariable("cosmosrep.session_wait_timeout",
							"How long a statement waits for this region to apply the session token.",
							NULL,
							&cr_session_wait_timeout_ms,
							5000, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* waiting for session tokens and reporting them: preloaded only */
void
cr_consistency_install_hooks(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = consistency_executor_start;
	prev_executor_run = ExecutorRun_hook;
	ExecutorRun_hook = consistency_executor_run;
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = consistency_executor_finish;
}

static void
consistency_executor_run(QueryDesc *queryDesc, ScanDirection direction,
						 uint64 count, bool execute_once)
{
	executor_depth++;
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		executor_depth--;
	}
	PG_END_TRY();
}

static void
consistency_executor_finish(QueryDesc *queryDesc)
{
	executor_depth++;
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		executor_depth--;
	}
	PG_END_TRY();
}

/* whether the server-wide level is bounded_staleness (writes are bounded) */
bool
cr_consistency_bounded(void)
{
	return default_consistency == CR_BOUNDED_STALENESS;
}

/* the level in force for this session */
static int
effective_level(void)
{
	int			level = session_consistency && *session_consistency ?
		level_of(session_consistency) : default_consistency;

	return Min(level, default_consistency);
}

static void
consistency_executor_start(QueryDesc *queryDesc, int eflags)
{
	bool		top = executor_depth == 0;
	bool		strong;
	bool		bounded = top && effective_level() == CR_BOUNDED_STALENESS;
	bool		token = top && session_token && *session_token &&
		effective_level() >= CR_SESSION &&
		(applied_token == NULL || strcmp(applied_token, session_token) != 0);

	/*
	 * Strong: once per statement a client sends, at the first statement it
	 * runs (itself, or one of a function it calls) that reads or writes a
	 * multi-region table; other statements are not its business.
	 */
	if (top)
		strong_checked = false;
	strong = !strong_checked && effective_level() == CR_STRONG &&
		MyBackendType == B_BACKEND && touches_multi_region(queryDesc->plannedstmt);
	if (strong)
		strong_checked = true;

	/*
	 * Sessions of clients only (not apply workers, which run statements
	 * too), and their top-level statements but for strong.
	 */
	if (!waiting_for_token && (strong || bounded || token) &&
		IsTransactionState() && MyBackendType == B_BACKEND)
	{
		waiting_for_token = true;
		PG_TRY();
		{
			bool		refresh = false;

			if (cr_local_region_id(true) > 0)
			{
				if (token)
					wait_for_token();
				if (strong)
					strong_read();
				refresh = token || strong;
				if (bounded)
					refresh |= cr_staleness_before_read(cr_session_wait_timeout_ms);
			}

			/*
			 * The statement's snapshot was taken before it got here, maybe
			 * before the positions just checked were applied: it reads with
			 * a new one (in READ COMMITTED; a transaction snapshot cannot
			 * move).
			 */
			if (refresh && !IsolationUsesXactSnapshot() && queryDesc->snapshot != NULL)
			{
				UnregisterSnapshot(queryDesc->snapshot);
				queryDesc->snapshot = RegisterSnapshot(GetTransactionSnapshot());
			}
		}
		PG_FINALLY();
		{
			waiting_for_token = false;
		}
		PG_END_TRY();
	}
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/*
 * Wait until this region has applied the session token, or fail after
 * cosmosrep.session_wait_timeout with the region that is behind.
 */
static void
wait_for_token(void)
{
	TokenEntry	entries[CR_MAX_REGION_ID];
	int			n = parse_token(session_token, entries, CR_MAX_REGION_ID);
	int			local_id = cr_local_region_id(false);
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   cr_session_wait_timeout_ms);

	for (int i = 0; i < n; i++)
	{
		CrRegion   *region = cr_get_region_by_id(entries[i].region_id);

		if (region == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("session token names region id %d, which is not in this group",
							entries[i].region_id)));
		if (entries[i].region_id == local_id)
		{
			if (entries[i].lsn > GetXLogInsertRecPtr())
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("session token is ahead of region \"%s\"", region->name),
						 errdetail("It names position %X/%X; this region has written up to %X/%X.",
								   LSN_FORMAT_ARGS(entries[i].lsn),
								   LSN_FORMAT_ARGS(GetXLogInsertRecPtr()))));
			continue;
		}
		wait_for_position(region, entries[i].lsn, "the session token's", deadline);
	}
	if (applied_token)
		pfree(applied_token);
	applied_token = MemoryContextStrdup(TopMemoryContext, session_token);
}

/*
 * Wait until this region has applied region's changes up to lsn (what,
 * for the error), or fail at deadline with "session not available".
 */
static void
wait_for_position(CrRegion *region, XLogRecPtr lsn, const char *what,
				  TimestampTz deadline)
{
	RepOriginId origin = replorigin_by_name(cr_origin_name(region->name), true);

	for (;;)
	{
		XLogRecPtr	applied = origin == InvalidRepOriginId ? InvalidXLogRecPtr :
			replorigin_get_progress(origin, false);

		if (applied >= lsn)
		{
			/*
			 * The origin advances in the commit record, a moment before the
			 * commit is visible: wait for the apply worker's transaction in
			 * flight, so that a snapshot taken next includes it.
			 */
			PGPROC	   *proc = BackendPidGetProc(cr_peer_worker_pid(MyDatabaseId, region->id));
			TransactionId xid = proc ? proc->xid : InvalidTransactionId;

			if (TransactionIdIsValid(xid))
				XactLockTableWait(xid, NULL, NULL, XLTW_None);
			return;
		}
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("session not available in this region"),
					 errdetail("Region \"%s\" is behind: it has applied region \"%s\" up to %X/%X, %llu bytes short of %s %X/%X.",
							   cr_get_region_by_id(cr_local_region_id(false))->name,
							   region->name, LSN_FORMAT_ARGS(applied),
							   (unsigned long long) (lsn - applied), what,
							   LSN_FORMAT_ARGS(lsn)),
					 errhint("Retry, read in the region that wrote, or relax cosmosrep.consistency.")));
		cr_sleep_ms(10);
	}
}

/* whether the server-wide level is strong (which needs one write region) */
bool
cr_consistency_requires_single_writer(void)
{
	return default_consistency == CR_STRONG;
}

/*
 * Before a statement under strong: refuse it while several regions accept
 * writes; outside the write region, wait until this region has applied
 * every commit of the write region that wrote multi-region rows before
 * now.
 */
static void
strong_read(void)
{
	CrRegion   *writer = NULL;
	int			writers = 0;
	ListCell   *lc;
	PGresult   *res;
	XLogRecPtr	lsn;

	foreach(lc, cr_get_regions_cached())
	{
		CrRegion   *r = lfirst(lc);

		if (r->accepts_writes)
		{
			writers++;
			writer = r;
		}
	}
	if (writers != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("consistency level \"strong\" needs a single write region"),
				 errdetail("%d regions accept writes.", writers),
				 errhint("Call cosmosrep.set_multiple_write_regions(false), or relax cosmosrep.consistency.")));
	if (writer->is_local)
		return;

	if (write_region_conn != NULL &&
		(write_region_conn_id != writer->id || PQstatus(write_region_conn) != CONNECTION_OK))
	{
		PQfinish(write_region_conn);
		write_region_conn = NULL;
	}
	if (write_region_conn == NULL)
	{
		write_region_conn = cr_remote_connect(writer->dsn, false, "cosmosrep strong read",
											  writer->name);
		write_region_conn_id = writer->id;
	}
	res = cr_remote_exec(write_region_conn, "SELECT cosmosrep.last_write_position()",
						 PGRES_TUPLES_OK, writer->name);
	lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
										  CStringGetDatum(PQgetvalue(res, 0, 0))));
	PQclear(res);
	wait_for_position(writer, lsn, "the write region's last write",
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 cr_session_wait_timeout_ms));
}

/*
 * The regions whose positions a session token gains when the session
 * reads (monotonic reads): this region, and each other region's origin.
 * Read before commit (it needs the catalog), used at commit.
 */
typedef struct TokenRegion
{
	int			region_id;
	bool		is_local;
	RepOriginId origin;			/* InvalidRepOriginId: none yet (no change
								 * of the region applied here) */
} TokenRegion;

static TokenRegion token_regions[CR_MAX_REGION_ID];
static int	n_token_regions = 0;
static uint64 token_regions_generation = 0;
static bool token_regions_complete = false; /* every region has an origin */

/*
 * Whether this transaction's commit advances the session token by what it
 * read: once the session holds a token that it has waited for (a token
 * just set is checked, and waited for, by the next statement first).
 */
static bool
advances_token(void)
{
	return session_token && *session_token && effective_level() >= CR_SESSION &&
		MyBackendType == B_BACKEND && applied_token != NULL &&
		strcmp(applied_token, session_token) == 0;
}

static void
read_token_regions(void)
{
	ListCell   *lc;

	if (token_regions_generation == cr_regions_generation && token_regions_complete)
		return;
	n_token_regions = 0;
	token_regions_complete = true;
	/* not in a transaction that drops the extension */
	if (!OidIsValid(get_namespace_oid(COSMOSREP_SCHEMA, true)))
		return;
	PushActiveSnapshot(GetTransactionSnapshot());
	if (cr_local_region_id(true) < 0)
	{
		PopActiveSnapshot();
		return;
	}
	foreach(lc, cr_get_regions_cached())
	{
		CrRegion   *r = lfirst(lc);
		TokenRegion *t = &token_regions[n_token_regions++];

		t->region_id = r->id;
		t->is_local = r->is_local;
		t->origin = r->is_local ? InvalidRepOriginId :
			replorigin_by_name(cr_origin_name(r->name), true);
		if (!r->is_local && t->origin == InvalidRepOriginId)
			token_regions_complete = false;
	}
	PopActiveSnapshot();
	token_regions_generation = cr_regions_generation;
}

/* raise region_id's position in entries to lsn, adding it if absent */
static bool
merge_position(TokenEntry *entries, int *n, int region_id, XLogRecPtr lsn)
{
	if (lsn == InvalidXLogRecPtr)
		return false;
	for (int i = 0; i < *n; i++)
	{
		if (entries[i].region_id == region_id)
		{
			if (entries[i].lsn >= lsn)
				return false;
			entries[i].lsn = lsn;
			return true;
		}
	}
	if (*n == CR_MAX_REGION_ID)
		return false;
	entries[*n].region_id = region_id;
	entries[(*n)++].lsn = lsn;
	return true;
}

/*
 * The session's token as entries, kept between commits so that a commit
 * does not parse it again: token_text is the text they were parsed from,
 * or formatted to (compared with the setting's value, which a SET or a
 * rolled back SET changes).  token_pending: the entries hold positions
 * the setting does not show yet (commits inside a procedure; see
 * publish_token).
 */
static TokenEntry token_entries[CR_MAX_REGION_ID];
static int	n_token_entries = 0;
static char *token_text = NULL;
static bool token_pending = false;

/* the token's entries, parsed again only if the setting changed */
static void
load_token(void)
{
	const char *current = session_token ? session_token : "";

	if (token_text != NULL && strcmp(token_text, current) == 0)
		return;
	n_token_entries = parse_token(current, token_entries, CR_MAX_REGION_ID);
	if (n_token_entries < 0)	/* the check hook refused such a value */
		n_token_entries = 0;
	if (token_text)
		pfree(token_text);
	token_text = MemoryContextStrdup(TopMemoryContext, current);
	token_pending = false;
}

/* the token's entries as text, in CurrentMemoryContext */
static char *
format_token(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n_token_entries; i++)
		appendStringInfo(&buf, "%s%d:%X/%X", i ? "," : "", token_entries[i].region_id,
						 LSN_FORMAT_ARGS(token_entries[i].lsn));
	return buf.data;
}

/*
 * Make the setting show the entries, which reports them to the client.
 * Setting a GUC costs more than the rest of a commit's token work (in
 * PostgreSQL 15 the end of a transaction that set one visits every
 * setting), and the client sees a new value only when its statement
 * ends: a commit inside a procedure (a nonatomic SPI context) leaves it
 * pending for the commit that ends the CALL, and the show hook and
 * cosmosrep.session_token() show pending entries meanwhile.
 */
static void
publish_token(void)
{
	char	   *text = format_token();

	(void) set_config_option("cosmosrep.session_token", text, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);
	if (applied_token)
		pfree(applied_token);
	applied_token = MemoryContextStrdup(TopMemoryContext, text);
	if (token_text)
		pfree(token_text);
	token_text = MemoryContextStrdup(TopMemoryContext, text);
	token_pending = false;
	pfree(text);
}

/* what SHOW, current_setting() and the client's report see */
static const char *
show_session_token(void)
{
	static char *shown = NULL;
	MemoryContext old;

	if (!token_pending)
		return session_token ? session_token : "";
	if (shown)
		pfree(shown);
	old = MemoryContextSwitchTo(TopMemoryContext);
	shown = format_token();
	MemoryContextSwitchTo(old);
	return shown;
}

/*
 * After a commit, merge into the session token what the session has seen:
 * this region's commit position if it wrote rows of multi-region tables,
 * and, once the session holds a token, every region's position applied
 * here (reads advance the token too: monotonic reads).  A changed token
 * is reported to the client (publish_token).
 */
void
cr_consistency_xact_event(XactEvent event)
{
	bool		wrote;

	if (event == XACT_EVENT_PRE_COMMIT)
	{
		/*
		 * Under strong, a commit that wrote multi-region rows waits until
		 * the other regions applied it (the write region is the only one
		 * that writes: strong_read refused the statements otherwise).
		 */
		if (cr_hlc_open_version() != 0 && effective_level() == CR_STRONG)
		{
			int			regions;

			PushActiveSnapshot(GetTransactionSnapshot());
			regions = list_length(cr_get_regions_cached());
			PopActiveSnapshot();
			if (regions > 1 &&
				(SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0'))
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("consistency level \"strong\" needs synchronous_standby_names"),
						 errdetail("A commit under strong returns once the other regions have applied it."),
						 errhint("List the other regions' apply workers, cosmosrep_<region name>, in synchronous_standby_names of the write region.")));
			if (regions > 1)
				(void) set_config_option("synchronous_commit", "remote_apply", PGC_SUSET,
										 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
		}
		if (advances_token())
			read_token_regions();
		return;
	}
	if (event != XACT_EVENT_COMMIT)
		return;

	/*
	 * After staleness.c's (this commit is already its last write commit),
	 * before the clock's (the open version is still there): cosmosrep.c.
	 */
	wrote = cr_hlc_open_version() != 0 && XactLastCommitEnd != InvalidXLogRecPtr;
	if (wrote || (advances_token() && n_token_regions > 0))
	{
		load_token();
		if (wrote)
			token_pending |= merge_position(token_entries, &n_token_entries,
											cr_version_region(cr_hlc_open_version()),
											XactLastCommitEnd);
		if (advances_token())
		{
			for (int i = 0; i < n_token_regions; i++)
			{
				TokenRegion *t = &token_regions[i];

				token_pending |=
					merge_position(token_entries, &n_token_entries, t->region_id,
								   t->is_local ? cr_staleness_last_write_commit() :
								   t->origin == InvalidRepOriginId ? InvalidXLogRecPtr :
								   replorigin_get_progress(t->origin, false));
			}
		}
	}
	if (token_pending && !SPI_inside_nonatomic_context())
		publish_token();
}

/* cosmosrep.last_write_position(): what a strong read elsewhere waits for */
Datum
cosmosrep_last_write_position(PG_FUNCTION_ARGS)
{
	cr_require_preload();
	PG_RETURN_LSN(cr_staleness_last_write_commit());
}

/* cosmosrep.session_token(): the session's token, as reported */
Datum
cosmosrep_session_token(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(show_session_token()));
}
