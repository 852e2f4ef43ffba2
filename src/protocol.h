/*-------------------------------------------------------------------------
 *
 * protocol.h
 *	  The wire format between cosmosrep regions, both directions.
 *
 * IDENTIFICATION
 *	  src/protocol.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_PROTOCOL_H
#define CR_PROTOCOL_H

#include "lib/stringinfo.h"
#include "replication/logicalproto.h"
#include "replication/reorderbuffer.h"
#include "utils/guc.h"
#include "utils/relcache.h"

/*
 * Versions of the stream (docs/design.md, "Protocol versions"): this
 * library writes and reads every version from CR_PROTOCOL_VERSION_OLDEST
 * to CR_PROTOCOL_VERSION, and not below cosmosrep.min_protocol_version.
 * The apply worker asks for the newest and, when the peer refuses it as
 * not supported, for the next older one (apply_worker.c); the output
 * plugin refuses a version it does not write, naming both (output_plugin.c).
 *
 *	2: cosmosrep 0.1 (writes and reads 2 only)
 *	3: cosmosrep 0.2: the stream of 2 with each table's _cr_seen column (a
 *	   version 2 stream leaves it out: cr_columns_without); a region that
 *	   writes 3 writes 2 too
 */
#define CR_PROTOCOL_VERSION			3
#define CR_PROTOCOL_VERSION_OLDEST	2

/* cosmosrep.min_protocol_version: the oldest version served and read */
extern int	cr_min_protocol_version;

/*
 * A CopyData message of the stream holds a whole transaction, BEGIN to
 * COMMIT, or, for a transaction larger than this, a chunk of about this
 * size.
 */
#define CR_WRITE_CHUNK			(64 * 1024)

/*
 * Prefixes of the transactional messages cosmosrep ships in the stream:
 * table DDL (tables.c), a truncate at a version (row_trigger.c), and the
 * rows a table held when it was enabled, as RELATION and INSERT messages
 * (tables.c), the sending region's stable version (stability.c), and a
 * region's failover priority (failover.c), and a schema change of a
 * multi-region table as its statement (ddl.c).
 */
#define CR_MESSAGE_PREFIX_ROOT		"cosmosrep."
#define CR_DDL_MESSAGE_PREFIX		"cosmosrep.ddl"
#define CR_TRUNCATE_MESSAGE_PREFIX	"cosmosrep.truncate"
#define CR_ROWS_MESSAGE_PREFIX		"cosmosrep.rows"
#define CR_STABLE_MESSAGE_PREFIX	"cosmosrep.stable"
#define CR_FAILOVER_MESSAGE_PREFIX	"cosmosrep.failover"
#define CR_RESOLVED_MESSAGE_PREFIX	"cosmosrep.resolved"
#define CR_WRITES_MESSAGE_PREFIX	"cosmosrep.writes"
#define CR_STATEMENT_MESSAGE_PREFIX	"cosmosrep.statement"

/* a setting that the text of values depends on, and its pinned value */
typedef struct CrTextFormat
{
	const char *name;
	const char *value;
} CrTextFormat;

/* both sides: the pinned text formats (NULL-terminated) */
extern const CrTextFormat cr_text_formats[];
extern void cr_pin_text_formats(GucSource source, GucAction action);

typedef struct CrMessage
{
	bool		transactional;
	XLogRecPtr	lsn;
	char	   *prefix;
	Size		size;
	const char *content;
} CrMessage;

/*
 * Streaming (docs/design.md, "Streamed transactions"): an apply worker that
 * reads version 3 asks for it with the option streaming 'on'; the plugin
 * then sends a transaction that outgrows logical_decoding_work_mem in
 * blocks while it runs, with core's STREAM START / STOP / COMMIT / ABORT
 * messages, every message of a block carrying the xid of its
 * (sub)transaction, a block's STREAM STOP in a CopyData message of its
 * own, and the messages of one subtransaction in CopyData messages of
 * their own.  A worker that does not ask gets whole transactions.
 */
#define CR_PROTOCOL_STREAMING_VERSION	3

/* sending side (output_plugin.c) */
extern TransactionId cr_write_xid;
extern void cr_write_stream_start(StringInfo out, TransactionId xid, bool first_segment);
extern void cr_write_stream_stop(StringInfo out);
extern void cr_write_stream_commit(StringInfo out, ReorderBufferTXN *txn,
								   XLogRecPtr commit_lsn);
extern void cr_write_stream_abort(StringInfo out, TransactionId xid,
								  TransactionId subxid);
extern void cr_write_begin(StringInfo out, ReorderBufferTXN *txn);
extern void cr_write_commit(StringInfo out, ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
extern Bitmapset *cr_columns_without(TupleDesc desc, AttrNumber att);
extern void cr_write_relation(StringInfo out, Relation rel, Bitmapset *columns);
extern void cr_write_insert(StringInfo out, Relation rel, TupleTableSlot *newslot,
							Bitmapset *columns);
extern void cr_write_update(StringInfo out, Relation rel, TupleTableSlot *oldslot,
							TupleTableSlot *newslot, Bitmapset *columns);
extern void cr_write_delete(StringInfo out, Relation rel, TupleTableSlot *oldslot,
							Bitmapset *columns);
extern void cr_write_message(StringInfo out, XLogRecPtr lsn, bool transactional,
							 const char *prefix, Size size, const char *content);

/* receiving side (apply_worker.c, apply_message.c) */
extern void cr_read_message(StringInfo in, CrMessage *msg);
extern void cr_append_fields(StringInfo buf, const char *const *fields, int nfields);
extern void cr_log_fields_message(const char *prefix, const char *const *fields,
								  int nfields);
extern const char *cr_message_field(const char **cursor, const char *end,
									const char *what);
extern const char *cr_message_name_field(const char **cursor, const char *end,
										 const char *what);
extern int64 cr_message_int_field(const char **cursor, const char *end,
								  const char *what, int64 min, int64 max);
extern void cr_message_malformed(const char *what, const char *detail) pg_attribute_noreturn();
extern void cr_message_end(const char *cursor, const char *end, const char *what);

#endif							/* CR_PROTOCOL_H */
