/*-------------------------------------------------------------------------
 *
 * ddl.h
 *	  Schema changes of multi-region tables: captured where they are made,
 *	  replayed in the other regions at their place in the stream.
 *
 * IDENTIFICATION
 *	  src/ddl.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_DDL_H
#define CR_DDL_H

extern void cr_ddl_define_settings(void);
extern void cr_ddl_install_hooks(void);
extern void cr_ddl_apply_statement(const char *content, Size size,
								   const char *origin_region);

#endif							/* CR_DDL_H */
