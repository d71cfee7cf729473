/*
 * Unit tests for ncgrpc-sshd's authorized_keys parser and SSH user names
 * (src/sshd/akeys.c): good files, then truncated, oversized and malformed
 * input, each with the message an operator would see.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sshd/akeys.c"

/* Three keys made once: "TYPE BASE64" of each. */
static ssh_key keys[3];
static char pub[3][256];

static int
group_setup(void **state)
{
	char *b64;
	int i;

	(void)state;
	for (i = 0; i < 3; i++) {
		if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &keys[i]) !=
		        SSH_OK ||
		    ssh_pki_export_pubkey_base64(keys[i], &b64) != SSH_OK)
			return -1;
		snprintf(pub[i], sizeof(pub[i]), "ssh-ed25519 %s", b64);
		free(b64);
	}
	return 0;
}

static int
group_teardown(void **state)
{
	int i;

	(void)state;
	for (i = 0; i < 3; i++)
		ssh_key_free(keys[i]);
	return 0;
}

static struct akeys *
parse_ok(const char *text)
{
	struct akeys *as = NULL;
	char err[512];

	if (akeys_parse("ak", text, strlen(text), &as, err, sizeof(err)) != 0)
		fail_msg("parse failed: %s\n%s", err, text);
	assert_string_equal(err, "");
	return as;
}

static void
parse_fails(const char *text, int want_rc, const char *msg)
{
	struct akeys *as = (struct akeys *)(uintptr_t)1;
	char err[512];
	int rc;

	rc = akeys_parse("ak", text, strlen(text), &as, err, sizeof(err));
	if (rc != want_rc)
		fail_msg("rc %d, want %d for:\n%s\n(%s)", rc, want_rc, text,
		         err);
	assert_ptr_equal(as, (struct akeys *)(uintptr_t)1);
	if (strcmp(err, msg) != 0)
		fail_msg("for '%s'\n got: '%s'\nwant: '%s'", text, err, msg);
}

/* One line: options, key i, and a comment. */
static char *
line(const char *options, int i)
{
	static char buf[8192];

	snprintf(buf, sizeof(buf), "%s %s comment here\n", options, pub[i]);
	return buf;
}

static void
test_good(void **state)
{
	char text[4096];
	struct akeys *as;
	const struct akey *ak;

	(void)state;
	snprintf(
	    text, sizeof(text),
	    "# operators\n"
	    "\n"
	    "   \t\n"
	    "operator=\"alice\",devices=\"router-*,lab-?\" %s alice@laptop\n"
	    "operator=\"bob.smith\",devices=\"*\",sessions=\"netconf\" "
	    "%s\r\n"
	    "  sessions=\"shell,exec\",devices=\"sw1\",operator=\"c@d\" %s",
	    pub[0], pub[1], pub[2]);
	as = parse_ok(text);
	assert_int_equal(as->as_nkeys, 3);

	ak = akeys_find(as, keys[0]);
	assert_non_null(ak);
	assert_string_equal(ak->ak_operator, "alice");
	assert_int_equal(ak->ak_line, 4);
	assert_int_equal(ak->ak_ndevices, 2);
	assert_int_equal(ak->ak_sessions, AKEYS_ALL);
	assert_memory_equal(ak->ak_fp, "ssh-ed25519 SHA256:", 19);
	assert_true(akeys_allows(ak, "router-17", AKEYS_NETCONF));
	assert_true(akeys_allows(ak, "router-", AKEYS_EXEC));
	assert_true(akeys_allows(ak, "lab-9", AKEYS_SHELL));
	assert_false(akeys_allows(ak, "lab-10", AKEYS_SHELL));
	assert_false(akeys_allows(ak, "switch-1", AKEYS_NETCONF));
	assert_false(akeys_allows(ak, "xrouter-1", AKEYS_NETCONF));

	ak = akeys_find(as, keys[1]);
	assert_non_null(ak);
	assert_string_equal(ak->ak_operator, "bob.smith");
	assert_int_equal(ak->ak_sessions, AKEYS_NETCONF);
	assert_true(akeys_allows(ak, "anything", AKEYS_NETCONF));
	assert_false(akeys_allows(ak, "anything", AKEYS_SHELL));

	ak = akeys_find(as, keys[2]);
	assert_non_null(ak);
	assert_string_equal(ak->ak_operator, "c@d");
	assert_int_equal(ak->ak_sessions, AKEYS_SHELL | AKEYS_EXEC);
	assert_true(akeys_allows(ak, "sw1", AKEYS_EXEC));
	assert_false(akeys_allows(ak, "sw1", AKEYS_NETCONF));
	assert_false(akeys_allows(ak, "sw10", AKEYS_EXEC));
	akeys_free(as);

	/* An empty file is no keys; NULL and unknown keys find nothing. */
	as = parse_ok("");
	assert_int_equal(as->as_nkeys, 0);
	assert_null(akeys_find(as, keys[0]));
	assert_null(akeys_find(NULL, keys[0]));
	akeys_free(as);
	akeys_free(NULL);
}

