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
#include "utils/relcache.h"

/* version of the stream; the apply side refuses others */
#define CR_PROTOCOL_VERSION		1

/*
 * A CopyData message of the stream holds a whole transaction, BEGIN to
 * COMMIT, or, for a transaction larger than this, a chunk of about this
 * size.
 */
#define CR_WRITE_CHUNK			(64 * 1024)

/* prefix of the DDL messages cosmosrep ships in the stream */
#define CR_DDL_MESSAGE_PREFIX	"cosmosrep.ddl"

typedef struct CrMessage
{
	bool		transactional;
	XLogRecPtr	lsn;
	char	   *prefix;
	Size		size;
	const char *content;
} CrMessage;

/* sending side (output_plugin.c) */
extern void cr_write_begin(StringInfo out, ReorderBufferTXN *txn);
extern void cr_write_commit(StringInfo out, ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
extern void cr_write_relation(StringInfo out, Relation rel);
extern void cr_write_insert(StringInfo out, Relation rel, TupleTableSlot *newslot);
extern void cr_write_update(StringInfo out, Relation rel, TupleTableSlot *oldslot,
							TupleTableSlot *newslot);
extern void cr_write_delete(StringInfo out, Relation rel, TupleTableSlot *oldslot);
extern void cr_write_truncate(StringInfo out, int nrelids, Oid *relids,
							  bool cascade, bool restart_seqs);
extern void cr_write_message(StringInfo out, XLogRecPtr lsn, const char *prefix,
							 Size size, const char *content);

/* receiving side (apply.c) */
extern void cr_read_message(StringInfo in, CrMessage *msg);

#endif							/* CR_PROTOCOL_H */
