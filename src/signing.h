/*-------------------------------------------------------------------------
 *
 * signing.h
 *	  Tags that prove a logical message was written by cosmosrep.
 *
 * IDENTIFICATION
 *	  src/signing.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_SIGNING_H
#define CR_SIGNING_H

#include "access/xlogdefs.h"

/* bytes of the tag that ends every message cosmosrep writes */
#define CR_MESSAGE_TAG_SIZE		8

extern Size cr_signing_shmem_size(void);
extern void cr_signing_shmem_init(void);

extern XLogRecPtr cr_log_message(const char *prefix, const char *content, Size size,
								 bool transactional);
extern bool cr_message_authentic(const char *prefix, const char *content, Size size,
								 bool transactional);

#endif							/* CR_SIGNING_H */
