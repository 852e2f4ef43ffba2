/*-------------------------------------------------------------------------
 *
 * row_trigger.h
 *	  The row trigger that stamps local writes of multi-region tables.
 *
 * IDENTIFICATION
 *	  src/row_trigger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_ROW_TRIGGER_H
#define CR_ROW_TRIGGER_H

/*
 * Payload of the transactional logical message written before each local
 * delete: the version the deleted row had, which the output plugin ships
 * as the delete's base version.
 */
typedef struct CrDeleteBase
{
	Oid			relid;
	int64		base_version;
} CrDeleteBase;

#endif							/* CR_ROW_TRIGGER_H */
