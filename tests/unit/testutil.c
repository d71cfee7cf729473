/* The shared part of the unit tests that run a loop (testutil.h). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "testutil.h"

static void
on_watchdog(uv_timer_t *t)
{
	struct tloop *tl = t->data;

	tl->tl_timed_out = 1;
}

static void
on_tick(uv_timer_t *t)
{
	(void)t;
}

void
tloop_init(struct tloop *tl, unsigned watchdog_ms, unsigned tick_ms)
{
	memset(tl, 0, sizeof(*tl));
	assert_int_equal(uv_loop_init(&tl->tl_loop), 0);
	uv_timer_init(&tl->tl_loop, &tl->tl_watchdog);
	tl->tl_watchdog.data = tl;
	uv_timer_start(&tl->tl_watchdog, on_watchdog, watchdog_ms, 0);
	uv_timer_init(&tl->tl_loop, &tl->tl_tick);
	uv_timer_start(&tl->tl_tick, on_tick, tick_ms, tick_ms);
}

void
tloop_done(struct tloop *tl)
{
	uv_close((uv_handle_t *)&tl->tl_watchdog, NULL);
	uv_close((uv_handle_t *)&tl->tl_tick, NULL);
	assert_int_equal(uv_run(&tl->tl_loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&tl->tl_loop), 0);
}

static void
on_run_for(uv_timer_t *t)
{
	*(int *)t->data = 1;
}

void
tloop_run_for(struct tloop *tl, unsigned ms)
{
	uv_timer_t t;
	int done = 0;

	uv_timer_init(&tl->tl_loop, &t);
	t.data = &done;
	uv_timer_start(&t, on_run_for, ms, 0);
	RUN_UNTIL(tl, done);
	uv_close((uv_handle_t *)&t, NULL);
	/* The close callback runs in the next iteration; t must outlive it. */
	uv_run(&tl->tl_loop, UV_RUN_NOWAIT);
}

void
tdir_make(char *dir, size_t size, const char *prefix)
{
	assert_true((size_t)snprintf(dir, size, "/tmp/%s.XXXXXX", prefix) <
	            size);
	assert_non_null(mkdtemp(dir));
}

void
tdir_remove(const char *dir)
{
	char path[1024];
	struct dirent *de;
	DIR *d;

	if ((d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(d);
	assert_int_equal(rmdir(dir), 0);
}
