/*-------------------------------------------------------------------------
 *
 * apply_spill.c
 *	  Spill files of the apply worker: what it keeps of the stream to apply
 *	  later while it applies a streamed transaction as it arrives.
 *
 * NOTES
 *	  The apply worker applies one streamed transaction at a time as it
 *	  arrives (apply_worker.c, docs/design.md "Streamed transactions").
 *	  What it cannot apply yet is kept here, as the CopyData messages it
 *	  came in, in temporary files (BufFile: memory up to a block, then
 *	  disk), one record per CopyData message:
 *
 *	  - the queue: every CopyData message that arrives while a streamed
 *		transaction is applied and does not belong to it (whole
 *		transactions, stable versions, the STREAM COMMIT of another
 *		streamed transaction), in arrival order, applied once the
 *		streamed transaction commits or aborts;
 *	  - one spill per other streamed transaction (found by xid): the
 *		blocks of a streamed transaction that began while another was
 *		applied (or whose direct apply failed), applied whole at its
 *		STREAM COMMIT, in commit order, like a transaction decoded whole.
 *
 *	  The output plugin starts a CopyData message whenever the
 *	  subtransaction of the messages changes (protocol.h), so each record
 *	  of a spill belongs to one subtransaction.  A subtransaction's abort
 *	  discards every record from its first on: in the stream, what follows
 *	  the first change of a subtransaction until its abort belongs to it
 *	  or to subtransactions inside it, and its abort comes before anything
 *	  after.  Discarded records stay in the file and are skipped when it is
 *	  read.
 *
 *	  Memory: everything here lives in CrApplyContext until the spill is
 *	  closed; the files are temporary files of the worker, removed when it
 *	  closes them or exits (a worker that stops loses its spills with its
 *	  open transaction, and the peer sends both again).
 *
 * IDENTIFICATION
 *	  src/apply_spill.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/buffile.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "apply_internal.h"

/* a range of a spill's records that a subtransaction's abort discarded */
typedef struct SpillRange
{
	int64		start;
	int64		end;
} SpillRange;

/* where a subtransaction's first record is */
typedef struct SpillSub
{
	TransactionId xid;
	int64		start;
} SpillSub;

struct CrSpill
{
	TransactionId xid;			/* hash key; InvalidTransactionId: the queue */
	BufFile    *file;
	int64		written;		/* bytes written */
	int64		read;			/* bytes read, once reading */
	bool		reading;
	List	   *subs;			/* of SpillSub, in the order they began */
	List	   *discarded;		/* of SpillRange */
};

/* an entry of the table of spilled streamed transactions */
typedef struct SpillEntry
{
	TransactionId xid;			/* hash key */
	CrSpill    *spill;
} SpillEntry;

static HTAB *spills = NULL;
static CrSpill *queue = NULL;

static CrSpill *
spill_new(TransactionId xid)
{
	MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
	CrSpill    *sp = palloc0(sizeof(CrSpill));

	sp->xid = xid;
	/* not tied to a transaction: a spill outlives local commits */
	sp->file = BufFileCreateTemp(true);
	MemoryContextSwitchTo(oldctx);
	return sp;
}

/* append a record: a CopyData message's protocol messages */
static void
spill_write(CrSpill *sp, const char *data, int len)
{
	int32		reclen = len;

	Assert(!sp->reading);
	BufFileWrite(sp->file, &reclen, sizeof(reclen));
	BufFileWrite(sp->file, unconstify(char *, data), len);
	sp->written += sizeof(reclen) + len;
}

/* keep a CopyData message that arrived while a streamed one is applied */
void
cr_spill_queue_append(const char *data, int len)
{
	if (queue == NULL)
		queue = spill_new(InvalidTransactionId);
	spill_write(queue, data, len);
}

/* whether nothing waits in the queue */
bool
cr_spill_queue_empty(void)
{
	return queue == NULL;
}

/*
 * The queue, to be read and closed by the caller; a new one starts empty.
 * NULL if nothing was queued.
 */
CrSpill *
cr_spill_queue_take(void)
{
	CrSpill    *q = queue;

	queue = NULL;
	return q;
}

