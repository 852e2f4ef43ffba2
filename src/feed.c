/*-------------------------------------------------------------------------
 *
 * feed.c
 *	  The conflicts feed: the pending and error entries of
 *	  cosmosrep.conflict, and the functions an application resolves them
 *	  with.
 *
 * NOTES
 *	  An entry waits in the feed while resolved_at is NULL: a conflict of
 *	  a table under the manual policy (pending; the regions hold the row
 *	  that last-writer-wins picked), or one that a resolver failed on
 *	  (error; the region kept its row).  The application then
 *
 *	  - keeps one of the entry's two versions (resolve_conflict),
 *	  - supplies the row to keep (resolve_conflict_with_row),
 *	  - applies the entry again, through the table's policy as it is now
 *	    (reapply_conflict), or
 *	  - accepts what the regions hold (discard_conflict).
 *
 *	  The first three write the row as a new local write of the caller,
 *	  who needs the privileges of that write: it gets a new version and
 *	  replicates to every region like any write, so every region ends with
 *	  it.  The table owner's code that this reaches (the resolver, the
 *	  types' input functions, triggers, constraints, defaults) runs as the
 *	  owner with SECURITY_RESTRICTED_OPERATION and an empty search_path,
 *	  never with the caller's privileges (write_local).  Each
 *	  of the four then marks the entry resolved, together with every other
 *	  entry of the same key whose versions are not newer than the entry's,
 *	  and says so to the other regions in a transactional message, after
 *	  which they mark the same entries of their own feeds.
 *
 *	  An entry recorded before its table's columns changed is resolved the
 *	  same ways: its rows are written as rows of the table as it is now
 *	  (entry_row_now), and a supplied row may have either shape
 *	  (entry_supplied_row).
 *
 * IDENTIFICATION
 *	  src/feed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "conflict.h"
#include "ddl_names.h"
#include "feed.h"
#include "names.h"
#include "protocol.h"
#include "run_as.h"
#include "signing.h"
#include "tables.h"
#include "tombstone.h"

/* an entry of the feed, read for resolving it */
typedef struct FeedEntry
{
	int64		conflict_id;
	Oid			relid;
	bytea	   *key;
	int64		local_version;
	int64		remote_version;
	Datum		local_row;		/* composite datums, or 0 */
	Datum		remote_row;
	char	   *kind;
	char	   *resolution;
	int64		shape;			/* of the rows (cr_conflict_shape) */
} FeedEntry;

PG_FUNCTION_INFO_V1(cosmosrep_resolve_conflict);
PG_FUNCTION_INFO_V1(cosmosrep_resolve_conflict_with_row);
PG_FUNCTION_INFO_V1(cosmosrep_reapply_conflict);
PG_FUNCTION_INFO_V1(cosmosrep_discard_conflict);

static const char *reapply_entry(Relation rel, FeedEntry *e);

/* prepared once per backend: the arbiter and the regions it tells run it per resolution */
static SPIPlanPtr mark_resolved_plan = NULL;

/*
 * Read and lock the feed entry conflict_id for the current user, who must
 * be able to read its table (as for cosmosrep.conflicts) and to change
 * it.  Errors if there is no such entry, or it is resolved already.
 */
