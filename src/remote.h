/*-------------------------------------------------------------------------
 *
 * remote.h
 *	  libpq connections from cosmosrep backends and workers to other regions.
 *
 * IDENTIFICATION
 *	  src/remote.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_REMOTE_H
#define CR_REMOTE_H

#include "libpq-fe.h"

extern PGconn *cr_remote_connect(const char *dsn, bool replication,
								 const char *appname, const char *region);
extern PGconn *cr_remote_connect_keepalives(const char *dsn, bool replication,
											const char *appname, const char *region,
											int idle_s, int interval_s, int count);
extern PGresult *cr_remote_exec(PGconn *conn, const char *sql,
								ExecStatusType expected, const char *region);
extern PGresult *cr_remote_exec_params(PGconn *conn, const char *sql, int nparams,
										const char *const *values,
										ExecStatusType expected, const char *region);
extern PGresult *cr_remote_exec_any(PGconn *conn, const char *sql,
									const char *region);
extern char *cr_remote_result_message(const PGresult *res);
extern void cr_remote_fail(PGconn *conn, PGresult *last, const char *sql,
						   const char *region) pg_attribute_noreturn();
extern void cr_remote_command(PGconn *conn, const char *sql, const char *region);
extern void cr_remote_wait_readable(PGconn *conn);

#endif							/* CR_REMOTE_H */
