/*-------------------------------------------------------------------------
 *
 * apply_message.c
 *	  The MESSAGEs of the apply stream: what each prefix does here.
 *
 * NOTES
 *	  Besides row changes, a region sends logical decoding MESSAGEs: a
 *	  truncate, the rows of a table it enabled, failover and write-region
 *	  changes, conflicts resolved, DDL of multi-region tables (enable,
 *	  policy, disable; and schema changes as statements), and its stable
 *	  version.  message_kinds says, by prefix, whether each is
 *	  transactional and what applies it; cr_handle_message refuses a
 *	  message out of place or of an unknown kind.
 *
 *	  The content of each is read by the file that owns its subject
 *	  (ddl.c, failover.c, feed.c, tables.c) or here (truncate, rows, stable
 *	  version), inside the local transaction the worker opened
 *	  (apply_worker.c), like a statement.
 *
 *	  Streamed transactions are routed in apply_stream.c, and what waits
 *	  meanwhile is kept in apply_spill.c.
 *
 * IDENTIFICATION
 *	  src/apply_message.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq/pqformat.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "replication/logicalproto.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "apply_internal.h"
#include "catalog.h"
#include "conflict.h"
#include "ddl.h"
#include "ddl_names.h"
#include "failover.h"
#include "feed.h"
#include "hlc.h"
#include "names.h"
#include "protocol.h"
#include "run_as.h"
#include "tables.h"
#include "tombstone.h"

/*
 * A truncate at version V made in the peer region: every row older than V
 * goes, rows newer than V (written concurrently, in any region) stay, and
 * V becomes the table's horizon here, so that older rows arriving later
 * are not applied.  Runs as the table's owner, like every change.
 */
static void
apply_truncate(const char *content, Size size)
{
	const char *cursor = content;
	const char *end = content + size;
	const char *nspname = cr_message_name_field(&cursor, end, "truncate");
	const char *relname = cr_message_name_field(&cursor, end, "truncate");
	int64		version = cr_message_int_field(&cursor, end, "truncate", 1, PG_INT64_MAX);
	Oid			relid;
	CrUserContext user;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int			rc;

	cr_message_end(cursor, end, "truncate");
	cr_hlc_observe(version);

	cr_exec_close_all();
	cr_apply_check_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	relid = RangeVarGetRelid(makeRangeVar(pstrdup(nspname), pstrdup(relname), -1),
							 RowExclusiveLock, true);
	if (!OidIsValid(relid))
	{
		/* renamed here by a schema change the peer has not had yet */
		relid = cr_ddl_former_table(nspname, relname);
		if (OidIsValid(relid))
			LockRelationOid(relid, RowExclusiveLock);
	}
	if (!OidIsValid(relid) || cr_get_table_config(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" truncated in region \"%s\" is not multi-region in this region",
						nspname, relname, CrPeerName),
				 errhint("Create the table and enable it in every region; replication from \"%s\" resumes then.",
						 CrPeerName)));

	cr_switch_to_owner(cr_relation_owner(relid), &user);
	values[0] = Int64GetDatum(version);
	SPI_connect();
	/* a partitioned table's rows are in its partitions: no ONLY */
	rc = SPI_execute_with_args(psprintf("DELETE FROM %s%s WHERE %s OPERATOR(pg_catalog.<) $1",
										get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ?
										"" : "ONLY ",
										quote_qualified_identifier(nspname, relname),
										CR_VERSION_COLUMN),
							   1, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not apply truncate: %s", SPI_result_code_string(rc));
	cr_changes_in_transaction += SPI_processed;
	SPI_finish();
	cr_restore_user(&user);

	cr_tombstone_truncate(relid, version);
	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * The rows a table held when the peer enabled it: RELATION and INSERT
 * messages inside one MESSAGE, applied like any remote insert.
 */
static void
apply_rows(const char *content, Size size)
{
	StringInfoData inner;

	inner.data = (char *) content;
	inner.len = size;
	inner.maxlen = size;
	inner.cursor = 0;
	while (inner.cursor < inner.len)
	{
		char		action = inner.data[inner.cursor];

		if (action != LOGICAL_REP_MSG_RELATION && action != LOGICAL_REP_MSG_INSERT)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid message type \"%c\" in the rows of an enabled table from region \"%s\"",
							action, CrPeerName)));
		cr_apply_dispatch(&inner);
	}
}