static FeedEntry *
feed_entry_lock(int64 conflict_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(conflict_id)};
	MemoryContext callerctx = CurrentMemoryContext;
	FeedEntry  *e = NULL;
	uint64		found = 0;
	bool		resolved = false;
	char	   *resolved_by = NULL;
	AclResult	aclresult;

	SPI_connect();

	/*
	 * The feed's entries by their partial index, locked; any other entry
	 * (BRIN) only to say why it is not there.
	 */
	for (int pass = 0; pass < 2 && found == 0; pass++)
	{
		if (cr_catalog_query(NULL, pass == 0 ?
							 "SELECT relid, key, local_version, remote_version,"
							 " local_row, remote_row, resolution, kind, false, NULL, shape"
							 " FROM cosmosrep.conflict"
							 " WHERE conflict_id OPERATOR(pg_catalog.=) $1"
							 " AND resolved_at IS NULL FOR UPDATE" :
							 "SELECT relid, key, local_version, remote_version,"
							 " local_row, remote_row, resolution, kind,"
							 " resolved_at IS NOT NULL, resolved_by, shape"
							 " FROM cosmosrep.conflict"
							 " WHERE conflict_id OPERATOR(pg_catalog.=) $1",
							 1, argtypes, values, NULL, false) != SPI_OK_SELECT)
			elog(ERROR, "could not read conflict " INT64_FORMAT, conflict_id);
		found = SPI_processed;
	}
	if (found == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext spictx = MemoryContextSwitchTo(callerctx);
		bool		isnull;
		Datum		d;

		e = palloc0(sizeof(FeedEntry));
		e->conflict_id = conflict_id;
		e->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		d = SPI_getbinval(tup, desc, 2, &isnull);
		e->key = isnull ? NULL : DatumGetByteaPCopy(d);
		e->local_version = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		e->remote_version = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		d = SPI_getbinval(tup, desc, 5, &isnull);
		e->local_row = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
		d = SPI_getbinval(tup, desc, 6, &isnull);
		e->remote_row = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
		e->resolution = SPI_getvalue(tup, desc, 7);
		e->kind = SPI_getvalue(tup, desc, 8);
		resolved = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		resolved_by = SPI_getvalue(tup, desc, 10);
		e->shape = DatumGetInt64(SPI_getbinval(tup, desc, 11, &isnull));
		MemoryContextSwitchTo(spictx);
	}
	SPI_finish();

	/* an entry of a table the user may not read does not exist for them */
	if (e == NULL || get_rel_name(e->relid) == NULL ||
		pg_class_aclcheck(e->relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("conflict " INT64_FORMAT " does not exist", conflict_id)));
	aclresult = pg_class_aclcheck(e->relid, GetUserId(), ACL_UPDATE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(e->relid));

	/*
	 * The entry's rows were not checked against the table's policies:
	 * where they apply to the user, the entry is left to a user they do
	 * not apply to (cosmosrep.conflicts shows no rows of it either).
	 */
	if (check_enable_rls(e->relid, InvalidOid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("conflict " INT64_FORMAT " of table \"%s\" cannot be resolved under row-level security",
						conflict_id, get_rel_name(e->relid)),
				 errdetail("Row-level security of the table applies to the current user, and the conflict's rows were not checked against its policies."),
				 errhint("Resolve it as a role that row-level security of the table does not apply to, such as its owner.")));
	if (resolved || e->key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("conflict " INT64_FORMAT " is not in the feed", conflict_id),
				 resolved_by ?
				 errdetail("It was resolved by %s.", resolved_by) : 0));
	return e;
}

/* the columns a write of rel's rows sets: not cosmosrep's, not generated */
static List *
written_columns(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *columns = NIL;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);

		if (att->attisdropped || att->attgenerated ||
			cr_is_cosmosrep_column(name))
			continue;
		columns = lappend(columns, pstrdup(name));
	}
	return columns;
}

/* the primary key columns of rel */
static List *
key_columns(Relation rel)
{
	Bitmapset  *attrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	List	   *columns = NIL;
	int			col = -1;

	while ((col = bms_next_member(attrs, col)) >= 0)
		columns = lappend(columns,
						  pstrdup(NameStr(TupleDescAttr(RelationGetDescr(rel),
														col + FirstLowInvalidHeapAttributeNumber - 1)->attname)));
	return columns;
}

/* append the columns, each as prefix.column, separated by commas */
static void
append_columns(StringInfo sql, List *columns, const char *prefix)
{
	ListCell   *lc;

	foreach(lc, columns)
		appendStringInfo(sql, "%s%s%s", foreach_current_index(lc) ? ", " : "",
						 prefix, quote_identifier(lfirst(lc)));
}

/*
 * Run sql with its nargs arguments as the current user and return the
 * first column of its one row (a varlena), copied into the caller's
 * context; 0 without a row or for NULL.
 */
static Datum
spi_single_value_args(const char *sql, int nargs, Oid *argtypes, Datum *args,
					  bool read_only)
{
	MemoryContext callerctx = CurrentMemoryContext;
	Datum		value = (Datum) 0;
	int			rc;

	SPI_connect();
	rc = SPI_execute_with_args(sql, nargs, argtypes, args, NULL, read_only, 0);
	if (rc < 0)
		elog(ERROR, "could not execute \"%s\": %s", sql, SPI_result_code_string(rc));
	if (SPI_processed == 1 && SPI_tuptable != NULL)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		MemoryContext spictx = MemoryContextSwitchTo(callerctx);

		if (!isnull)
			value = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
		MemoryContextSwitchTo(spictx);
	}
	SPI_finish();
	return value;
}

/* spi_single_value_args with one argument */
static Datum
spi_single_value(const char *sql, Oid argtype, Datum arg, bool read_only)
{
	return spi_single_value_args(sql, 1, &argtype, &arg, read_only);
}

/*
 * Write row (a composite datum of rel's row type) as a new local write of
 * the current user, or, if row is 0, delete the row with the key of
 * keyrow: the row trigger gives it a new version, and it replicates like
 * any other write.  Returns the row as written (0 for a delete).
 *
 * The write is the caller's: the caller needs the privileges of the
 * statement (SELECT and UPDATE, checked with the entry, and INSERT for a
 * row or DELETE for a delete), checked here.  The statement then runs as
 * the table's owner, with SECURITY_RESTRICTED_OPERATION and an empty
 * search_path, so that what it fires (the owner's triggers, constraints,
 * defaults, index expressions, type functions) never runs with the
 * caller's privileges: the caller, often a superuser or a reader of the
 * feed, did not write that code and did not ask to run it.  (Row security
 * never applies to the caller here: feed_entry_lock refuses such a
 * caller.)
 */
