/*-------------------------------------------------------------------------
 *
 * names.c
 *	  Finding cosmosrep's columns in a table by their names.
 *
 * NOTES
 *	  names.h says how cosmosrep names what it adds; this file holds the
 *	  one function that looks the added columns up, for the row trigger,
 *	  the output plugin, apply and the policies.  It calls nothing of
 *	  cosmosrep's.
 *
 * IDENTIFICATION
 *	  src/names.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tupdesc.h"

#include "names.h"

/*
 * The attribute numbers of cosmosrep's five columns in desc, 0 for each
 * that it lacks (a dropped column does not count); returns whether it has
 * the first four.  A table enabled under version 0.1 has no _cr_seen until
 * ALTER EXTENSION cosmosrep UPDATE adds it: the library runs without it
 * meanwhile (seen.c).
 */
bool
cr_find_columns(TupleDesc desc, CrColumns *columns)
{
	memset(columns, 0, sizeof(CrColumns));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);

		if (att->attisdropped || name[0] != '_')
			continue;
		if (strcmp(name, CR_VERSION_COLUMN) == 0)
			columns->version = att->attnum;
		else if (strcmp(name, CR_BASE_COLUMN) == 0)
			columns->base = att->attnum;
		else if (strcmp(name, CR_REGION_COLUMN) == 0)
			columns->region = att->attnum;
		else if (strcmp(name, CR_CONFIG_COLUMN) == 0)
			columns->config = att->attnum;
		else if (strcmp(name, CR_SEEN_COLUMN) == 0)
			columns->seen = att->attnum;
	}
	return columns->version > 0 && columns->base > 0 &&
		columns->region > 0 && columns->config > 0;
}

/*
 * Whether rows formed with desc a can be stored, read and compared as rows
 * of desc b, position by position: the same number of attributes, each
 * with the same name, type, typmod, storage and dropped flag.  A
 * partition created with CREATE TABLE ... PARTITION OF has its
 * partitioned table's layout (unless the table has dropped columns).
 */
bool
cr_same_column_layout(TupleDesc a, TupleDesc b)
{
	if (a->natts != b->natts)
		return false;
	for (int i = 0; i < a->natts; i++)
	{
		Form_pg_attribute x = TupleDescAttr(a, i);
		Form_pg_attribute y = TupleDescAttr(b, i);

		if (x->attisdropped != y->attisdropped || x->atttypid != y->atttypid ||
			x->atttypmod != y->atttypmod || x->attlen != y->attlen ||
			x->attalign != y->attalign || x->attbyval != y->attbyval ||
			x->attgenerated != y->attgenerated ||
			(!x->attisdropped && strcmp(NameStr(x->attname), NameStr(y->attname)) != 0))
			return false;
	}
	return true;
}