static void
test_quotes(void **state)
{
	struct akeys *as;

	(void)state;
	/* \" and \\ are unescaped, then the value is checked. */
	parse_fails(line("operator=\"al\\\"ice\",devices=\"*\"", 0), -EINVAL,
	            "ak:1: operator: 1..64 letters, digits or \". _ @ -\"");
	/* al\\ice is al\ice, whose backslash no operator name has. */
	parse_fails(line("operator=\"al\\\\ice\",devices=\"*\"", 0), -EINVAL,
	            "ak:1: operator: 1..64 letters, digits or \". _ @ -\"");
	/* An escaped quote inside a device pattern is not a pattern byte. */
	parse_fails(line("operator=\"a\",devices=\"r\\\"\"", 0), -EINVAL,
	            "ak:1: devices: a pattern is empty, too long or holds a "
	            "byte other than letters, digits, \". _ : @ -\" and the "
	            "wildcards \"*\" and \"?\"");
	/* A value may hold the separators of the option list. */
	as = parse_ok(line("operator=\"a\",devices=\"x,y\"", 0));
	assert_int_equal(as->as_keys[0].ak_ndevices, 2);
	akeys_free(as);
}

static void
test_malformed(void **state)
{
	char text[20000];

	(void)state;
	snprintf(text, sizeof(text), "%s\n", pub[0]);
	parse_fails(text, -EINVAL,
	            "ak:1: expected an option NAME=\"VALUE\" before the key "
	            "(operator=, devices=, sessions=)");
	parse_fails(line("devices=\"*\"", 0), -EINVAL,
	            "ak:1: operator=\"NAME\" and devices=\"PATTERNS\" are "
	            "required");
	parse_fails(line("operator=\"a\"", 0), -EINVAL,
	            "ak:1: operator=\"NAME\" and devices=\"PATTERNS\" are "
	            "required");
	/* A line without options, whatever its key type. */
	parse_fails("ssh-rsa AAAAB3NzaC1yc2E user@host\n", -EINVAL,
	            "ak:1: expected an option NAME=\"VALUE\" before the key "
	            "(operator=, devices=, sessions=)");
	/* OpenSSH's options without a value are unknown ones, not garbage. */
	parse_fails(line("operator=\"a\",devices=\"*\",no-pty", 0), -EINVAL,
	            "ak:1: unknown option (known: operator, devices, "
	            "sessions)");
	parse_fails(line("restrict,operator=\"a\",devices=\"*\"", 0), -EINVAL,
	            "ak:1: unknown option (known: operator, devices, "
	            "sessions)");
	/* A certificate would never match: its key is what a client shows. */
	parse_fails("operator=\"a\",devices=\"*\" "
	            "ssh-ed25519-cert-v01@openssh.com AAAA\n",
	            -EINVAL,
	            "ak:1: an OpenSSH certificate; list the plain public key "
	            "instead");
	parse_fails(line("operator=\"a\",devices=\"*\",command=\"x\"", 0),
	            -EINVAL,
	            "ak:1: unknown option (known: operator, devices, "
	            "sessions)");
	parse_fails(line("operator=\"a\", devices=\"*\"", 0), -EINVAL,
	            "ak:1: expected an option NAME=\"VALUE\" before the key "
	            "(operator=, devices=, sessions=)");
	parse_fails(line("operator=\"a\";devices=\"*\"", 0), -EINVAL,
	            "ak:1: options are separated by ',' without spaces");
	parse_fails(line("operator=\"a\",operator=\"b\",devices=\"*\"", 0),
	            -EINVAL, "ak:1: operator given twice");
	parse_fails(line("operator=\"a\",devices=\"*\",devices=\"x\"", 0),
	            -EINVAL, "ak:1: devices given twice");
	parse_fails(
	    line("operator=\"a\",devices=\"*\",sessions=\"shell\",sessions="
	         "\"exec\"",
	         0),
	    -EINVAL, "ak:1: sessions given twice");
	parse_fails(line("operator=\"\",devices=\"*\"", 0), -EINVAL,
	            "ak:1: operator: 1..64 letters, digits or \". _ @ -\"");
	parse_fails(line("operator=\"a b\",devices=\"*\"", 0), -EINVAL,
	            "ak:1: operator: 1..64 letters, digits or \". _ @ -\"");
	parse_fails(line("operator=\"a\",devices=\"r1,,r2\"", 0), -EINVAL,
	            "ak:1: devices: a pattern is empty, too long or holds a "
	            "byte other than letters, digits, \". _ : @ -\" and the "
	            "wildcards \"*\" and \"?\"");
	parse_fails(line("operator=\"a\",devices=\"r[12]\"", 0), -EINVAL,
	            "ak:1: devices: a pattern is empty, too long or holds a "
	            "byte other than letters, digits, \". _ : @ -\" and the "
	            "wildcards \"*\" and \"?\"");
	parse_fails(line("operator=\"a\",devices=\"*\",sessions=\"sftp\"", 0),
	            -EINVAL,
	            "ak:1: sessions: each type must be netconf, shell or exec");
	parse_fails(line("operator=\"a\",devices=\"*\",sessions=\"\"", 0),
	            -EINVAL,
	            "ak:1: sessions: each type must be netconf, shell or exec");
	parse_fails("operator=\"a\",devices=\"*\" ssh-foo AAAA\n", -EINVAL,
	            "ak:1: unknown key type");
	parse_fails("operator=\"a\",devices=\"*\" ssh-ed25519 bm90IGEga2V5\n",
	            -EINVAL, "ak:1: malformed key");
	parse_fails("operator=\"a\",devices=\"*\" ssh-ed25519\n", -EINVAL,
	            "ak:1: the key's base64 is missing");
	parse_fails("operator=\"a\",devices=\"*\"\n", -EINVAL,
	            "ak:1: no key after the options");
	/* A missing quote shifts the values: caught by their checks. */
	parse_fails("operator=\"a,devices=\"*\" x\n", -EINVAL,
	            "ak:1: operator: 1..64 letters, digits or \". _ @ -\"");
	parse_fails("operator=\"abc\n", -EINVAL,
	            "ak:1: unterminated quoted value");
	/* One operator per key: the same key twice is an error. */
	snprintf(text, sizeof(text), "# x\n%s",
	         line("operator=\"a\",devices=\"*\"", 1));
	strncat(text, line("operator=\"b\",devices=\"*\"", 1),
	        sizeof(text) - strlen(text) - 1);
	parse_fails(text, -EINVAL,
	            "ak:3: key listed twice (one operator per key)");
	/* A NUL byte anywhere. */
	{
		struct akeys *as = NULL;
		char err[128];

		assert_int_equal(
		    akeys_parse("ak", "op\0x", 4, &as, err, sizeof(err)),
		    -EINVAL);
		assert_null(as);
		assert_string_equal(err, "ak: holds a NUL byte");
	}
}