static Datum
write_local(Relation rel, Datum row, Datum keyrow)
{
	Oid			rowtype = rel->rd_rel->reltype;
	const char *table = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												   RelationGetRelationName(rel));
	List	   *keys = key_columns(rel);
	StringInfoData sql;
	ListCell   *lc;
	AclResult	aclresult;
	CrUserContext user;
	Datum		written = (Datum) 0;

	aclresult = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(),
								  row == (Datum) 0 ? ACL_DELETE : ACL_INSERT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));

	initStringInfo(&sql);
	if (row == (Datum) 0)
	{
		/* a partitioned table's rows are in its partitions: no ONLY */
		appendStringInfo(&sql, "DELETE FROM %s%s WHERE true",
						 rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
						 table);
		foreach(lc, keys)
			appendStringInfo(&sql, " AND %s OPERATOR(pg_catalog.=) ($1).%s",
							 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
		cr_switch_to_owner(rel->rd_rel->relowner, &user);
		(void) spi_single_value(sql.data, rowtype, keyrow, false);
	}
	else
	{
		List	   *columns = written_columns(rel);

		appendStringInfo(&sql, "INSERT INTO %s AS t (", table);
		append_columns(&sql, columns, "");
		appendStringInfoString(&sql, ") SELECT ");
		append_columns(&sql, columns, "($1).");
		appendStringInfoString(&sql, " ON CONFLICT (");
		append_columns(&sql, keys, "");
		appendStringInfoString(&sql, ") DO UPDATE SET (");
		append_columns(&sql, columns, "");
		appendStringInfoString(&sql, ") = ROW(");
		append_columns(&sql, columns, "EXCLUDED.");
		appendStringInfoString(&sql, ") RETURNING t");
		cr_switch_to_owner(rel->rd_rel->relowner, &user);
		written = spi_single_value(sql.data, rowtype, row, false);
	}
	cr_restore_user(&user);
	return written;
}

/* what mark_resolved collects: the waiting entries no newer than version */
typedef struct MarkEntries
{
	int64		version;
	List	   *ids;			/* of int64 * */
} MarkEntries;

static void
collect_entry_to_mark(HeapTuple tup, TupleDesc desc, void *arg)
{
	MarkEntries *me = arg;
	bool		isnull;
	int64	   *id;
	int64		local_version = DatumGetInt64(heap_getattr(tup, SPI_fnumber(desc, "local_version"),
														   desc, &isnull));
	int64		remote_version = DatumGetInt64(heap_getattr(tup, SPI_fnumber(desc, "remote_version"),
															desc, &isnull));

	if (Max(local_version, remote_version) > me->version)
		return;
	id = palloc(sizeof(int64));
	*id = DatumGetInt64(heap_getattr(tup, SPI_fnumber(desc, "conflict_id"), desc, &isnull));
	me->ids = lappend(me->ids, id);
}

/*
 * Mark every entry of relid's key that is not newer than version as
 * resolved, with resolution and winner (a composite datum, or 0), by
 * whom; the entries of this region's feed only.  A tentative entry (a
 * conflict under a resolver that this region decided by version while it
 * was not the arbiter) keeps its resolution: the arbiter records the
 * conflict.
 */
static void
mark_resolved(Oid relid, bytea *key, int64 version, const char *resolution,
			  Datum winner, const char *by)
{
	Oid			argtypes[4] = {INT8OID, TEXTOID, BYTEAOID, TEXTOID};
	Datum		values[4] = {0, CStringGetTextDatum(resolution), winner,
	CStringGetTextDatum(by)};
	char		nulls[4] = {' ', ' ', winner == (Datum) 0 ? 'n' : ' ', ' '};
	MarkEntries me = {version, NIL};
	ListCell   *lc;

	/* by the index on key, then each by its id (cr_conflict_waiting_scan) */
	cr_conflict_waiting_scan(relid, key, collect_entry_to_mark, &me);
	foreach(lc, me.ids)
	{
		values[0] = Int64GetDatum(*(int64 *) lfirst(lc));
		(void) cr_catalog_write(&mark_resolved_plan,
								"UPDATE cosmosrep.conflict"
								" SET resolution = CASE resolution WHEN 'tentative' THEN resolution ELSE $2 END,"
								"     winner_row = $3,"
								"     resolved_at = pg_catalog.now(), resolved_by = $4"
								" WHERE conflict_id OPERATOR(pg_catalog.=) $1 AND resolved_at IS NULL",
								4, argtypes, values, nulls, SPI_OK_UPDATE);
	}
}