/* a message other than a row change, applied like a statement */
static void
statement_begin(void)
{
	cr_apply_check_in_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
statement_end(void)
{
	PopActiveSnapshot();
	CommandCounterIncrement();
}

static void
apply_failover_message(const CrMessage *msg)
{
	statement_begin();
	cr_failover_apply_message(msg->content, msg->size);
	statement_end();
}

static void
apply_writes_message(const CrMessage *msg)
{
	statement_begin();
	cr_write_regions_apply_message(msg->content, msg->size);
	statement_end();
}

static void
apply_resolved_message(const CrMessage *msg)
{
	/* entries this group recorded are marked too */
	cr_flush_conflicts();
	statement_begin();
	cr_feed_apply_resolved(msg->content, msg->size, CrPeerName);
	statement_end();
}

/*
 * A peer's stable version.  Between transactions: it holds here once what
 * came before it is committed, at once or when the open group commits.
 */
static void
apply_stable_message(const CrMessage *msg)
{
	const char *cursor = msg->content;
	const char *end = msg->content + msg->size;

	int64		version = cr_message_int_field(&cursor, end, "stable version",
												   0, PG_INT64_MAX);

	cr_message_end(cursor, end, "stable version");
	cr_apply_stable_version(version);
}

static void
apply_ddl_message(const CrMessage *msg)
{
	cr_exec_close_all();
	statement_begin();
	cr_table_apply_ddl(msg->content, msg->size, CrPeerName);
	statement_end();
}

/* a schema change of a multi-region table, as its statement (ddl.c) */
static void
apply_statement_message(const CrMessage *msg)
{
	cr_exec_close_all();
	statement_begin();
	cr_ddl_apply_statement(msg->content, msg->size, CrPeerName);
	statement_end();
}

static void
apply_truncate_message(const CrMessage *msg)
{
	apply_truncate(msg->content, msg->size);
}

static void
apply_rows_message(const CrMessage *msg)
{
	apply_rows(msg->content, msg->size);
}

/*
 * The MESSAGEs of the stream, by prefix: whether each is transactional
 * (inside BEGIN and COMMIT) and what applies it.
 */
static const struct
{
	const char *prefix;
	bool		transactional;
	void		(*apply) (const CrMessage *msg);
}			message_kinds[] =
{
	{CR_TRUNCATE_MESSAGE_PREFIX, true, apply_truncate_message},
	{CR_ROWS_MESSAGE_PREFIX, true, apply_rows_message},
	{CR_FAILOVER_MESSAGE_PREFIX, true, apply_failover_message},
	{CR_WRITES_MESSAGE_PREFIX, true, apply_writes_message},
	{CR_RESOLVED_MESSAGE_PREFIX, true, apply_resolved_message},
	{CR_DDL_MESSAGE_PREFIX, true, apply_ddl_message},
	{CR_STATEMENT_MESSAGE_PREFIX, true, apply_statement_message},
	{CR_STABLE_MESSAGE_PREFIX, false, apply_stable_message},
};

void
cr_handle_message(StringInfo s)
{
	CrMessage	msg;

	cr_read_message(s, &msg);
	for (int i = 0; i < lengthof(message_kinds); i++)
	{
		if (strcmp(msg.prefix, message_kinds[i].prefix) != 0)
			continue;
		if (msg.transactional != message_kinds[i].transactional ||
			msg.transactional != cr_in_remote_transaction)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("message \"%s\" from region \"%s\" is out of place",
							msg.prefix, CrPeerName),
					 errdetail("It is %s and arrived %s a transaction.",
							   msg.transactional ? "transactional" : "not transactional",
							   cr_in_remote_transaction ? "inside" : "outside")));
		message_kinds[i].apply(&msg);
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("unrecognized message \"%s\" from region \"%s\"",
					msg.prefix, CrPeerName)));
}
