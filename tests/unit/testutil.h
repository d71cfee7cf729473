/*
 * What the unit tests that run a libuv loop share: the loop with its
 * watchdog and tick timers, RUN_UNTIL, and a temporary directory.
 *
 * The watchdog turns a test that would wait forever into a failure.  The
 * tick wakes the loop every few milliseconds: libuv (1.44) runs due timers
 * before it polls, so a condition that a zero timer makes true (the memory
 * transport's events come from timers) would otherwise be seen only when
 * the poll ends at the next timer, the watchdog.
 */
#ifndef NCGRPC_TESTUTIL_H
#define NCGRPC_TESTUTIL_H

#include <stddef.h>

#include <uv.h>

struct tloop {
	uv_loop_t tl_loop;
	uv_timer_t tl_watchdog;
	uv_timer_t tl_tick;
	int tl_timed_out;
	/*
	 * Optional: work outside the loop that RUN_UNTIL does before each
	 * turn of the loop (h2_test: its nghttp2 peer sends and receives).
	 */
	void (*tl_pump)(void *arg);
	void *tl_pump_arg;
};

/* Initialises the loop and starts both timers (asserts on failure). */
void tloop_init(struct tloop *tl, unsigned watchdog_ms, unsigned tick_ms);

/*
 * Closes both timers, runs the loop until nothing is left and asserts that
 * uv_run() and uv_loop_close() return 0: every other handle must have been
 * closed by then.
 */
void tloop_done(struct tloop *tl);

/* Runs the loop for ms milliseconds. */
void tloop_run_for(struct tloop *tl, unsigned ms);

/*
 * Runs the loop of tl (a struct tloop *), with its pump if it has one,
 * until cond holds.
 */
#define RUN_UNTIL(tl, cond)                                                    \
	do {                                                                   \
		while (!(cond)) {                                              \
			if ((tl)->tl_timed_out)                                \
				fail_msg("watchdog fired waiting for %s",      \
				         #cond);                               \
			if ((tl)->tl_pump != NULL) {                           \
				(tl)->tl_pump((tl)->tl_pump_arg);              \
				if (cond)                                      \
					break;                                 \
			}                                                      \
			uv_run(&(tl)->tl_loop, UV_RUN_ONCE);                   \
		}                                                              \
	} while (0)

/* Makes the directory /tmp/<prefix>.XXXXXX; its name goes to dir. */
void tdir_make(char *dir, size_t size, const char *prefix);

/* Removes the files in dir (not its subdirectories), then dir. */
void tdir_remove(const char *dir);

#endif