/*
 * Resolve entry e: mark it, and the entries of its key that are not newer,
 * resolved here, and tell the other regions in a transactional message:
 * the table's name, the newest version of the entry, the resolution and
 * who resolved it, NUL-terminated, then the key.  Done by the current
 * user.
 */
static void
feed_resolve(Relation rel, FeedEntry *e, const char *resolution, Datum winner)
{
	cr_feed_resolve_key(rel, e->key, Max(e->local_version, e->remote_version),
						resolution, winner, GetUserNameFromId(GetUserId(), false));
}

/*
 * Mark the entries of rel's key not newer than version resolved here, and
 * send the same to the other regions (see feed_resolve): also for the
 * arbiter's resolutions (apply_change.c), which the other regions decided
 * tentatively.
 */
void
cr_feed_resolve_key(Relation rel, bytea *key, int64 version, const char *resolution,
					Datum winner, const char *by)
{
	const char *fields[5];
	StringInfoData msg;

	mark_resolved(RelationGetRelid(rel), key, version, resolution, winner, by);

	fields[0] = get_namespace_name(RelationGetNamespace(rel));
	fields[1] = RelationGetRelationName(rel);
	fields[2] = psprintf(INT64_FORMAT, version);
	fields[3] = resolution;
	fields[4] = by;
	initStringInfo(&msg);
	cr_append_fields(&msg, fields, lengthof(fields));
	/* the key is binary: it takes the rest of the message (none for an entry
	 * whose row could not be read, see record_rejected_change) */
	appendBinaryStringInfo(&msg, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	(void) cr_log_message(CR_RESOLVED_MESSAGE_PREFIX, msg.data, msg.len, true);
}

/*
 * Apply a resolved message from region: mark the same entries of this
 * region's feed resolved.  Nothing to do where the table is gone.
 */
void
cr_feed_apply_resolved(const char *content, Size size, const char *region)
{
	const char *cursor = content;
	const char *end = content + size;
	const char *nspname = cr_message_name_field(&cursor, end, "resolved");
	const char *relname = cr_message_name_field(&cursor, end, "resolved");
	int64		version = cr_message_int_field(&cursor, end, "resolved", 1, PG_INT64_MAX);
	const char *resolution = cr_message_field(&cursor, end, "resolved");
	const char *by = cr_message_name_field(&cursor, end, "resolved");
	Oid			relid;
	bytea	   *key;

	/* a resolution marks entries resolved; pending and error do not */
	if (strcmp(resolution, cr_resolution_names[CR_RESOLUTION_REMOTE_APPLIED]) != 0 &&
		strcmp(resolution, cr_resolution_names[CR_RESOLUTION_LOCAL_KEPT]) != 0 &&
		strcmp(resolution, cr_resolution_names[CR_RESOLUTION_MERGED]) != 0)
		cr_message_malformed("resolved",
							 psprintf("Resolution \"%.32s\" is not one of remote_applied, local_kept and merged.",
									  resolution));
	relid = get_relname_relid(relname, get_namespace_oid(nspname, true));
	if (!OidIsValid(relid))
	{
		/* renamed here by a schema change the peer had not had yet */
		relid = cr_ddl_former_table(nspname, relname);
	}
	key = palloc(VARHDRSZ + (end - cursor));
	SET_VARSIZE(key, VARHDRSZ + (end - cursor));
	memcpy(VARDATA(key), cursor, end - cursor);
	if (OidIsValid(relid))
		mark_resolved(relid, key, version, resolution, (Datum) 0,
					  psprintf("%s in region %s", by, region));
}

/* open the table of entry e for writing its resolution */
static Relation
feed_open(FeedEntry *e)
{
	return table_open(e->relid, RowExclusiveLock);
}

/* ----------------------------------------------------------------
 * Entries recorded before their table changed shape
 *
 * An entry's rows are composite datums formed with the table's
 * attributes as they were when it was recorded (its stored shape,
 * conflict_log.c).  After a change of the table's columns they are
 * written as rows of the table as it is now, by attribute number:
 * PostgreSQL keeps a column's number through RENAME and ALTER COLUMN
 * TYPE and never gives a dropped column's number to another, and the
 * rows were formed with this region's table, so the number says exactly
 * which column a value belongs to (apply maps a peer's rows by name
 * because numbers differ between regions; here they cannot).  A value
 * goes to its column under the column's name now, read as the column's
 * type now from its text where the type changed, as apply reads a row of
 * the old shape in flight; the value of a dropped column is left out; a
 * column added since takes its default (added_column_value).
 * ----------------------------------------------------------------
 */

/* the stored attributes of entry e's rows */
static TupleDesc
entry_stored_shape(FeedEntry *e)
{
	TupleDesc	stored = cr_conflict_stored_shape(e->relid, e->shape);

	if (stored == NULL)
		elog(ERROR, "the shape of the rows of conflict " INT64_FORMAT " is not stored",
			 e->conflict_id);
	return stored;
}

/*
 * The value of column i (0-based) of rel, added since an entry was
 * recorded, in a row of that entry: what the rows that existed when it
 * was added have (its non-volatile default at ADD COLUMN) while
 * PostgreSQL keeps that value, else (a rewrite of the table stored it in
 * every row) the column's default now, else NULL.  The default is the
 * owner's code: the caller runs as the table's owner.
 */
static Datum
added_column_value(Relation rel, int i, bool *isnull)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Form_pg_attribute att = TupleDescAttr(desc, i);
	Datum		value = getmissingattr(desc, i + 1, isnull);
	Node	   *expr;
	EState	   *estate;
	ExprState  *state;

	if (!*isnull || att->attgenerated)
		return *isnull ? (Datum) 0 : datumCopy(value, att->attbyval, att->attlen);
	expr = build_column_default(rel, i + 1);
	if (expr == NULL)
		return (Datum) 0;
	estate = CreateExecutorState();
	state = ExecPrepareExpr((Expr *) expr, estate);
	value = ExecEvalExprSwitchContext(state, GetPerTupleExprContext(estate), isnull);
	value = *isnull ? (Datum) 0 : datumCopy(value, att->attbyval, att->attlen);
	FreeExecutorState(estate);
	return value;
}

