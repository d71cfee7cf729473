/*
 * Unit tests of the cluster key layout (src/nms/clusterkey.c, included).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "nms/clusterkey.c"

static void
test_prefix(void **state)
{
	char big[CLUSTERKEY_PREFIX_MAX + 2];

	(void)state;
	assert_true(clusterkey_prefix_valid("/ncgrpc/"));
	assert_true(clusterkey_prefix_valid("//"));
	assert_true(clusterkey_prefix_valid("/a/b/"));
	assert_false(clusterkey_prefix_valid("/"));
	assert_false(clusterkey_prefix_valid(""));
	assert_false(clusterkey_prefix_valid("ncgrpc/"));
	assert_false(clusterkey_prefix_valid("/ncgrpc"));
	assert_false(clusterkey_prefix_valid("/a b/"));
	assert_false(clusterkey_prefix_valid("/a\x7f/"));
	memset(big, 'a', sizeof(big));
	big[0] = '/';
	big[CLUSTERKEY_PREFIX_MAX - 1] = '/';
	big[CLUSTERKEY_PREFIX_MAX] = '\0';
	assert_true(clusterkey_prefix_valid(big));
	big[CLUSTERKEY_PREFIX_MAX - 1] = 'a';
	big[CLUSTERKEY_PREFIX_MAX] = '/';
	big[CLUSTERKEY_PREFIX_MAX + 1] = '\0';
	assert_false(clusterkey_prefix_valid(big));
}

static void
test_make(void **state)
{
	char key[CLUSTERKEY_MAX + 1], name[CLUSTERKEY_NAME_MAX + 2];
	size_t klen;

	(void)state;
	assert_int_equal(clusterkey_make("/ncgrpc/", CLUSTERKEY_NODE, "nms-1",
	                                 key, sizeof(key), &klen),
	                 0);
	assert_string_equal(key, "/ncgrpc/nodes/nms-1");
	assert_int_equal(klen, strlen(key));
	assert_int_equal(clusterkey_make("/p/", CLUSTERKEY_DEVICE, "r1@x:y",
	                                 key, sizeof(key), &klen),
	                 0);
	assert_string_equal(key, "/p/devices/r1@x:y");
	assert_int_equal(clusterkey_make("/p/", CLUSTERKEY_PRESENCE, "", key,
	                                 sizeof(key), &klen),
	                 0);
	assert_string_equal(key, "/p/presence/");
	assert_int_equal(clusterkey_make("/p/", CLUSTERKEY_DEVICE, "a/b", key,
	                                 sizeof(key), &klen),
	                 -EINVAL);
	assert_int_equal(clusterkey_make("/p/", CLUSTERKEY_DEVICE, "a b", key,
	                                 sizeof(key), &klen),
	                 -EINVAL);
	assert_int_equal(
	    clusterkey_make("/p/", CLUSTERKEY_DEVICE, "abc", key, 12, &klen),
	    -ENAMETOOLONG);
	memset(name, 'x', CLUSTERKEY_NAME_MAX);
	name[CLUSTERKEY_NAME_MAX] = '\0';
	assert_true(clusterkey_name_valid(name));
	assert_int_equal(clusterkey_make("/p/", CLUSTERKEY_PRESENCE, name, key,
	                                 sizeof(key), &klen),
	                 0);
	name[CLUSTERKEY_NAME_MAX] = 'x';
	name[CLUSTERKEY_NAME_MAX + 1] = '\0';
	assert_false(clusterkey_name_valid(name));
}

static void
parse_is(const char *key, enum clusterkey_kind want, const char *wname)
{
	enum clusterkey_kind kind;
	char name[CLUSTERKEY_NAME_MAX + 1];

	assert_int_equal(
	    clusterkey_parse("/ncgrpc/", key, strlen(key), &kind, name), 0);
	assert_int_equal(kind, want);
	assert_string_equal(name, wname);
}

static void
parse_not(const char *key, size_t len)
{
	enum clusterkey_kind kind;
	char name[CLUSTERKEY_NAME_MAX + 1];

	assert_int_equal(clusterkey_parse("/ncgrpc/", key, len, &kind, name),
	                 -ENOENT);
}

static void
test_parse(void **state)
{
	(void)state;
	parse_is("/ncgrpc/nodes/A", CLUSTERKEY_NODE, "A");
	parse_is("/ncgrpc/devices/dev-1.x", CLUSTERKEY_DEVICE, "dev-1.x");
	parse_is("/ncgrpc/presence/r@1", CLUSTERKEY_PRESENCE, "r@1");
	parse_not("/ncgrpc/presence/", 17);
	parse_not("/ncgrpc/other/x", 15);
	parse_not("/ncgrp", 6);
	parse_not("/other/nodes/A", 14);
	parse_not("/ncgrpc/nodes/a/b", 17);
	parse_not("/ncgrpc/nodes/a\0b", 17);
	/* Not NUL terminated: only klen bytes count. */
	parse_is("/ncgrpc/nodes/A", CLUSTERKEY_NODE, "A");
	{
		enum clusterkey_kind kind;
		char name[CLUSTERKEY_NAME_MAX + 1];

		assert_int_equal(clusterkey_parse("/ncgrpc/",
		                                  "/ncgrpc/devices/abcdef", 19,
		                                  &kind, name),
		                 0);
		assert_string_equal(name, "abc");
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prefix),
	    cmocka_unit_test(test_make),
	    cmocka_unit_test(test_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
