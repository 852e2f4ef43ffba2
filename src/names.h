/*-------------------------------------------------------------------------
 *
 * names.h
 *	  The names cosmosrep gives to the things it adds: its schema and
 *	  output plugin, the columns and triggers of multi-region tables, the
 *	  delete-base message, replication slots and origins.
 *
 * NOTES
 *	  The bottom of the source tree: names.c, which finds the columns by
 *	  these names, calls nothing of cosmosrep's.  Region P's changes reach region L through the slot "cr_<P>_<L>" on
 *	  P, and L records how far it applied them in the replication origin
 *	  "cosmosrep_<P>".  Every place that names a slot or an origin builds
 *	  the name here.  Region names are at most 28 characters, so a slot
 *	  name fits NAMEDATALEN.
 *
 * IDENTIFICATION
 *	  src/names.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_NAMES_H
#define CR_NAMES_H

#include "access/attnum.h"
#include "access/tupdesc.h"
#include "utils/palloc.h"

#define COSMOSREP_SCHEMA			"cosmosrep"
#define COSMOSREP_PLUGIN			"cosmosrep"

/* columns added to every enabled table */
#define CR_VERSION_COLUMN			"_cr_version"
#define CR_BASE_COLUMN				"_cr_base"
#define CR_REGION_COLUMN			"_cr_region"
#define CR_CONFIG_COLUMN			"_cr_config"
#define CR_SEEN_COLUMN				"_cr_seen"

/* where a table has them (cr_find_columns, in names.c) */
typedef struct CrColumns
{
	AttrNumber	version;
	AttrNumber	base;
	AttrNumber	region;
	AttrNumber	config;
	AttrNumber	seen;
} CrColumns;

extern bool cr_find_columns(TupleDesc desc, CrColumns *columns);
extern bool cr_same_column_layout(TupleDesc a, TupleDesc b);

/* the triggers installed on every enabled table */
#define CR_TRIGGER_NAME				"cosmosrep_stamp"
#define CR_TRUNCATE_TRIGGER_NAME	"cosmosrep_truncate"
#define CR_INSERT_CHECK_TRIGGER_NAME	"cosmosrep_insert_check"

/* prefix of the transactional logical message carrying a delete's base */
#define CR_DELETE_BASE_PREFIX		"cosmosrep.delete_base"

/* region ids live in the low 8 bits of a version */
#define CR_MAX_REGION_ID			255

/* every slot of cosmosrep starts so */
#define CR_SLOT_PREFIX			"cr_"

/* the slot that carries source's changes to target, palloc'd */
static inline char *
cr_slot_name(const char *source, const char *target)
{
	return psprintf(CR_SLOT_PREFIX "%s_%s", source, target);
}

/* the origin that records how far peer's changes are applied, palloc'd */
static inline char *
cr_origin_name(const char *peer)
{
	return psprintf("cosmosrep_%s", peer);
}

#endif							/* CR_NAMES_H */