/*
 * Row, one of entry e's rows formed with the attributes of stored, as a
 * composite datum of rel's row type now (see above), in the current
 * context; for a row of 0, a row whose every value is NULL but those of
 * the columns added since.  Runs the types' output and input functions:
 * the caller runs it as the table's owner.  A value of a type that no
 * longer exists (the column's type was changed, then the type dropped)
 * cannot be read: an error.
 */
static Datum
entry_row_now(Relation rel, FeedEntry *e, TupleDesc stored, Datum row)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Datum	   *old_values = palloc0(sizeof(Datum) * Max(stored->natts, 1));
	bool	   *old_nulls = palloc(sizeof(bool) * Max(stored->natts, 1));
	Datum	   *values = palloc0(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);

	if (row != (Datum) 0)
		cr_conflict_deform_stored(row, stored, old_values, old_nulls);
	else
		memset(old_nulls, true, sizeof(bool) * Max(stored->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Form_pg_attribute old;
		Oid			outfunc;
		Oid			infunc;
		Oid			ioparam;
		bool		isvarlena;

		nulls[i] = true;
		if (att->attisdropped)
			continue;
		if (i >= stored->natts || TupleDescAttr(stored, i)->attisdropped)
		{
			/* added since the entry was recorded */
			values[i] = added_column_value(rel, i, &nulls[i]);
			continue;
		}
		old = TupleDescAttr(stored, i);
		if (old_nulls[i])
			continue;
		nulls[i] = false;
		if (old->atttypid == att->atttypid && old->atttypmod == att->atttypmod)
		{
			values[i] = old_values[i];
			continue;
		}
		if (!SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(old->atttypid)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("conflict " INT64_FORMAT " holds a value of column \"%s\" of a type that no longer exists",
							e->conflict_id, NameStr(att->attname)),
					 errhint("Supply the row with cosmosrep.resolve_conflict_with_row, or accept what the regions hold with cosmosrep.discard_conflict.")));
		getTypeOutputInfo(old->atttypid, &outfunc, &isvarlena);
		getTypeInputInfo(att->atttypid, &infunc, &ioparam);
		values[i] = OidInputFunctionCall(infunc,
										 OidOutputFunctionCall(outfunc, old_values[i]),
										 ioparam, att->atttypmod);
	}
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/*
 * Make entry e's rows rows of rel's row type now, if they were recorded
 * before its columns changed (see above): as the table's owner, since
 * the types' functions are the owner's code.
 */
static void
entry_rows_now(Relation rel, FeedEntry *e)
{
	int64		shape = cr_conflict_shape(RelationGetDescr(rel));
	TupleDesc	stored;
	CrUserContext user;

	if (e->shape == shape)
		return;
	stored = entry_stored_shape(e);
	cr_switch_to_owner(rel->rd_rel->relowner, &user);
	if (e->local_row != (Datum) 0)
		e->local_row = entry_row_now(rel, e, stored, e->local_row);
	if (e->remote_row != (Datum) 0)
		e->remote_row = entry_row_now(rel, e, stored, e->remote_row);
	cr_restore_user(&user);
	e->shape = shape;
}