static void
test_oversized(void **state)
{
	char opt[1024], *big;
	size_t i, n;
	struct akeys *as = NULL;
	char err[256];

	(void)state;
	/* 64 bytes of operator name are fine, 65 are not. */
	snprintf(opt, sizeof(opt), "operator=\"%064d\",devices=\"*\"", 0);
	akeys_free(parse_ok(line(opt, 0)));
	snprintf(opt, sizeof(opt), "operator=\"%065d\",devices=\"*\"", 0);
	parse_fails(line(opt, 0), -EINVAL,
	            "ak:1: operator: 1..64 letters, digits or \". _ @ -\"");
	/* A pattern of 255 bytes is fine, 256 is not. */
	snprintf(opt, sizeof(opt), "operator=\"a\",devices=\"%0255d\"", 0);
	akeys_free(parse_ok(line(opt, 0)));
	snprintf(opt, sizeof(opt), "operator=\"a\",devices=\"%0256d\"", 0);
	parse_fails(line(opt, 0), -EINVAL,
	            "ak:1: devices: a pattern is empty, too long or holds a "
	            "byte other than letters, digits, \". _ : @ -\" and the "
	            "wildcards \"*\" and \"?\"");
	/* 64 patterns are fine, 65 are not. */
	n = (size_t)snprintf(opt, sizeof(opt), "operator=\"a\",devices=\"p");
	for (i = 1; i < 64; i++)
		n += (size_t)snprintf(opt + n, sizeof(opt) - n, ",p");
	snprintf(opt + n, sizeof(opt) - n, "\"");
	akeys_free(parse_ok(line(opt, 0)));
	snprintf(opt + n, sizeof(opt) - n, ",p\"");
	parse_fails(line(opt, 0), -EINVAL, "ak:1: devices: too many patterns");
	/* A line longer than AKEYS_MAX_LINE. */
	big = malloc(AKEYS_MAX_LINE + 64);
	assert_non_null(big);
	memset(big, 'x', AKEYS_MAX_LINE + 63);
	big[AKEYS_MAX_LINE + 63] = '\0';
	parse_fails(big, -EINVAL, "ak:1: line too long");
	free(big);
	/* A file larger than AKEYS_MAX_FILE. */
	big = calloc(1, AKEYS_MAX_FILE + 2);
	assert_non_null(big);
	memset(big, '\n', AKEYS_MAX_FILE + 1);
	assert_int_equal(
	    akeys_parse("ak", big, AKEYS_MAX_FILE + 1, &as, err, sizeof(err)),
	    -EFBIG);
	assert_null(as);
	assert_string_equal(err, "ak: larger than 1048576 bytes");
	free(big);
	/* A small error buffer is cut, and NUL-terminated. */
	assert_int_equal(akeys_parse("ak", "junk", 4, &as, err, 8), -EINVAL);
	assert_string_equal(err, "ak:1: e");
}

