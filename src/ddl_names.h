/*-------------------------------------------------------------------------
 *
 * ddl_names.h
 *	  The names multi-region tables and their columns had (ddl_names.c).
 *
 * IDENTIFICATION
 *	  src/ddl_names.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_DDL_NAMES_H
#define CR_DDL_NAMES_H

#include "access/attnum.h"
#include "access/tupdesc.h"

extern void cr_ddl_record_names(Oid relid);
extern Oid	cr_ddl_former_table(const char *nspname, const char *relname);
extern bool cr_ddl_attnum_known(Oid relid, AttrNumber attnum);
extern bool cr_ddl_name_known(Oid relid, const char *attname);
extern char *cr_ddl_missing_value(Oid relid, AttrNumber attnum);
extern int	cr_ddl_former_column(Oid relid, AttrNumber attnum, char **names,
								 int nnames, TupleDesc desc);

#endif							/* CR_DDL_NAMES_H */