/*
 * The columns that entry e's rows name differently from rel now, renamed
 * since the entry was recorded and whose name no column has now: their
 * former names and their names now, as two text arrays.
 */
static void
entry_renamed_columns(Relation rel, TupleDesc stored, Datum *former, Datum *current)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			n = 0;
	Datum	   *formers = palloc(sizeof(Datum) * Max(stored->natts, 1));
	Datum	   *currents = palloc(sizeof(Datum) * Max(stored->natts, 1));

	for (int i = 0; i < Min(stored->natts, desc->natts); i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Form_pg_attribute old = TupleDescAttr(stored, i);

		if (att->attisdropped || old->attisdropped ||
			strcmp(NameStr(att->attname), NameStr(old->attname)) == 0 ||
			SPI_fnumber(desc, NameStr(old->attname)) > 0)
			continue;
		formers[n] = CStringGetTextDatum(NameStr(old->attname));
		currents[n++] = CStringGetTextDatum(NameStr(att->attname));
	}
	*former = PointerGetDatum(construct_array(formers, n, TEXTOID, -1, false, TYPALIGN_INT));
	*current = PointerGetDatum(construct_array(currents, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * The row resolved_row (jsonb) supplies for entry e, as a composite datum
 * of rel's row type, read like jsonb_populate_record as the current user
 * (the caller runs it as the table's owner), or 0.  A column the row does
 * not name is NULL.  For an entry recorded before the table's columns
 * changed (stored is its shape, else NULL), the row may have the entry's
 * shape as well as the table's: a value under a column's former name goes
 * to the column (unless the row names the column too), the value of a
 * dropped column is ignored, and a column added since that the row does
 * not name takes its default (added_column_value).
 */
static Datum
entry_supplied_row(Relation rel, FeedEntry *e, TupleDesc stored, Datum resolved_row)
{
	Oid			argtypes[4] = {JSONBOID, rel->rd_rel->reltype, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[4] = {resolved_row, 0, 0, 0};

	if (stored == NULL)
		return spi_single_value(psprintf("SELECT pg_catalog.jsonb_populate_record(NULL::%s, $1)",
										 format_type_be_qualified(rel->rd_rel->reltype)),
								JSONBOID, resolved_row, true);
	args[1] = entry_row_now(rel, e, stored, (Datum) 0);
	entry_renamed_columns(rel, stored, &args[2], &args[3]);
	return spi_single_value_args("SELECT pg_catalog.jsonb_populate_record($2,"
								 " (SELECT pg_catalog.jsonb_object_agg("
								 "COALESCE(m.new_name, j.key), j.value)"
								 " FROM pg_catalog.jsonb_each($1) j"
								 " LEFT JOIN ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4))"
								 " m(old_name, new_name)"
								 " ON m.old_name OPERATOR(pg_catalog.=) j.key"
								 " AND NOT $1 OPERATOR(pg_catalog.?) m.new_name))",
								 4, argtypes, args, true);
}

/*
 * cosmosrep.resolve_conflict(conflict_id, keep_version): keep the row of
 * one of the entry's two versions (a version that deleted the key keeps
 * it deleted), as a new write of the caller.
 */
Datum
cosmosrep_resolve_conflict(PG_FUNCTION_ARGS)
{
	FeedEntry  *e = feed_entry_lock(PG_GETARG_INT64(0));
	int64		keep = PG_GETARG_INT64(1);
	Relation	rel;
	Datum		row;
	Datum		written;

	if (keep != e->local_version && keep != e->remote_version)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("version " INT64_FORMAT " is not a version of conflict " INT64_FORMAT,
						keep, e->conflict_id),
				 errhint("Keep version " INT64_FORMAT " or " INT64_FORMAT ".",
						 e->local_version, e->remote_version)));
	rel = feed_open(e);
	entry_rows_now(rel, e);
	row = keep == e->local_version ? e->local_row : e->remote_row;
	written = write_local(rel, row, e->local_row ? e->local_row : e->remote_row);
	feed_resolve(rel, e, cr_resolution_names[keep == e->local_version ? CR_RESOLUTION_LOCAL_KEPT : CR_RESOLUTION_REMOTE_APPLIED],
				 written);
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * cosmosrep.resolve_conflict_with_row(conflict_id, resolved_row): keep the
 * row the caller supplies (jsonb, read like jsonb_populate_record), which
 * must have the entry's primary key, as a new write of the caller.
 */
Datum
cosmosrep_resolve_conflict_with_row(PG_FUNCTION_ARGS)
{
	FeedEntry  *e = feed_entry_lock(PG_GETARG_INT64(0));
	Relation	rel = feed_open(e);
	TupleDesc	stored = NULL;
	TupleTableSlot *slot;
	Datum		row;
	Datum		written;
	HeapTupleData tuple;
	CrUserContext user;
	bool		same_key = false;

	if (cr_conflict_shape(RelationGetDescr(rel)) != e->shape)
		stored = entry_stored_shape(e);

	/*
	 * Reading the row runs the input functions and domain constraints of
	 * the columns' types, and comparing its key the key's output: the
	 * owner's code, run as the owner (see write_local).
	 */
	cr_switch_to_owner(rel->rd_rel->relowner, &user);
	row = entry_supplied_row(rel, e, stored, PG_GETARG_DATUM(1));

	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	if (row != (Datum) 0)
	{
		tuple.t_len = HeapTupleHeaderGetDatumLength(DatumGetHeapTupleHeader(row));
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = e->relid;
		tuple.t_data = DatumGetHeapTupleHeader(row);
		ExecStoreHeapTuple(&tuple, slot, false);
		same_key = cr_tombstone_key_equal(cr_tombstone_key(rel, slot), e->key);
	}
	cr_restore_user(&user);
	if (!same_key)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the row has another primary key than conflict " INT64_FORMAT,
						e->conflict_id),
				 errhint("Supply a row with the key of the conflict.")));
	ExecDropSingleTupleTableSlot(slot);

	written = write_local(rel, row, (Datum) 0);
	feed_resolve(rel, e, cr_resolution_names[CR_RESOLUTION_MERGED], written);
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * cosmosrep.reapply_conflict(conflict_id): apply the entry again through
 * the table's policy as it is now (after the resolver or the data was
 * fixed): the resolver, as the table's owner with
 * SECURITY_RESTRICTED_OPERATION and an empty search_path, on the entry's
 * two writes; for a change that user code rejected, and under other
 * policies, the remote write (for a delete, the delete of the key).  The
 * outcome is written as a new write of the caller (write_local).  A
 * resolver that fails again is an error.  Returns the resolution.
 */