/* Every prefix of a good line parses or fails cleanly, never more. */
static void
test_truncated(void **state)
{
	const char *full = line("operator=\"alice\",devices=\"r*,s?\","
	                        "sessions=\"netconf,exec\"",
	                        0);
	char copy[8192];
	struct akeys *as;
	char err[256];
	size_t len = strlen(full), keyend, i;
	int rc;

	(void)state;
	keyend = (size_t)(strstr(full, " comment") - full);
	memcpy(copy, full, len);
	for (i = 0; i <= len; i++) {
		as = NULL;
		rc = akeys_parse("ak", copy, i, &as, err, sizeof(err));
		if (i == 0 || i >= keyend) {
			if (rc != 0)
				fail_msg("prefix %zu failed: %s", i, err);
			assert_int_equal(as->as_nkeys, i == 0 ? 0 : 1);
			akeys_free(as);
		} else {
			if (rc != -EINVAL)
				fail_msg("prefix %zu: rc %d", i, rc);
			assert_null(as);
			assert_memory_equal(err, "ak:1: ", 6);
		}
	}
}

static void
test_user(void **state)
{
	char op[AKEYS_MAX_OPERATOR + 1], dev[AKEYS_MAX_DEVICE + 1];
	char big[600];

	(void)state;
	assert_int_equal(akeys_parse_user("router-17", op, dev), 0);
	assert_string_equal(op, "");
	assert_string_equal(dev, "router-17");
	assert_int_equal(akeys_parse_user("alice+router-17", op, dev), 0);
	assert_string_equal(op, "alice");
	assert_string_equal(dev, "router-17");
	assert_int_equal(akeys_parse_user("a.b@c+dev:1@x", op, dev), 0);
	assert_string_equal(op, "a.b@c");
	assert_string_equal(dev, "dev:1@x");

	strcpy(op, "keep");
	strcpy(dev, "keep");
	assert_int_equal(akeys_parse_user("", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("+router", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("alice+", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("a+b+c", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("rou ter", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("r/x", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("r*", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("a:b+dev", op, dev), -EINVAL);
	assert_int_equal(akeys_parse_user("\xc3\xa9", op, dev), -EINVAL);
	assert_string_equal(op, "keep");
	assert_string_equal(dev, "keep");

	/* Lengths: 255 for a device and 64 for an operator are the most. */
	memset(big, 'd', 255);
	big[255] = '\0';
	assert_int_equal(akeys_parse_user(big, op, dev), 0);
	assert_int_equal(strlen(dev), 255);
	big[255] = 'd';
	big[256] = '\0';
	assert_int_equal(akeys_parse_user(big, op, dev), -EINVAL);
	memset(big, 'o', 64);
	big[64] = '+';
	big[65] = 'd';
	big[66] = '\0';
	assert_int_equal(akeys_parse_user(big, op, dev), 0);
	assert_int_equal(strlen(op), 64);
	memset(big, 'o', 65);
	big[65] = '+';
	big[66] = 'd';
	big[67] = '\0';
	assert_int_equal(akeys_parse_user(big, op, dev), -EINVAL);

	assert_true(akeys_device_valid("router-17"));
	assert_false(akeys_device_valid(""));
	assert_false(akeys_device_valid("a b"));
}

static void
test_load(void **state)
{
	char dir[] = "/tmp/akeys_test.XXXXXX", path[128], err[512];
	struct akeys *as = NULL;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(akeys_load(path, &as, err, sizeof(err)), -ENOENT);
	assert_null(as);
	assert_int_equal(akeys_load(dir, &as, err, sizeof(err)), -EINVAL);
	snprintf(path, sizeof(path), "%s/authorized_keys", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(line("operator=\"a\",devices=\"*\"", 0), f);
	fclose(f);
	assert_int_equal(akeys_load(path, &as, err, sizeof(err)), 0);
	assert_int_equal(as->as_nkeys, 1);
	akeys_free(as);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("\n\nbroken\n", f);
	fclose(f);
	as = NULL;
	assert_int_equal(akeys_load(path, &as, err, sizeof(err)), -EINVAL);
	assert_null(as);
	assert_memory_equal(err, path, strlen(path));
	assert_string_equal(err + strlen(path), ":3: expected an option "
	                                        "NAME=\"VALUE\" before the key "
	                                        "(operator=, devices=, "
	                                        "sessions=)");
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),      cmocka_unit_test(test_quotes),
	    cmocka_unit_test(test_malformed), cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_truncated), cmocka_unit_test(test_user),
	    cmocka_unit_test(test_load),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
