/*-------------------------------------------------------------------------
 *
 * wait.h
 *	  The one way cosmosrep sleeps between two polls.
 *
 * NOTES
 *	  Every poll loop (a session token, the staleness bound, a join's
 *	  catch-up, a worker's exit) sleeps on the process latch, so that a
 *	  SIGTERM, a cancel or the postmaster's death ends the wait at once,
 *	  and handles interrupts after it.  Never pg_usleep in a loop.
 *
 * IDENTIFICATION
 *	  src/wait.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CR_WAIT_H
#define CR_WAIT_H

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

/* sleep up to ms on the latch, then handle interrupts */
static inline void
cr_sleep_ms(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

#endif							/* CR_WAIT_H */
