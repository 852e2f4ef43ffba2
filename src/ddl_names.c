/*-------------------------------------------------------------------------
 *
 * ddl_names.c
 *	  The names a multi-region table and its columns had: what a row of an
 *	  older shape, or a table named by an older name, is matched with.
 *
 * NOTES
 *	  cosmosrep.ddl_table and cosmosrep.ddl_column keep every name each
 *	  table and each column (by attribute number) had before and after
 *	  each replicated schema change, in the region that made it and in
 *	  every region that replayed it (ddl.c records them).  Apply reads
 *	  them to map the columns of rows written before a change
 *	  (apply_relation.c), and to find a table by a name it had before a
 *	  rename or SET SCHEMA.  Everything goes through the catalog's pinned
 *	  queries (catalog.c), each prepared once per backend.
 *
 * IDENTIFICATION
 *	  src/ddl_names.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "ddl_names.h"

/* remember the names relid and its columns have now */
void
cr_ddl_record_names(Oid relid)
{
	static SPIPlanPtr record_table_plan = NULL;
	static SPIPlanPtr record_plan = NULL;
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	(void) cr_catalog_write(&record_table_plan,
							"INSERT INTO cosmosrep.ddl_table (relid, nspname, relname)"
							" SELECT c.oid, n.nspname, c.relname"
							" FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
							" ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
							" WHERE c.oid OPERATOR(pg_catalog.=) $1"
							" ON CONFLICT DO NOTHING",
							1, argtypes, values, NULL, SPI_OK_INSERT);

	(void) cr_catalog_write(&record_plan,
							"INSERT INTO cosmosrep.ddl_column (relid, attnum, attname, missing)"
							" SELECT attrelid, attnum, attname,"
							" CASE WHEN atthasmissing THEN"
							" (attmissingval::pg_catalog.text::pg_catalog.text[])[1] END"
							" FROM pg_catalog.pg_attribute"
							" WHERE attrelid OPERATOR(pg_catalog.=) $1"
							" AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped"
							" ON CONFLICT DO NOTHING",
							1, argtypes, values, NULL, SPI_OK_INSERT);
}

/*
 * The multi-region table that was named nspname.relname before a
 * replicated rename or SET SCHEMA, or InvalidOid.
 */
Oid
cr_ddl_former_table(const char *nspname, const char *relname)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(nspname), CStringGetTextDatum(relname)};
	Oid			relid = InvalidOid;

	SPI_connect();
	(void) cr_catalog_query(&plan, "SELECT t.relid FROM cosmosrep.ddl_table t"
							" JOIN cosmosrep.replicated_table r ON r.relid::pg_catalog.oid OPERATOR(pg_catalog.=) t.relid"
							" WHERE t.nspname::pg_catalog.text OPERATOR(pg_catalog.=) $1"
							" AND t.relname::pg_catalog.text OPERATOR(pg_catalog.=) $2",
							2, argtypes, values, NULL, true);
	if (SPI_processed == 1)
	{
		bool		isnull;

		relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	return relid;
}

/* whether attribute attnum of relid had a name in a replicated change */
bool
cr_ddl_attnum_known(Oid relid, AttrNumber attnum)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {OIDOID, INT2OID};
	Datum		values[2] = {ObjectIdGetDatum(relid), Int16GetDatum(attnum)};
	bool		known;

	SPI_connect();
	(void) cr_catalog_query(&plan, "SELECT 1 FROM cosmosrep.ddl_column"
							" WHERE relid OPERATOR(pg_catalog.=) $1"
							" AND attnum OPERATOR(pg_catalog.=) $2",
							2, argtypes, values, NULL, true);
	known = SPI_processed > 0;
	SPI_finish();
	return known;
}

/* whether a column of relid was named attname in a replicated change */
bool
cr_ddl_name_known(Oid relid, const char *attname)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), CStringGetTextDatum(attname)};
	bool		known;

	SPI_connect();
	(void) cr_catalog_query(&plan, "SELECT 1 FROM cosmosrep.ddl_column"
							" WHERE relid OPERATOR(pg_catalog.=) $1"
							" AND attname::pg_catalog.text OPERATOR(pg_catalog.=) $2",
							2, argtypes, values, NULL, true);
	known = SPI_processed > 0;
	SPI_finish();
	return known;
}

/*
 * Of the peer's column names, the index of one that attribute attnum of
 * relid had before a rename, and that no column of desc has now; -1 if
 * none.
 */
int
cr_ddl_former_column(Oid relid, AttrNumber attnum, char **names, int nnames,
					 TupleDesc desc)
{
	for (int r = 0; r < nnames; r++)
	{
		static SPIPlanPtr plan = NULL;
		Oid			argtypes[3] = {OIDOID, INT2OID, TEXTOID};
		Datum		values[3] = {ObjectIdGetDatum(relid), Int16GetDatum(attnum),
		CStringGetTextDatum(names[r])};
		bool		found;

		if (SPI_fnumber(desc, names[r]) > 0)
			continue;
		SPI_connect();
		(void) cr_catalog_query(&plan, "SELECT 1 FROM cosmosrep.ddl_column"
								" WHERE relid OPERATOR(pg_catalog.=) $1"
								" AND attnum OPERATOR(pg_catalog.=) $2"
								" AND attname::pg_catalog.text OPERATOR(pg_catalog.=) $3",
								3, argtypes, values, NULL, true);
		found = SPI_processed > 0;
		SPI_finish();
		if (found)
			return r;
	}
	return -1;
}

/*
 * The value, as text, that the rows existing when attribute attnum of
 * relid was added got from its default, as recorded then; NULL if none.
 * A table rewrite (ALTER COLUMN TYPE) makes PostgreSQL forget it, while
 * rows of the old shape may still arrive.  In CurrentMemoryContext.
 */
char *
cr_ddl_missing_value(Oid relid, AttrNumber attnum)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {OIDOID, INT2OID};
	Datum		values[2] = {ObjectIdGetDatum(relid), Int16GetDatum(attnum)};
	MemoryContext caller = CurrentMemoryContext;
	char	   *missing = NULL;

	SPI_connect();
	(void) cr_catalog_query(&plan, "SELECT missing FROM cosmosrep.ddl_column"
							" WHERE relid OPERATOR(pg_catalog.=) $1"
							" AND attnum OPERATOR(pg_catalog.=) $2"
							" AND missing IS NOT NULL LIMIT 1",
							2, argtypes, values, NULL, true);
	if (SPI_processed > 0)
		missing = MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1));
	SPI_finish();
	return missing;
}