Datum
cosmosrep_reapply_conflict(PG_FUNCTION_ARGS)
{
	FeedEntry  *e = feed_entry_lock(PG_GETARG_INT64(0));
	Relation	rel = feed_open(e);
	const char *resolution = reapply_entry(rel, e);

	table_close(rel, NoLock);
	PG_RETURN_TEXT_P(cstring_to_text(resolution));
}

/*
 * Apply entry e of rel again (see cosmosrep.reapply_conflict); returns the
 * resolution.
 */
static const char *
reapply_entry(Relation rel, FeedEntry *e)
{
	CrTableConfig *config = cr_get_table_config(e->relid);
	const char *resolution = cr_resolution_names[CR_RESOLUTION_REMOTE_APPLIED];
	Datum		row;
	Datum		written;

	entry_rows_now(rel, e);
	row = e->remote_row;
	if (config == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not multi-region", RelationGetRelationName(rel))));
	if (cr_policy_kind(config->policy, config->path != NULL) == CR_POLICY_CUSTOM &&
		strcmp(e->kind, cr_conflict_kind_names[CR_CONFLICT_APPLY_ERROR]) != 0)
	{
		CrPolicy   *policy = cr_policy_load(rel, config->policy, config->path,
											config->resolver);
		TupleTableSlot *merged = MakeSingleTupleTableSlot(RelationGetDescr(rel),
														  &TTSOpsVirtual);
		CrUserContext user;
		bool		deleted;
		bool		ok;
		char	   *error = NULL;

		cr_switch_to_owner(rel->rd_rel->relowner, &user);
		ok = cr_call_resolver(policy, rel, e->key, e->remote_row, e->local_row,
							  merged, &deleted, &error);
		cr_restore_user(&user);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
					 errmsg("resolver of table \"%s\" failed on conflict " INT64_FORMAT ": %s",
							RelationGetRelationName(rel), e->conflict_id, error)));
		row = deleted ? (Datum) 0 : ExecFetchSlotHeapTupleDatum(merged);
		resolution = cr_resolution_names[CR_RESOLUTION_MERGED];
	}
	written = write_local(rel, row, e->local_row ? e->local_row : e->remote_row);
	feed_resolve(rel, e, resolution, written);
	return resolution;
}

/*
 * cosmosrep.discard_conflict(conflict_id): accept what the regions hold,
 * without a write: the row last-writer-wins picked for a pending entry,
 * the local row for an error entry.
 */
