/*-------------------------------------------------------------------------
 *
 * sql_api.h
 *	  Validation of the arguments of cosmosrep's SQL functions, shared by
 *	  the files that take a region name or a connection string.
 *
 * IDENTIFICATION
 *	  src/sql_api.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_SQL_API_H
#define CR_SQL_API_H

extern void cr_validate_region_name(const char *name);
extern void cr_validate_dsn(const char *dsn);

#endif							/* CR_SQL_API_H */