/* the spill of streamed transaction xid, made if create, or NULL */
CrSpill *
cr_spill_lookup(TransactionId xid, bool create)
{
	bool		found;
	SpillEntry *entry;

	if (spills == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(TransactionId);
		ctl.entrysize = sizeof(SpillEntry);
		ctl.hcxt = CrApplyContext;
		spills = hash_create("cosmosrep spilled transactions", 16, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(spills, &xid, create ? HASH_ENTER : HASH_FIND, &found);
	if (entry == NULL)
		return NULL;
	if (!found)
		entry->spill = spill_new(xid);
	return entry->spill;
}

/*
 * Take streamed transaction xid's spill out of the table (to be read and
 * closed, or closed, by the caller); NULL if none.
 */
CrSpill *
cr_spill_forget(TransactionId xid)
{
	CrSpill    *sp = cr_spill_lookup(xid, false);

	if (sp != NULL)
		hash_search(spills, &xid, HASH_REMOVE, NULL);
	return sp;
}

/* append a record of subtransaction subxid (or the transaction itself) */
void
cr_spill_append(CrSpill *sp, TransactionId subxid, const char *data, int len)
{
	ListCell   *lc;
	bool		known = subxid == sp->xid;

	foreach(lc, sp->subs)
		if (((SpillSub *) lfirst(lc))->xid == subxid)
			known = true;
	if (!known)
	{
		MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
		SpillSub   *sub = palloc(sizeof(SpillSub));

		sub->xid = subxid;
		sub->start = sp->written;
		sp->subs = lappend(sp->subs, sub);
		MemoryContextSwitchTo(oldctx);
	}
	spill_write(sp, data, len);
}

/*
 * Subtransaction subxid of sp's transaction aborted: discard its records
 * and those of every subtransaction that began after it (see the NOTES).
 */
void
cr_spill_abort_sub(CrSpill *sp, TransactionId subxid)
{
	int			i = 0;
	ListCell   *lc;

	foreach(lc, sp->subs)
	{
		SpillSub   *sub = lfirst(lc);

		if (sub->xid == subxid)
		{
			MemoryContext oldctx = MemoryContextSwitchTo(CrApplyContext);
			SpillRange *range = palloc(sizeof(SpillRange));

			range->start = sub->start;
			range->end = sp->written;
			sp->discarded = lappend(sp->discarded, range);
			sp->subs = list_truncate(sp->subs, i);
			MemoryContextSwitchTo(oldctx);
			return;
		}
		i++;
	}
}

/*
 * Read sp's next record that no abort discarded into buf (reset first);
 * false at the end.  The first call ends the writing.
 */
bool
cr_spill_read(CrSpill *sp, StringInfo buf)
{
	for (;;)
	{
		int32		reclen;
		int64		start = sp->read;
		bool		discarded = false;
		ListCell   *lc;

		if (!sp->reading)
		{
			if (BufFileSeek(sp->file, 0, 0, SEEK_SET) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not rewind a cosmosrep spill file: %m")));
			sp->reading = true;
		}
		if (sp->read >= sp->written)
			return false;
		if (BufFileRead(sp->file, &reclen, sizeof(reclen)) != sizeof(reclen))
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a cosmosrep spill file: %m")));
		resetStringInfo(buf);
		enlargeStringInfo(buf, reclen);
		if (BufFileRead(sp->file, buf->data, reclen) != reclen)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a cosmosrep spill file: %m")));
		buf->len = reclen;
		buf->data[reclen] = '\0';
		buf->cursor = 0;
		sp->read += sizeof(reclen) + reclen;
		foreach(lc, sp->discarded)
		{
			SpillRange *range = lfirst(lc);

			if (start >= range->start && start < range->end)
				discarded = true;
		}
		if (!discarded)
			return true;
	}
}

/* close a spill taken out of the table or the queue, and free it */
void
cr_spill_close(CrSpill *sp)
{
	if (sp == NULL)
		return;
	BufFileClose(sp->file);
	list_free_deep(sp->subs);
	list_free_deep(sp->discarded);
	pfree(sp);
}