Datum
cosmosrep_discard_conflict(PG_FUNCTION_ARGS)
{
	FeedEntry  *e = feed_entry_lock(PG_GETARG_INT64(0));
	Relation	rel = feed_open(e);
	bool		remote_held = strcmp(e->resolution, cr_resolution_names[CR_RESOLUTION_PENDING]) == 0 &&
		e->remote_version > e->local_version;

	feed_resolve(rel, e, cr_resolution_names[remote_held ? CR_RESOLUTION_REMOTE_APPLIED : CR_RESOLUTION_LOCAL_KEPT],
				 (Datum) 0);
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * A new arbiter
 * ----------------------------------------------------------------
 */

/*
 * The version of the row of rel that has the key of the composite datum
 * keyrow, or 0 without one; read as the table's owner (the key's equality
 * operators are the owner's types').
 */
static int64
current_version(Relation rel, Datum keyrow)
{
	StringInfoData sql;
	ListCell   *lc;
	CrUserContext user;
	Datum		version;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT t.%s::pg_catalog.text FROM %s%s t WHERE true",
					 CR_VERSION_COLUMN,
					 rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	foreach(lc, key_columns(rel))
		appendStringInfo(&sql, " AND t.%s OPERATOR(pg_catalog.=) ($1).%s",
						 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
	cr_switch_to_owner(rel->rd_rel->relowner, &user);
	version = spi_single_value(sql.data, rel->rd_rel->reltype, keyrow, true);
	cr_restore_user(&user);
	return version == (Datum) 0 ? 0 : pg_strtoint64(TextDatumGetCString(version));
}

/*
 * Take over tentative entry conflict_id: if its key still holds the write
 * that won by version (no arbiter's write and no later write replaced
 * it), run the resolver on the two writes now and write its row, as the
 * arbiter does (reapply_entry); the entry then shows as this arbiter's
 * record of the conflict.  Otherwise the conflict was settled by a later
 * write: the entry is marked so.
 */
static void
take_over_entry(int64 conflict_id)
{
	FeedEntry  *e = feed_entry_lock(conflict_id);
	Relation	rel = feed_open(e);
	int64		held = Max(e->local_version, e->remote_version);
	const char *region = cr_get_region_by_id(cr_local_region_id(false))->name;
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(conflict_id), CStringGetTextDatum(region)};

	entry_rows_now(rel, e);
	if (current_version(rel, e->remote_row ? e->remote_row : e->local_row) == held)
	{
		/*
		 * The resolver's row holds this region's write that the held one
		 * replaced: the new write has seen it (seen.c).
		 */
		(void) cr_lost_take(e->relid, e->key);
		(void) reapply_entry(rel, e);
	}
	/* this region's record of the conflict, resolved by it or superseded */
	(void) cr_catalog_write(NULL,
							"UPDATE cosmosrep.conflict"
							" SET resolution = CASE WHEN resolved_at IS NULL"
							"                  THEN resolution ELSE 'merged' END,"
							"     resolved_at = pg_catalog.now(), resolved_by = $2"
							" WHERE conflict_id OPERATOR(pg_catalog.=) $1",
							2, argtypes, values, NULL, SPI_OK_UPDATE);
	table_close(rel, NoLock);
}

/*
 * This region has become the arbiter (launcher.c).  The conflicts under a
 * resolver that it decided by version meanwhile, as every region but the
 * arbiter does, wait in its tentative entries; an arbiter that resolved
 * them sent a resolved message that marked them.  Those the former
 * arbiter never resolved (it was unreachable, then removed, or lost its
 * role first) are resolved now, each in a subtransaction: one that fails
 * (a resolver's error, a table that changed shape) stays tentative, with
 * a WARNING, and is tried again at the next change of arbiter.
 */
void
cr_feed_take_over(void)
{
	MemoryContext callerctx = CurrentMemoryContext;
	ResourceOwner callerowner = CurrentResourceOwner;
	List	   *ids = NIL;
	ListCell   *lc;

	SPI_connect();
	if (cr_catalog_query(NULL,
						 "SELECT conflict_id FROM cosmosrep.conflict"
						 " WHERE resolved_at IS NULL AND resolution OPERATOR(pg_catalog.=) 'tentative'"
						 " ORDER BY conflict_id",
						 0, NULL, NULL, NULL, true) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tentative conflicts");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext spictx = MemoryContextSwitchTo(callerctx);

		ids = lappend(ids, palloc(sizeof(int64)));
		*(int64 *) llast(ids) = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
															 SPI_tuptable->tupdesc, 1,
															 &isnull));
		MemoryContextSwitchTo(spictx);
	}
	SPI_finish();

	foreach(lc, ids)
	{
		int64		id = *(int64 *) lfirst(lc);

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(callerctx);
		PG_TRY();
		{
			take_over_entry(id);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(callerctx);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			if (cr_error_is_transient(edata->sqlerrcode))
				ReThrowError(edata);
			ereport(WARNING,
					(errmsg("could not resolve tentative conflict " INT64_FORMAT ": %s",
							id, edata->message)));
		}
		PG_END_TRY();
		MemoryContextSwitchTo(callerctx);
		CurrentResourceOwner = callerowner;
	}
}
