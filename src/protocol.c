/*-------------------------------------------------------------------------
 *
 * protocol.c
 *	  The wire format between cosmosrep regions, both directions.
 *
 * NOTES
 *	  cosmosrep ships PostgreSQL's own logical replication messages
 *	  (replication/logical/proto.c): BEGIN, RELATION, INSERT, UPDATE,
 *	  DELETE, MESSAGE and COMMIT, with column values in text
 *	  form so that regions need only agree on column names and types, not
 *	  on type OIDs.  What cosmosrep adds travels inside those messages:
 *
 *	  - every row carries its version (_cr_version) and the version it was
 *		written against (_cr_base) as ordinary columns;
 *	  - a DELETE's key tuple carries the delete's own version and base in
 *		the same two columns (the output plugin fills them from the
 *		row trigger's logical message);
 *	  - table DDL (enable, alter policy, disable) is a transactional
 *		MESSAGE with prefix CR_DDL_MESSAGE_PREFIX, ordered with the rows;
 *	  - a TRUNCATE is a MESSAGE with prefix CR_TRUNCATE_MESSAGE_PREFIX that
 *		carries the truncate's version (core's TRUNCATE message has no
 *		place for it);
 *	  - the rows a table held when it was enabled travel in MESSAGEs with
 *		prefix CR_ROWS_MESSAGE_PREFIX, whose content is itself a sequence
 *		of RELATION and INSERT messages.
 *
 *	  One CopyData message may hold several protocol messages: the output
 *	  plugin sends a small transaction, BEGIN to COMMIT, as one CopyData and
 *	  a large one in chunks, and the apply worker reads each CopyData until
 *	  it is used up.
 *
 *	  Functions that wrap core helpers exist so that version differences in
 *	  their signatures are handled here only.  The protocol version is
 *	  checked at START_REPLICATION (output plugin option).
 *
 * IDENTIFICATION
 *	  src/protocol.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "libpq/pqformat.h"
#include "utils/guc.h"

#include "protocol.h"
#include "signing.h"

/* cosmosrep.min_protocol_version: defined in cr_apply_define_settings */
int			cr_min_protocol_version = CR_PROTOCOL_VERSION_OLDEST;

/*
 * The (sub)transaction that the messages written now belong to, inside a
 * block of a streamed transaction (output_plugin.c sets it around its
 * stream callbacks); InvalidTransactionId otherwise, and then no message
 * carries one.
 */
TransactionId cr_write_xid = InvalidTransactionId;

/*
 * Values travel as text: the settings their text depends on, pinned in
 * every session that writes or reads them, here and on the peer.
 */
const CrTextFormat cr_text_formats[] = {
	{"DateStyle", "ISO"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "3"},
	{NULL, NULL}
};

/*
 * Pin the text formats in this session, with source and action as
 * set_config_option takes them (GUC_ACTION_SAVE inside a GUC nest level
 * for a while, GUC_ACTION_SET with PGC_S_OVERRIDE for a worker's life).
 */
void
cr_pin_text_formats(GucSource source, GucAction action)
{
	for (const CrTextFormat *f = cr_text_formats; f->name; f++)
		(void) set_config_option(f->name, f->value, PGC_SUSET, source,
								 action, true, 0, false);
}

void
cr_write_begin(StringInfo out, ReorderBufferTXN *txn)
{
	logicalrep_write_begin(out, txn);
}

void
cr_write_commit(StringInfo out, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	logicalrep_write_commit(out, txn, commit_lsn);
}

/*
 * The framing of a streamed transaction (docs/design.md, "Streamed
 * transactions"): each block of it starts with STREAM START and ends with
 * STREAM STOP, written as a CopyData message of its own so that the
 * receiver finds the end of a block without reading the messages in it;
 * STREAM COMMIT and STREAM ABORT come between blocks.
 */
void
cr_write_stream_start(StringInfo out, TransactionId xid, bool first_segment)
{
	logicalrep_write_stream_start(out, xid, first_segment);
}

void
cr_write_stream_stop(StringInfo out)
{
	logicalrep_write_stream_stop(out);
}

void
cr_write_stream_commit(StringInfo out, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	logicalrep_write_stream_commit(out, txn, commit_lsn);
}

void
cr_write_stream_abort(StringInfo out, TransactionId xid, TransactionId subxid)
{
	logicalrep_write_stream_abort(out, xid, subxid);
}

/*
 * The columns of desc to send but att (0: all of them, NULL), for
 * logicalrep_write_*: a stream of an older protocol version leaves out a
 * column that version does not know.
 */
Bitmapset *
cr_columns_without(TupleDesc desc, AttrNumber att)
{
	Bitmapset  *columns = NULL;

	if (att <= 0)
		return NULL;
	for (int i = 0; i < desc->natts; i++)
		if (i + 1 != att)
			columns = bms_add_member(columns, i + 1);
	return columns;
}

