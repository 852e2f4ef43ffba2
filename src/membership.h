/*-------------------------------------------------------------------------
 *
 * membership.h
 *	  Region membership: join, add, remove, pause and resume.
 *
 * IDENTIFICATION
 *	  src/membership.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_MEMBERSHIP_H
#define CR_MEMBERSHIP_H

/* in sql_api.c */
extern void cr_validate_region_name(const char *name);
extern void cr_validate_dsn(const char *dsn);

#endif							/* CR_MEMBERSHIP_H */
