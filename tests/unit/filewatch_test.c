#include <errno.h>
#include <fcntl.h>
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

#include "common/filewatch.h"

struct fwtest {
	uv_loop_t loop;
	struct filewatch fw;
	uv_timer_t step;
	int calls;
	int stage;
	char dir[64];
	char path[128];
	char other[128];
};

static void
on_change(void *arg)
{
	struct fwtest *t = arg;

	t->calls++;
}

static void
put(const char *path, const char *text)
{
	char tmp[160];
	FILE *fp;

	/* Write beside, then rename over: what editors and registry_add do. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fp = fopen(tmp, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(rename(tmp, path), 0);
}

/*
 * Stages, 400 ms apart (the watch's delay is 100 ms):
 * 0: a burst of three replacements of the file -> one callback;
 * 1: another file in the directory changes -> no callback;
 * 2: the file is rewritten in place -> one callback; then close.
 */
static void
on_step(uv_timer_t *h)
{
	struct fwtest *t = h->data;
	FILE *fp;

	switch (t->stage++) {
	case 0:
		put(t->path, "a");
		put(t->path, "b");
		put(t->path, "c");
		break;
	case 1:
		assert_int_equal(t->calls, 1);
		put(t->other, "x");
		break;
	case 2:
		assert_int_equal(t->calls, 1);
		fp = fopen(t->path, "a");
		assert_non_null(fp);
		fputs("more", fp);
		fclose(fp);
		break;
	default:
		assert_int_equal(t->calls, 2);
		filewatch_close(&t->fw);
		uv_close((uv_handle_t *)&t->step, NULL);
		return;
	}
	uv_timer_start(&t->step, on_step, 400, 0);
}

static void
test_changes(void **state)
{
	struct fwtest t;

	(void)state;
	memset(&t, 0, sizeof(t));
	snprintf(t.dir, sizeof(t.dir), "/tmp/filewatch.XXXXXX");
	assert_non_null(mkdtemp(t.dir));
	snprintf(t.path, sizeof(t.path), "%s/agent.conf", t.dir);
	snprintf(t.other, sizeof(t.other), "%s/other.conf", t.dir);
	put(t.path, "start");
	assert_int_equal(uv_loop_init(&t.loop), 0);
	assert_int_equal(
	    filewatch_start(&t.loop, &t.fw, t.path, 100, on_change, &t), 0);
	uv_timer_init(&t.loop, &t.step);
	t.step.data = &t;
	uv_timer_start(&t.step, on_step, 100, 0);
	assert_int_equal(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&t.loop), 0);
	assert_int_equal(t.stage, 4);
	unlink(t.path);
	unlink(t.other);
	rmdir(t.dir);
}

static void
test_missing_directory(void **state)
{
	struct filewatch fw;
	uv_loop_t loop;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	/* An error, and the handles still close cleanly. */
	assert_int_equal(filewatch_start(&loop, &fw, "/nonexistent/dir/x.conf",
	                                 100, on_change, NULL),
	                 UV_ENOENT);
	filewatch_close(&fw);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_changes),
	    cmocka_unit_test(test_missing_directory),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