void
cr_write_relation(StringInfo out, Relation rel, Bitmapset *columns)
{
	logicalrep_write_rel(out, cr_write_xid, rel, columns);
}

void
cr_write_insert(StringInfo out, Relation rel, TupleTableSlot *newslot, Bitmapset *columns)
{
	logicalrep_write_insert(out, cr_write_xid, rel, newslot, false, columns);
}

void
cr_write_update(StringInfo out, Relation rel, TupleTableSlot *oldslot,
				TupleTableSlot *newslot, Bitmapset *columns)
{
	logicalrep_write_update(out, cr_write_xid, rel, oldslot, newslot,
							false, columns);
}

void
cr_write_delete(StringInfo out, Relation rel, TupleTableSlot *oldslot, Bitmapset *columns)
{
	logicalrep_write_delete(out, cr_write_xid, rel, oldslot, false, columns);
}

void
cr_write_message(StringInfo out, XLogRecPtr lsn, bool transactional,
				 const char *prefix, Size size, const char *content)
{
	logicalrep_write_message(out, cr_write_xid, lsn, transactional,
							 prefix, size, content);
}

/*
 * Read a MESSAGE (its type byte already consumed).  The content points
 * into the input buffer.
 */
void
cr_read_message(StringInfo in, CrMessage *msg)
{
	uint8		flags = pq_getmsgint(in, 1);

	if (flags & ~((uint8) 1))
		elog(ERROR, "unrecognized flags %u in message", flags);
	msg->transactional = (flags & 1) != 0;
	msg->lsn = pq_getmsgint64(in);
	msg->prefix = pstrdup(pq_getmsgstring(in));
	msg->size = pq_getmsgint(in, 4);
	msg->content = pq_getmsgbytes(in, msg->size);
}

/*
 * Write a transactional message whose content is the fields, each a
 * NUL-terminated string (the catalog changes that travel between regions
 * are written so).
 */
void
cr_log_fields_message(const char *prefix, const char *const *fields, int nfields)
{
	StringInfoData buf;

	initStringInfo(&buf);
	cr_append_fields(&buf, fields, nfields);
	(void) cr_log_message(prefix, buf.data, buf.len, true);
	pfree(buf.data);
}

/* append the fields to buf, each a NUL-terminated string */
void
cr_append_fields(StringInfo buf, const char *const *fields, int nfields)
{
	for (int i = 0; i < nfields; i++)
		appendBinaryStringInfo(buf, fields[i], strlen(fields[i]) + 1);
}

/*
 * Fields of the messages that carry catalog changes.  What a peer sends is
 * untrusted input: each reader takes every field through these, which
 * check it before use and report a malformed message as a protocol
 * violation (the apply worker then stops with the error in
 * replication_status and retries the transaction; nothing is skipped).
 * what names the message kind in the error.
 */
void
cr_message_malformed(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("malformed %s message", what),
			 errdetail_internal("%s", detail)));
}

/*
 * The next NUL-terminated field of a message's content, from *cursor up
 * to end, and *cursor past it.
 */
const char *
cr_message_field(const char **cursor, const char *end, const char *what)
{
	const char *field = *cursor;
	size_t		len;

	if (field >= end || (len = strnlen(field, end - field)) == (size_t) (end - field))
		cr_message_malformed(what, "The message ends before one of its fields.");
	*cursor = field + len + 1;
	return field;
}

/* the next field, which must name something: not empty, not too long */
const char *
cr_message_name_field(const char **cursor, const char *end, const char *what)
{
	const char *field = cr_message_field(cursor, end, what);

	if (field[0] == '\0' || strlen(field) >= NAMEDATALEN)
		cr_message_malformed(what, psprintf("A name field is empty or longer than %d bytes.",
								 NAMEDATALEN - 1));
	return field;
}

/* the next field as an integer from min to max */
int64
cr_message_int_field(const char **cursor, const char *end, const char *what,
					 int64 min, int64 max)
{
	const char *field = cr_message_field(cursor, end, what);
	char	   *endptr;
	int64		value;

	errno = 0;
	value = strtoi64(field, &endptr, 10);
	if (field[0] == '\0' || *endptr != '\0' || errno != 0 ||
		value < min || value > max)
		cr_message_malformed(what, psprintf("Field \"%.32s\" is not a number from " INT64_FORMAT
								 " to " INT64_FORMAT ".", field, min, max));
	return value;
}

/* check that a message holds nothing after its last field */
void
cr_message_end(const char *cursor, const char *end, const char *what)
{
	if (cursor != end)
		cr_message_malformed(what, "The message holds more than its fields.");
}
