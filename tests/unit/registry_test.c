#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "nms/registry.c"
#include "nms/registry_edit.c"
#include "nms/registry_verify.c"

static char tmpdir[64];

/* A file name inside this run's directory. */
static const char *
tpath(const char *name)
{
	static char p[4][256];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", tmpdir, name);
	return p[i];
}

static void
write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void
write_str(const char *path, const char *s)
{
	write_file(path, s, strlen(s));
}

static char *
read_str(const char *path)
{
	char *buf;
	size_t len;

	assert_int_equal(reg_read_file(path, &buf, &len, NULL, NULL, 0), 0);
	buf = realloc(buf, len + 1);
	assert_non_null(buf);
	buf[len] = '\0';
	return buf;
}

/*
 * A line for id with secret s, at the cheap test cost.  Not inlined: GCC
 * then takes the result for a pointer to the local.
 */
__attribute__((noinline)) static char *
mkline(const char *id, const char *s)
{
	char *line = NULL;

	assert_int_equal(
	    registry_hash_line(id, (const uint8_t *)s, strlen(s), &line), 0);
	return line;
}

/* A registry file "reg" with router-1..n, secret "secret-<i>". */
static const char *
mkregistry(int n)
{
	const char *path = tpath("reg");
	char id[32], sec[32], *line;
	FILE *f = fopen(path, "w");
	int i;

	assert_non_null(f);
	fputs("# test registry\n\n", f);
	for (i = 1; i <= n; i++) {
		snprintf(id, sizeof(id), "router-%d", i);
		snprintf(sec, sizeof(sec), "secret-%d", i);
		line = mkline(id, sec);
		fprintf(f, "%s\n", line);
		free(line);
	}
	assert_int_equal(fclose(f), 0);
	return path;
}

static struct registry *
load_ok(const char *path)
{
	struct registry *reg = NULL;
	char err[256] = "";
	int rc;

	rc = registry_load(path, &reg, err, sizeof(err));
	if (rc != 0)
		fail_msg("load: %d %s", rc, err);
	return reg;
}

/* --- verification harness --- */

struct vres {
	int v_calls;
	int v_result;
};

static void
vcb(void *arg, int result)
{
	struct vres *v = arg;

	v->v_calls++;
	v->v_result = result;
}

static uint64_t fake_ms;

static uint64_t
fake_clock(void *arg)
{
	return *(uint64_t *)arg;
}

/*
 * Verifies and runs the loop until the callback ran, checking it ran once
 * and not inside registry_verify().  *kdfs gets the scrypt runs it took.
 */
static int
verify2(struct registry *reg, uv_loop_t *loop, const char *id, const void *s,
        size_t len, const char *peer, unsigned *kdfs)
{
	struct vres v = {0, 12345};
	unsigned before = atomic_load(&registry_kdf_calls);

	assert_int_equal(
	    registry_verify(reg, loop, id, s, len, peer, vcb, &v, NULL), 0);
	assert_int_equal(v.v_calls, 0);
	assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(v.v_calls, 1);
	if (kdfs != NULL)
		*kdfs = atomic_load(&registry_kdf_calls) - before;
	return v.v_result;
}

static int
verify(struct registry *reg, uv_loop_t *loop, const char *id, const char *s,
       const char *peer, unsigned *kdfs)
{
	return verify2(reg, loop, id, s, strlen(s), peer, kdfs);
}

static void
loop_done(uv_loop_t *loop)
{
	assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(loop), 0);
}

/* --- base64 --- */

static void
test_base64(void **state)
{
	uint8_t in[40], out[40];
	char enc[64];
	size_t i, n, len;

	(void)state;
	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 37 + 11);
	for (len = 1; len <= sizeof(in); len++) {
		reg_b64_encode(in, len, enc, 0);
		assert_int_equal(strlen(enc), (len * 4 + 2) / 3);
		assert_int_equal(
		    b64_decode(enc, strlen(enc), out, sizeof(out), &n), 0);
		assert_int_equal(n, len);
		assert_memory_equal(in, out, len);
	}
	assert_int_equal(b64_decode("QUI=", 4, out, sizeof(out), &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(b64_decode("QUI", 3, out, sizeof(out), &n), 0);
	assert_int_equal(b64_decode("QUJ=", 4, out, sizeof(out), &n), -1);
	assert_int_equal(b64_decode("QUI==", 5, out, sizeof(out), &n), -1);
	assert_int_equal(b64_decode("Q", 1, out, sizeof(out), &n), -1);
	assert_int_equal(b64_decode("QU-I", 4, out, sizeof(out), &n), -1);
	assert_int_equal(b64_decode("", 0, out, sizeof(out), &n), -1);
	assert_int_equal(b64_decode("QUJD", 4, out, 2, &n), -1);
}

/* --- parsing --- */

static void
test_parse_good(void **state)
{
	const char *path = tpath("good");
	struct registry *reg;
	char *l1 = mkline("router-17", "a"), *l2 = mkline("a.b_c:d@e-F9", "b");
	char *l3 = mkline("x", "c"), *padded, *data;
	size_t n;

	(void)state;
	/* The same hash with '=' padding is accepted too. */
	n = strlen(l3);
	padded = malloc(n + 3);
	assert_non_null(padded);
	memcpy(padded, l3, n);
	memcpy(padded + n, "=", 2);
	n = strlen(l1) + strlen(l2) + strlen(padded) + 200;
	data = malloc(n);
	assert_non_null(data);
	snprintf(data, n,
	         "# registry\r\n"
	         "\r\n"
	         "   \t\n"
	         "  # indented comment\n"
	         "%s\r\n"
	         "\t%s   # trailing comment\n"
	         "%s",
	         l1, l2, padded);
	write_str(path, data);
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 3);
	assert_true(registry_has(reg, "router-17"));
	assert_true(registry_has(reg, "a.b_c:d@e-F9"));
	assert_true(registry_has(reg, "x"));
	assert_false(registry_has(reg, "router-1"));
	assert_false(registry_has(reg, "router-17 "));
	assert_false(registry_has(reg, ""));
	/* Unknown ids cost what the first line costs. */
	assert_int_equal(reg->r_dummy.k_ln, 10);
	assert_int_equal(reg->r_dummy.k_r, 1);
	registry_free(reg);

	write_str(path, "");
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 0);
	registry_free(reg);
	free(l1);
	free(l2);
	free(l3);
	free(padded);
	free(data);
}

/* Copies fmt with each "%s" replaced by field. */
static char *
subst(const char *fmt, const char *field)
{
	size_t n = strlen(fmt) + 3 * strlen(field) + 1, o = 0;
	char *out = malloc(n);

	assert_non_null(out);
	while (*fmt != '\0') {
		if (fmt[0] == '%' && fmt[1] == 's') {
			memcpy(out + o, field, strlen(field));
			o += strlen(field);
			fmt += 2;
		} else {
			out[o++] = *fmt++;
		}
	}
	out[o] = '\0';
	return out;
}

struct badcase {
	const char *bc_line; /* "%s" is replaced by a valid hash field */
	const char *bc_msg;
};

static void
test_parse_bad(void **state)
{
	static const struct badcase cases[] = {
	    {"rou/ter %s", "invalid device id"},
	    {"rou\"ter %s", "invalid device id"},
	    {"router-1", "missing hash"},
	    {"router-1 hunter2-plaintext", "unknown hash scheme"},
	    {"router-1 $argon2$ln=10,r=1,p=1$c2FsdA$aGFzaA",
	     "unknown hash scheme"},
	    {"router-1 $scrypt$ln=10,p=1,r=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "malformed scrypt parameters"},
	    {"router-1 $scrypt$ln=x,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "malformed scrypt parameters"},
	    {"router-1 $scrypt$ln=1000,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "malformed scrypt parameters"},
	    {"router-1 $scrypt$ln=10,r=1,p=1AAAAAAAAAAAAAAAAAAAAAA$x",
	     "malformed scrypt parameters"},
	    {"router-1 $scrypt$ln=9,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=21,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=10,r=0,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=10,r=17,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=10,r=1,p=0$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=10,r=1,p=17$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=20,r=16,p=1$AAAAAAAAAAAAAAAAAAAAAA$x",
	     "scrypt parameters out of range"},
	    {"router-1 $scrypt$ln=10,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA",
	     "missing hash after salt"},
	    {"router-1 $scrypt$ln=10,r=1,p=1$AAAA*AAAAAAAAAAAAAAAAA$x",
	     "bad base64 in salt"},
	    {"router-1 $scrypt$ln=10,r=1,p=1$AAAAAAAAAAB$"
	     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	     "bad base64 in salt"},
	    {"router-1 $scrypt$ln=10,r=1,p=1$AAAAAAAAAAA$"
	     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	     "salt shorter"},
	    {"router-1 $scrypt$ln=10,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
	     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!",
	     "bad base64 in hash"},
	    {"router-1 $scrypt$ln=10,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAA",
	     "hash shorter"},
	    {"router-1 %s extra", "unexpected text after hash"},
	    {"router-1 %s\nrouter-2 %s\nrouter-1 %s",
	     "duplicate device id \"router-1\" (first on line 3)"},
	};
	const char *path = tpath("bad");
	struct registry *reg = (struct registry *)&reg;
	char *good = mkline("router-0", "zz"), *field, *line, *data, err[512];
	char exp[256], longid[600];
	size_t i, n, lines;
	const char *at;

	(void)state;
	field = strchr(good, ' ') + 1;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		line = subst(cases[i].bc_line, field);
		n = strlen(good) + strlen(line) + 16;
		data = malloc(n);
		assert_non_null(data);
		/* The bad line is line 3 (or the last of its lines). */
		snprintf(data, n, "%s\n# c\n%s\n", good, line);
		write_str(path, data);
		err[0] = '\0';
		assert_int_equal(registry_load(path, &reg, err, sizeof(err)),
		                 -EINVAL);
		for (lines = 3, at = line; (at = strchr(at, '\n')) != NULL;
		     at++)
			lines++;
		snprintf(exp, sizeof(exp), "%s:%zu: %s", path, lines,
		         cases[i].bc_msg);
		if (strncmp(err, exp, strlen(exp)) != 0)
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err,
			         exp);
		assert_null(strstr(err, "hunter2"));
		free(line);
		free(data);
	}
	assert_ptr_equal(reg, (struct registry *)&reg); /* untouched */

	/* A 256-byte id. */
	memset(longid, 'a', 256);
	snprintf(longid + 256, sizeof(longid) - 256, " %s\n", field);
	write_str(path, longid);
	assert_int_equal(registry_load(path, &reg, err, sizeof(err)), -EINVAL);
	snprintf(exp, sizeof(exp), "%s:1: invalid device id", path);
	assert_memory_equal(err, exp, strlen(exp));
	/* 255 bytes is fine. */
	memmove(longid + 255, longid + 256, strlen(longid + 256) + 1);
	write_str(path, longid);
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 1);
	registry_free(reg);

	/* An overlong line, even a comment. */
	data = malloc(REGISTRY_LINE_MAX + 10);
	assert_non_null(data);
	memset(data, '#', REGISTRY_LINE_MAX + 1);
	data[REGISTRY_LINE_MAX + 1] = '\n';
	write_file(path, "\n", 1);
	{
		FILE *f = fopen(path, "ab");

		assert_non_null(f);
		fwrite(data, 1, REGISTRY_LINE_MAX + 2, f);
		fclose(f);
	}
	assert_int_equal(registry_load(path, &reg, err, sizeof(err)), -EINVAL);
	snprintf(exp, sizeof(exp), "%s:2: line longer than", path);
	assert_memory_equal(err, exp, strlen(exp));
	/* Exactly the limit is fine. */
	data[REGISTRY_LINE_MAX] = '\n';
	write_file(path, data, REGISTRY_LINE_MAX + 1);
	reg = load_ok(path);
	registry_free(reg);
	free(data);

	/* A NUL byte. */
	write_file(path, "# a\0b\n", 6);
	assert_int_equal(registry_load(path, &reg, err, sizeof(err)), -EINVAL);
	snprintf(exp, sizeof(exp), "%s:1: NUL byte", path);
	assert_memory_equal(err, exp, strlen(exp));

	/* A tiny err buffer is truncated, not overrun. */
	write_str(path, "bad\n");
	memset(err, 'Z', sizeof(err));
	assert_int_equal(registry_load(path, &reg, err, 8), -EINVAL);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(registry_load(path, &reg, NULL, 0), -EINVAL);
	free(good);
}

/* registry_parse(): the same parser on a buffer, no file needed. */
static void
test_parse_buffer(void **state)
{
	struct registry *reg;
	char *line = mkline("r1", "s"), err[256];
	char data[512];
	int n;

	(void)state;
	n = snprintf(data, sizeof(data), "# devices\n%s\n", line);
	/* Not NUL-terminated: only len bytes count. */
	data[n] = 'x';
	assert_int_equal(
	    registry_parse("buf", data, (size_t)n, &reg, err, sizeof(err)), 0);
	assert_int_equal(registry_count(reg), 1);
	assert_true(registry_has(reg, "r1"));
	registry_free(reg);
	assert_int_equal(registry_parse("buf", "", 0, &reg, err, sizeof(err)),
	                 0);
	assert_int_equal(registry_count(reg), 0);
	registry_free(reg);
	reg = NULL;
	assert_int_equal(
	    registry_parse("buf", "r1 x\n", 5, &reg, err, sizeof(err)),
	    -EINVAL);
	assert_null(reg);
	assert_non_null(strstr(err, "buf:1: "));
	data[0] = '\0';
	assert_int_equal(
	    registry_parse("buf", data, (size_t)n, &reg, err, sizeof(err)),
	    -EINVAL);
	assert_int_equal(registry_parse("buf", data, REGISTRY_FILE_MAX + 1,
	                                &reg, err, sizeof(err)),
	                 -EFBIG);
	free(line);
}

static void
test_load_errors(void **state)
{
	struct registry *reg = NULL;
	char err[256];
	const char *path = tpath("big");
	int fd;

	(void)state;
	assert_int_equal(
	    registry_load(tpath("nonexistent"), &reg, err, sizeof(err)),
	    -ENOENT);
	assert_non_null(strstr(err, "nonexistent: "));
	assert_int_equal(registry_load(tmpdir, &reg, err, sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, REGISTRY_FILE_MAX + 1), 0);
	close(fd);
	assert_int_equal(registry_load(path, &reg, err, sizeof(err)), -EFBIG);
	assert_non_null(strstr(err, "larger than"));
	assert_null(reg);
	unlink(path);
}

static void
test_hash_line(void **state)
{
	char *line = NULL, longid[300];
	uint8_t big[REGISTRY_SECRET_MAX + 1];

	(void)state;
	memset(big, 'x', sizeof(big));
	assert_int_equal(
	    registry_hash_line("r1", (const uint8_t *)"", 0, &line), -EINVAL);
	assert_int_equal(registry_hash_line("r1", NULL, 0, &line), -EINVAL);
	assert_int_equal(registry_hash_line("r1", big, sizeof(big), &line),
	                 -EINVAL);
	assert_int_equal(
	    registry_hash_line("r1", (const uint8_t *)"a\0", 2, &line),
	    -EINVAL);
	assert_int_equal(registry_hash_line("r 1", big, 3, &line), -EINVAL);
	assert_int_equal(registry_hash_line("", big, 3, &line), -EINVAL);
	memset(longid, 'a', 256);
	longid[256] = '\0';
	assert_int_equal(registry_hash_line(longid, big, 3, &line), -EINVAL);
	assert_null(line);
	assert_int_equal(
	    registry_hash_line("r1", big, REGISTRY_SECRET_MAX, &line), 0);
	assert_memory_equal(line, "r1 $scrypt$ln=10,r=1,p=1$", 25);
	assert_null(strstr(line, "xxx"));
	free(line);
}

/* --- verification --- */

static void
test_verify_basic(void **state)
{
	struct registry *reg = load_ok(mkregistry(3));
	uv_loop_t loop;
	unsigned k;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(verify(reg, &loop, "router-2", "secret-2", NULL, &k),
	                 0);
	assert_int_equal(k, 1);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-2", NULL, &k),
	                 -EACCES);
	assert_int_equal(k, 1);
	/* Unknown ids cost one scrypt as well. */
	assert_int_equal(verify(reg, &loop, "router-9", "secret-2", NULL, &k),
	                 -ENOENT);
	assert_int_equal(k, 1);
	/* Secrets that differ only in length. */
	assert_int_equal(verify(reg, &loop, "router-3", "secret-", NULL, NULL),
	                 -EACCES);
	assert_int_equal(
	    verify(reg, &loop, "router-3", "secret-33", NULL, NULL), -EACCES);
	/*
	 * HMAC pads keys with zeros, so scrypt cannot tell "s" from "s\0":
	 * secrets with NUL bytes are refused outright.
	 */
	assert_int_equal(
	    verify2(reg, &loop, "router-3", "secret-3\0", 9, NULL, &k),
	    -EACCES);
	assert_int_equal(k, 0);
	assert_int_equal(verify(reg, &loop, "router-3", "secret-3", NULL, NULL),
	                 0);
	/* Empty, NULL and overlong secrets fail without scrypt. */
	assert_int_equal(verify(reg, &loop, "router-1", "", NULL, &k), -EACCES);
	assert_int_equal(k, 0);
	assert_int_equal(verify2(reg, &loop, "router-1", NULL, 0, NULL, &k),
	                 -EACCES);
	assert_int_equal(verify(reg, &loop, "router-9", "", NULL, &k), -ENOENT);
	{
		static uint8_t big[REGISTRY_SECRET_MAX + 1];

		assert_int_equal(
		    verify2(reg, &loop, "router-1", big, sizeof(big), NULL, &k),
		    -EACCES);
		assert_int_equal(k, 0);
	}
	/* Ids that cannot exist fail without scrypt. */
	assert_int_equal(verify(reg, &loop, "", "x", NULL, &k), -ENOENT);
	assert_int_equal(verify(reg, &loop, "router 1", "x", NULL, &k),
	                 -ENOENT);
	assert_int_equal(k, 0);
	loop_done(&loop);
	registry_free(reg);
}

static void
test_verify_args(void **state)
{
	struct registry *reg = load_ok(mkregistry(1));
	struct registry_req *rq = (struct registry_req *)&rq;
	struct vres v = {0, 0};
	const uint8_t *s = (const uint8_t *)"x";
	uv_loop_t loop;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(
	    registry_verify(NULL, &loop, "a", s, 1, NULL, vcb, &v, &rq),
	    -EINVAL);
	assert_int_equal(
	    registry_verify(reg, NULL, "a", s, 1, NULL, vcb, &v, &rq), -EINVAL);
	assert_int_equal(
	    registry_verify(reg, &loop, NULL, s, 1, NULL, vcb, &v, &rq),
	    -EINVAL);
	assert_int_equal(
	    registry_verify(reg, &loop, "a", NULL, 1, NULL, vcb, &v, &rq),
	    -EINVAL);
	assert_int_equal(
	    registry_verify(reg, &loop, "a", s, 1, NULL, NULL, &v, &rq),
	    -EINVAL);
	assert_ptr_equal(rq, (struct registry_req *)&rq);
	loop_done(&loop);
	assert_int_equal(v.v_calls, 0);
	assert_int_equal(reg->r_refs, 1);
	registry_free(reg);
}

static void
test_verify_cache(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	uv_loop_t loop;
	unsigned k;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	/* Failures never fill the cache. */
	assert_int_equal(verify(reg, &loop, "router-1", "nope", NULL, &k),
	                 -EACCES);
	assert_false(reg_lookup(reg, "router-1", 8)->e_cached);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 0);
	assert_int_equal(k, 1);
	assert_true(reg_lookup(reg, "router-1", 8)->e_cached);
	/* Now the same secret needs no scrypt, and still runs deferred. */
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 0);
	assert_int_equal(k, 0);
	assert_int_equal(
	    verify(reg, &loop, "router-1", "secret-1", "1.2.3.4", &k), 0);
	assert_int_equal(k, 0);
	/* A wrong secret still fails, through scrypt. */
	assert_int_equal(verify(reg, &loop, "router-1", "secret-2", NULL, &k),
	                 -EACCES);
	assert_int_equal(k, 1);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1x", NULL, &k),
	                 -EACCES);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-", NULL, &k),
	                 -EACCES);
	assert_int_equal(verify(reg, &loop, "router-1", "", NULL, &k), -EACCES);
	/* ...and leaves the cache as it was. */
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 0);
	assert_int_equal(k, 0);
	/* Another device is not cached by the first. */
	assert_int_equal(verify(reg, &loop, "router-2", "secret-1", NULL, &k),
	                 -EACCES);
	assert_int_equal(verify(reg, &loop, "router-2", "secret-2", NULL, &k),
	                 0);
	assert_int_equal(k, 1);
	loop_done(&loop);
	registry_free(reg);
}

/* --- resumption proofs --- */

static void
test_proof(void **state)
{
	const char *path = mkregistry(2);
	struct registry *reg = load_ok(path), *rekeyed;
	const uint8_t key[32] = {1, 2, 3}, key2[32] = {3, 2, 1};
	const uint8_t *s1 = (const uint8_t *)"secret-1";
	uint8_t p1[REGISTRY_PROOF_LEN], p2[REGISTRY_PROOF_LEN];
	uint8_t p3[REGISTRY_PROOF_LEN];
	char *line;
	uv_loop_t loop;
	unsigned k;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	/* Computed for any secret: it is checked only when accepted. */
	assert_int_equal(registry_proof(reg, "router-1", s1, 8, key, 32, p1),
	                 0);
	assert_int_equal(registry_proof(reg, "router-1", s1, 8, key, 32, p2),
	                 0);
	assert_memory_equal(p1, p2, sizeof(p1));
	assert_int_equal(registry_proof(reg, "router-1", s1, 8, key2, 32, p2),
	                 0);
	assert_memory_not_equal(p1, p2, sizeof(p1));
	assert_int_equal(registry_proof(reg, "router-2", s1, 8, key, 32, p2),
	                 0);
	assert_memory_not_equal(p1, p2, sizeof(p1));
	assert_int_equal(registry_proof(reg, "nobody", s1, 8, key, 32, p2),
	                 -ENOENT);
	assert_int_equal(registry_proof(reg, "bad id", s1, 8, key, 32, p2),
	                 -ENOENT);
	assert_int_equal(registry_proof(reg, "router-1", s1, 0, key, 32, p2),
	                 -ENOENT);

	/* Wrong secret, key, id or proof: refused, and nothing cached. */
	assert_int_equal(registry_accept_proof(reg, "router-1",
	                                       (const uint8_t *)"secret-2", 8,
	                                       key, 32, p1),
	                 -EACCES);
	assert_int_equal(
	    registry_accept_proof(reg, "router-1", s1, 8, key2, 32, p1),
	    -EACCES);
	assert_int_equal(
	    registry_accept_proof(reg, "router-2", s1, 8, key, 32, p1),
	    -EACCES);
	memcpy(p2, p1, sizeof(p1));
	p2[REGISTRY_PROOF_LEN - 1] ^= 1;
	assert_int_equal(
	    registry_accept_proof(reg, "router-1", s1, 8, key, 32, p2),
	    -EACCES);
	assert_false(reg_lookup(reg, "router-1", 8)->e_cached);
	/* The right one fills the cache: the verify needs no scrypt. */
	assert_int_equal(
	    registry_accept_proof(reg, "router-1", s1, 8, key, 32, p1), 0);
	assert_true(reg_lookup(reg, "router-1", 8)->e_cached);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 0);
	assert_int_equal(k, 0);
	/* Even so, another secret is still checked in full. */
	assert_int_equal(verify(reg, &loop, "router-1", "secret-2", NULL, &k),
	                 -EACCES);
	assert_int_equal(k, 1);

	/* The same secret hashed again (new salt) is a new entry. */
	line = mkline("router-1", "secret-1");
	write_str(tpath("rekeyed"), line);
	free(line);
	rekeyed = load_ok(tpath("rekeyed"));
	assert_int_equal(
	    registry_accept_proof(rekeyed, "router-1", s1, 8, key, 32, p1),
	    -EACCES);
	assert_int_equal(
	    registry_proof(rekeyed, "router-1", s1, 8, key, 32, p3), 0);
	assert_memory_not_equal(p1, p3, sizeof(p1));
	/* A registry loaded again from the same file takes the old proof. */
	registry_free(reg);
	reg = load_ok(path);
	assert_int_equal(
	    registry_accept_proof(reg, "router-1", s1, 8, key, 32, p1), 0);
	loop_done(&loop);
	registry_free(reg);
	registry_free(rekeyed);
}

static struct registry_throttle *
fake_throttle(void)
{
	struct registry_throttle *thr = NULL;

	assert_int_equal(registry_throttle_new(&thr), 0);
	fake_ms = 1000000;
	registry_throttle_set_clock(thr, fake_clock, &fake_ms);
	return thr;
}

static void
test_throttle_device(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	struct registry_throttle *thr = fake_throttle();
	char peer[32];
	uv_loop_t loop;
	unsigned k;
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_set_throttle(reg, thr);
	registry_throttle_free(thr); /* the registry holds it now */
	/* Five failures from five peers lock nobody out... */
	for (i = 0; i < 5; i++) {
		snprintf(peer, sizeof(peer), "10.0.0.%d:1000", i + 1);
		assert_int_equal(
		    verify(reg, &loop, "router-1", "bad", peer, &k), -EACCES);
		fake_ms += 1000;
	}
	assert_int_equal(
	    verify(reg, &loop, "router-1", "bad", "10.0.0.1:2", &k), -EACCES);
	/* ...but five from one peer lock that peer out of router-1. */
	for (i = 0; i < 4; i++)
		assert_int_equal(
		    verify(reg, &loop, "router-1", "bad", "10.0.0.9:7", &k),
		    -EACCES);
	assert_int_equal(
	    verify(reg, &loop, "router-1", "bad", "10.0.0.9:8", &k), -EACCES);
	assert_int_equal(
	    verify(reg, &loop, "router-1", "secret-1", "10.0.0.9:8", &k),
	    -EAGAIN);
	assert_int_equal(k, 0);
	/* The real device, elsewhere, still gets in (uncached: scrypt). */
	assert_int_equal(
	    verify(reg, &loop, "router-1", "secret-1", "10.0.1.1:5", &k), 0);
	assert_int_equal(k, 1);
	/* The locked-out peer gets nothing, not even with the cached one. */
	assert_int_equal(
	    verify(reg, &loop, "router-1", "secret-1", "10.0.0.9:8", &k),
	    -EAGAIN);
	assert_int_equal(k, 0);
	/* Requests without a peer share one pair per id. */
	for (i = 0; i < 5; i++)
		assert_int_equal(
		    verify(reg, &loop, "router-1", "bad", NULL, &k), -EACCES);
	assert_int_equal(verify(reg, &loop, "router-1", "bad", NULL, &k),
	                 -EAGAIN);
	assert_int_equal(k, 0);
	/* Other devices are not affected. */
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "10.0.1.1:5", &k), 0);
	/* The window started at the first failure. */
	fake_ms += 60000 - 1;
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 -EAGAIN);
	fake_ms += 1;
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 0);
	assert_int_equal(k, 0); /* cached by the success from 10.0.1.1 */
	/* A success clears the pair's count. */
	for (i = 0; i < 4; i++)
		assert_int_equal(
		    verify(reg, &loop, "router-1", "bad", NULL, NULL), -EACCES);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 0);
	assert_int_equal(k, 0); /* cached */
	for (i = 0; i < 4; i++)
		assert_int_equal(
		    verify(reg, &loop, "router-1", "bad", NULL, NULL), -EACCES);
	assert_int_equal(verify(reg, &loop, "router-1", "bad", NULL, NULL),
	                 -EACCES);
	assert_int_equal(verify(reg, &loop, "router-1", "secret-1", NULL, &k),
	                 -EAGAIN);
	/* Unknown ids are counted alike, so -EAGAIN does not tell them. */
	for (i = 0; i < 5; i++)
		assert_int_equal(verify(reg, &loop, "ghost", "bad", NULL, NULL),
		                 -ENOENT);
	assert_int_equal(verify(reg, &loop, "ghost", "bad", NULL, &k), -EAGAIN);
	assert_int_equal(k, 0);
	loop_done(&loop);
	registry_free(reg);
}

static void
test_throttle_peer(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	struct registry_throttle *thr = fake_throttle();
	uv_loop_t loop;
	unsigned k;
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_set_throttle(reg, thr);
	/* Failures on different ids from one address, any port. */
	for (i = 0; i < 3; i++)
		assert_int_equal(
		    verify(reg, &loop, "nobody", "x", "192.0.2.1:40000", NULL),
		    -ENOENT);
	assert_int_equal(verify(reg, &loop, "router-1", "x", "192.0.2.1", NULL),
	                 -EACCES);
	assert_int_equal(
	    verify(reg, &loop, "bad id", "x", "[::ffff:192.0.2.1]:1", &k),
	    -ENOENT);
	assert_int_equal(k, 0);
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "192.0.2.1:40001", &k),
	    -EAGAIN);
	assert_int_equal(k, 0);
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "192.0.2.2:40001", &k),
	    0);
	/* A success does not clear a peer's count. */
	for (i = 0; i < 4; i++)
		assert_int_equal(
		    verify(reg, &loop, "router-1", "x", "198.51.100.7:1", NULL),
		    -EACCES);
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "198.51.100.7:1", &k),
	    0);
	assert_int_equal(
	    verify(reg, &loop, "router-2", "x", "198.51.100.7:2", NULL),
	    -EACCES);
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "198.51.100.7:3", &k),
	    -EAGAIN);
	/* IPv6 peers count per /64. */
	for (i = 0; i < 5; i++) {
		char peer[64], id[16];

		snprintf(peer, sizeof(peer), "[2001:db8:1:2::%x]:443", i + 1);
		snprintf(id, sizeof(id), "nobody%d", i);
		assert_int_equal(verify(reg, &loop, id, "x", peer, NULL),
		                 -ENOENT);
	}
	assert_int_equal(verify(reg, &loop, "router-2", "secret-2",
	                        "[2001:db8:1:2:ffff::1]:1", NULL),
	                 -EAGAIN);
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "2001:db8:1:3::1", NULL),
	    0);
	/* The window passes. */
	fake_ms += 60000;
	assert_int_equal(
	    verify(reg, &loop, "router-2", "secret-2", "192.0.2.1:9", NULL), 0);
	/*
	 * Expired entries are pruned as new ones come: only 192.0.2.1 (its
	 * window restarted above) and the newcomer remain.
	 */
	assert_int_equal(thr->rt_peer.tt_count, 3);
	assert_int_equal(
	    verify(reg, &loop, "router-1", "x", "203.0.113.1:1", NULL),
	    -EACCES);
	assert_int_equal(thr->rt_peer.tt_count, 2);
	loop_done(&loop);
	registry_free(reg);
	registry_throttle_free(thr);
}

static void
test_throttle_bounded(void **state)
{
	struct registry *reg = load_ok(mkregistry(1));
	struct registry_throttle *thr = fake_throttle();
	char peer[32], id[32];
	uv_loop_t loop;
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_throttle_set_limits(thr, 0, 0, 0, 0, 16);
	registry_set_throttle(reg, thr);
	for (i = 0; i < 200; i++) {
		snprintf(peer, sizeof(peer), "10.1.%d.%d", i / 256, i % 256);
		snprintf(id, sizeof(id), "x%d", i);
		assert_int_equal(verify(reg, &loop, id, "", peer, NULL),
		                 -ENOENT);
		assert_true(thr->rt_peer.tt_count <= 16);
		assert_true(thr->rt_pair.tt_count <= 16);
	}
	assert_int_equal(thr->rt_peer.tt_count, 16);
	assert_int_equal(thr->rt_pair.tt_count, 16);
	assert_int_equal(thr->rt_dev.tt_count, 0);
	assert_int_equal(registry_throttle_count(thr), 32);
	/* The newest are kept. */
	assert_non_null(
	    tt_lookup(&thr->rt_pair, (const uint8_t *)"\4\12\1\0\307x199", 9));
	assert_null(
	    tt_lookup(&thr->rt_pair, (const uint8_t *)"\4\12\1\0\267x183", 9));
	/* The table grew its buckets past the first size and still finds. */
	for (i = 0; i < 100; i++) {
		snprintf(peer, sizeof(peer), "dev-%d", i);
		tt_fail(thr, &thr->rt_dev, (const uint8_t *)peer, strlen(peer),
		        fake_ms);
	}
	registry_throttle_set_limits(thr, 0, 0, 0, 0, 1000);
	for (i = 0; i < 100; i++) {
		snprintf(peer, sizeof(peer), "dev-%d", i);
		tt_fail(thr, &thr->rt_dev, (const uint8_t *)peer, strlen(peer),
		        fake_ms);
	}
	assert_int_equal(thr->rt_dev.tt_count, 100);
	for (i = 0; i < 100; i++) {
		snprintf(peer, sizeof(peer), "dev-%d", i);
		assert_non_null(tt_lookup(&thr->rt_dev, (const uint8_t *)peer,
		                          strlen(peer)));
	}
	loop_done(&loop);
	registry_free(reg);
	registry_throttle_free(thr);
}

static void
test_throttle_inflight(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	struct registry_throttle *thr = fake_throttle();
	struct throttle_entry *te;
	struct vres v[4];
	uv_loop_t loop;
	int i;

	(void)state;
	memset(v, 0, sizeof(v));
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_throttle_set_limits(thr, 0, 0, 0, 2, 0);
	registry_set_throttle(reg, thr);
	/* Two scrypts at once per id; the third is turned away, busy. */
	for (i = 0; i < 3; i++)
		assert_int_equal(registry_verify(reg, &loop, "router-1",
		                                 (const uint8_t *)"secret-1", 8,
		                                 "10.9.9.9:1", vcb, &v[i],
		                                 NULL),
		                 0);
	assert_int_equal(registry_verify(reg, &loop, "router-2",
	                                 (const uint8_t *)"secret-2", 8,
	                                 "10.9.9.8:1", vcb, &v[3], NULL),
	                 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(v[0].v_result, 0);
	assert_int_equal(v[1].v_result, 0);
	assert_int_equal(v[2].v_result, -EBUSY);
	assert_int_equal(v[3].v_result, 0);
	for (i = 0; i < 4; i++)
		assert_int_equal(v[i].v_calls, 1);
	/* And the slots are free again: idle entries without failures go. */
	te = tt_lookup(&thr->rt_peer, (const uint8_t *)"\4\12\11\11\11", 5);
	assert_null(te);
	assert_int_equal(registry_throttle_count(thr), 0);
	loop_done(&loop);
	registry_free(reg);
	registry_throttle_free(thr);
}

/*
 * Ten guesses for made-up ids at once from peer, with 5 failures allowed
 * per peer: 5 run scrypt and fail, 5 are busy.  inflight and waiting are
 * the checks in the threadpool and waiting for it right after the burst.
 */
static void
guess_burst(struct registry *reg, struct registry_throttle *thr,
            uv_loop_t *loop, const char *peer, unsigned inflight,
            unsigned waiting)
{
	unsigned before = atomic_load(&registry_kdf_calls);
	struct vres v[10];
	int i, busy = 0, failed = 0;
	char id[16];

	memset(v, 0, sizeof(v));
	for (i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "ghost%d", i);
		assert_int_equal(registry_verify(reg, loop, id,
		                                 (const uint8_t *)"x", 1, peer,
		                                 vcb, &v[i], NULL),
		                 0);
	}
	assert_int_equal(registry_throttle_inflight(thr), inflight);
	assert_int_equal(registry_throttle_waiting(thr), waiting);
	assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < 10; i++) {
		busy += v[i].v_result == -EBUSY;
		failed += v[i].v_result == -ENOENT;
	}
	assert_int_equal(failed, 5);
	assert_int_equal(busy, 5);
	assert_int_equal(atomic_load(&registry_kdf_calls) - before, 5);
	assert_int_equal(registry_throttle_inflight(thr), 0);
	assert_int_equal(registry_throttle_waiting(thr), 0);
}

/*
 * Checks in flight count as failures: a burst of concurrent guesses from
 * one peer gets no more scrypts than its failure limit, and the KDF queue
 * has a bound per peer and in all.
 */
static void
test_throttle_concurrent(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	struct registry_throttle *thr = fake_throttle();
	struct vres v[5];
	uv_loop_t loop;
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_throttle_set_limits(thr, 0, 5, 0, 0, 0);
	registry_throttle_set_checks(thr, 100, 100, 0);
	registry_set_throttle(reg, thr);
	guess_burst(reg, thr, &loop, "10.5.5.5:1", 5, 0);

	/* The queue bound: per peer, then in all. */
	memset(v, 0, sizeof(v));
	registry_throttle_set_limits(thr, 100, 100, 0, 100, 0);
	registry_throttle_set_checks(thr, 2, 3, 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(registry_verify(reg, &loop, "router-1",
		                                 (const uint8_t *)"secret-1", 8,
		                                 "10.6.6.6:1", vcb, &v[i],
		                                 NULL),
		                 0);
	for (i = 3; i < 5; i++)
		assert_int_equal(registry_verify(reg, &loop, "router-2",
		                                 (const uint8_t *)"secret-2", 8,
		                                 "10.6.6.7:1", vcb, &v[i],
		                                 NULL),
		                 0);
	assert_int_equal(registry_throttle_inflight(thr), 3);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(v[0].v_result, 0);
	assert_int_equal(v[1].v_result, 0);
	assert_int_equal(v[2].v_result, -EBUSY); /* its peer's two slots */
	assert_int_equal(v[3].v_result, 0);
	assert_int_equal(v[4].v_result, 0); /* waited for one of the three */
	assert_int_equal(registry_throttle_waiting(thr), 0);

	/*
	 * Checks waiting for a slot count as in flight for the guess bound:
	 * with one slot in all, the burst gets no more scrypts than above.
	 */
	registry_throttle_set_limits(thr, 0, 5, 0, 0, 0);
	registry_throttle_set_checks(thr, 100, 1, 0);
	guess_burst(reg, thr, &loop, "10.5.5.9:1", 1, 4);
	loop_done(&loop);
	registry_free(reg);
	registry_throttle_free(thr);
}

/* Finishing order of the verifies of test_throttle_waiting. */
struct ores {
	int o_calls;
	int o_result;
	int o_seq;
};

static int ores_seq;

static void
ocb(void *arg, int result)
{
	struct ores *o = arg;

	o->o_calls++;
	o->o_result = result;
	o->o_seq = ++ores_seq;
}

/*
 * A storm over the KDF slots: the checks past them wait their turn and
 * are run in order as slots free, instead of being told to come back; the
 * waiting ones are bounded, and one
 * cancelled while waiting never runs.
 */
static void
test_throttle_waiting(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	struct registry_throttle *thr = fake_throttle();
	struct registry_req *rq[7];
	struct ores o[7];
	char peer[32];
	uv_loop_t loop;
	unsigned before = atomic_load(&registry_kdf_calls);
	int i;

	(void)state;
	memset(o, 0, sizeof(o));
	ores_seq = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_throttle_set_limits(thr, 100, 100, 0, 100, 0);
	/* One slot, so that the checks also finish in the order they ran. */
	registry_throttle_set_checks(thr, 100, 1, 4);
	registry_set_throttle(reg, thr);
	/* 1 slot, 4 may wait: the 6th and 7th are busy. */
	for (i = 0; i < 7; i++) {
		snprintf(peer, sizeof(peer), "10.7.7.%d:1", i + 1);
		assert_int_equal(registry_verify(reg, &loop, "router-1",
		                                 (const uint8_t *)"secret-1", 8,
		                                 peer, ocb, &o[i], &rq[i]),
		                 0);
	}
	assert_int_equal(registry_throttle_inflight(thr), 1);
	assert_int_equal(registry_throttle_waiting(thr), 4);
	/* One of them gives up while it waits (its connection closed). */
	registry_cancel(rq[2]);
	assert_int_equal(registry_throttle_waiting(thr), 3);
	assert_int_equal(o[2].o_calls, 0); /* never inside the call */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < 7; i++)
		assert_int_equal(o[i].o_calls, 1);
	assert_int_equal(o[2].o_result, -ECANCELED);
	assert_int_equal(o[5].o_result, -EBUSY);
	assert_int_equal(o[6].o_result, -EBUSY);
	/* Four checks ran, one after another, in the order they came. */
	assert_int_equal(atomic_load(&registry_kdf_calls) - before, 4);
	assert_int_equal(o[0].o_result, 0);
	assert_int_equal(o[1].o_result, 0);
	assert_int_equal(o[3].o_result, 0);
	assert_int_equal(o[4].o_result, 0);
	assert_true(o[0].o_seq < o[1].o_seq);
	assert_true(o[1].o_seq < o[3].o_seq);
	assert_true(o[3].o_seq < o[4].o_seq);
	assert_int_equal(registry_throttle_inflight(thr), 0);
	assert_int_equal(registry_throttle_waiting(thr), 0);
	assert_int_equal(registry_throttle_count(thr), 0);
	loop_done(&loop);
	registry_free(reg);
	registry_throttle_free(thr);
}

static void
test_reload(void **state)
{
	const char *path = mkregistry(2);
	struct registry *reg = load_ok(path), *reg2;
	struct registry_throttle *thr = fake_throttle();
	struct vres v = {0, 0};
	uv_loop_t loop;
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_set_throttle(reg, thr);
	for (i = 0; i < 5; i++)
		assert_int_equal(
		    verify(reg, &loop, "router-1", "bad", NULL, NULL), -EACCES);
	/* A verify in flight on the old registry while it is replaced. */
	assert_int_equal(registry_verify(reg, &loop, "router-2",
	                                 (const uint8_t *)"secret-2", 8, NULL,
	                                 vcb, &v, NULL),
	                 0);
	reg2 = load_ok(path);
	registry_set_throttle(reg2, thr);
	registry_free(reg);
	registry_throttle_free(thr);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(v.v_calls, 1);
	assert_int_equal(v.v_result, 0);
	/* The lockout survived the reload. */
	assert_int_equal(
	    verify(reg2, &loop, "router-1", "secret-1", NULL, NULL), -EAGAIN);
	fake_ms += 60000;
	assert_int_equal(
	    verify(reg2, &loop, "router-1", "secret-1", NULL, NULL), 0);
	/* Detaching the throttle turns throttling off. */
	registry_set_throttle(reg2, NULL);
	for (i = 0; i < 7; i++)
		assert_int_equal(
		    verify(reg2, &loop, "router-1", "bad", NULL, NULL),
		    -EACCES);
	loop_done(&loop);
	registry_free(reg2);
}

static void
test_cancel(void **state)
{
	struct registry *reg = load_ok(mkregistry(2));
	struct registry_req *rq[8];
	struct vres v[8];
	uv_loop_t loop;
	int i;

	(void)state;
	memset(v, 0, sizeof(v));
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(verify(reg, &loop, "router-2", "secret-2", NULL, NULL),
	                 0);
	/* Queued scrypts, a cache hit and a fast failure, all cancelled. */
	for (i = 0; i < 6; i++)
		assert_int_equal(registry_verify(reg, &loop, "router-1",
		                                 (const uint8_t *)"secret-1", 8,
		                                 NULL, vcb, &v[i], &rq[i]),
		                 0);
	assert_int_equal(registry_verify(reg, &loop, "router-2",
	                                 (const uint8_t *)"secret-2", 8, NULL,
	                                 vcb, &v[6], &rq[6]),
	                 0);
	assert_int_equal(registry_verify(reg, &loop, "router-1",
	                                 (const uint8_t *)"", 0, NULL, vcb,
	                                 &v[7], &rq[7]),
	                 0);
	for (i = 0; i < 8; i++)
		registry_cancel(rq[i]);
	/* The caller may drop its registry: requests keep it alive. */
	registry_free(reg);
	for (i = 0; i < 8; i++)
		assert_int_equal(v[i].v_calls, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < 8; i++) {
		assert_int_equal(v[i].v_calls, 1);
		assert_int_equal(v[i].v_result, -ECANCELED);
	}
	loop_done(&loop);
}

/* Hanging up after the guess ran does not dodge the throttle. */
static void
test_cancel_counts(void **state)
{
	struct registry *reg = load_ok(mkregistry(1));
	struct registry_throttle *thr = fake_throttle();
	struct registry_req *rq;
	struct throttle_entry *te;
	struct vres v = {0, 0};
	unsigned before = atomic_load(&registry_kdf_calls);
	uv_loop_t loop;
	int i;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_set_throttle(reg, thr);
	assert_int_equal(registry_verify(reg, &loop, "router-1",
	                                 (const uint8_t *)"guess", 5,
	                                 "10.7.7.7:1", vcb, &v, &rq),
	                 0);
	/* Let the threadpool run the scrypt before cancelling. */
	for (i = 0; i < 2000 && atomic_load(&registry_kdf_calls) == before; i++)
		usleep(1000);
	usleep(50000);
	registry_cancel(rq);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(v.v_calls, 1);
	assert_int_equal(v.v_result, -ECANCELED);
	te = tt_lookup(&thr->rt_pair, (const uint8_t *)"\4\12\7\7\7router-1",
	               13);
	assert_non_null(te);
	if (te != NULL)
		assert_int_equal(te->te_fails, 1);
	te = tt_lookup(&thr->rt_peer, (const uint8_t *)"\4\12\7\7\7", 5);
	assert_non_null(te);
	if (te != NULL) {
		assert_int_equal(te->te_fails, 1);
		assert_int_equal(te->te_inflight, 0);
	}
	loop_done(&loop);
	registry_free(reg);
	registry_throttle_free(thr);
}

/*
 * The default cost, and one above OpenSSL's default 32 MiB memory limit,
 * which the explicit maxmem lifts.
 */
static void
test_real_cost(void **state)
{
	const char *path = tpath("cost");
	struct registry *reg;
	char *line, *data;
	uv_loop_t loop;
	size_t n;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_new_ln = 14;
	registry_new_r = 8;
	line = mkline("r14", "pw14");
	registry_new_ln = 16;
	data = mkline("r16", "pw16");
	registry_new_ln = 10;
	registry_new_r = 1;
	assert_memory_equal(line, "r14 $scrypt$ln=14,r=8,p=1$", 26);
	n = strlen(line) + strlen(data) + 3;
	line = realloc(line, n);
	assert_non_null(line);
	strncat(line, "\n", n - strlen(line) - 1);
	strncat(line, data, n - strlen(line) - 1);
	write_str(path, line);
	reg = load_ok(path);
	assert_int_equal(verify(reg, &loop, "r14", "pw14", NULL, NULL), 0);
	assert_int_equal(verify(reg, &loop, "r16", "pw16", NULL, NULL), 0);
	assert_int_equal(verify(reg, &loop, "r16", "pw14", NULL, NULL),
	                 -EACCES);
	loop_done(&loop);
	registry_free(reg);
	free(line);
	free(data);
}

/* Many verifies at once, some cancelled, with the registry freed early. */
static void
test_verify_many(void **state)
{
	struct registry *reg = load_ok(mkregistry(4));
	struct registry_throttle *thr = fake_throttle();
	struct registry_req *rq;
	struct vres v[64];
	char id[32], sec[32];
	uv_loop_t loop;
	int i;

	(void)state;
	memset(v, 0, sizeof(v));
	assert_int_equal(uv_loop_init(&loop), 0);
	registry_throttle_set_limits(thr, 100, 100, 0, 100, 0);
	registry_throttle_set_checks(thr, 100, 100, 0);
	registry_set_throttle(reg, thr);
	registry_throttle_free(thr);
	for (i = 0; i < 64; i++) {
		snprintf(id, sizeof(id), "router-%d", i % 5 + 1);
		snprintf(sec, sizeof(sec), "secret-%d", i % 3 + 1);
		assert_int_equal(
		    registry_verify(reg, &loop, id, (const uint8_t *)sec,
		                    strlen(sec), "10.0.0.1:1", vcb, &v[i], &rq),
		    0);
		if (i % 7 == 0)
			registry_cancel(rq);
	}
	registry_free(reg);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < 64; i++) {
		int want;

		if (i % 7 == 0)
			want = -ECANCELED;
		else if (i % 5 + 1 == 5)
			want = -ENOENT;
		else if (i % 5 == i % 3)
			want = 0;
		else
			want = -EACCES;
		assert_int_equal(v[i].v_calls, 1);
		assert_int_equal(v[i].v_result, want);
	}
	loop_done(&loop);
}

/* --- editing --- */

static int
alphabet_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
			return 0;
	return 1;
}

static void
test_add_remove(void **state)
{
	const char *path = tpath("edit/devices");
	char sec[REGISTRY_SECRET_BUFSZ], sec2[REGISTRY_SECRET_BUFSZ];
	char err[512], small[8], *data;
	struct registry *reg;
	struct stat st;
	uv_loop_t loop;

	(void)state;
	assert_int_equal(mkdir(tpath("edit"), 0700), 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	/* The file is created, mode 0600. */
	assert_int_equal(
	    registry_add(path, "router-1", sec, sizeof(sec), err, sizeof(err)),
	    0);
	assert_int_equal(strlen(sec), REGISTRY_SECRET_LEN);
	assert_true(alphabet_ok(sec));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(tpath("edit/devices.lock"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 1);
	assert_int_equal(verify(reg, &loop, "router-1", sec, NULL, NULL), 0);
	registry_free(reg);

	/* An existing id is refused, and the secret buffer left alone. */
	memcpy(sec2, "untouched", 10);
	assert_int_equal(registry_add(path, "router-1", sec2, sizeof(sec2), err,
	                              sizeof(err)),
	                 -EEXIST);
	assert_string_equal(sec2, "untouched");
	assert_non_null(strstr(err, "\"router-1\" already exists"));
	assert_int_equal(registry_add(path, "router-2", small, sizeof(small),
	                              err, sizeof(err)),
	                 -ENOBUFS);
	assert_int_equal(
	    registry_add(path, "bad id", sec2, sizeof(sec2), err, sizeof(err)),
	    -EINVAL);

	/* Comments and other lines survive edits byte for byte. */
	data = read_str(path);
	{
		size_t n = strlen(data) + 64;
		char *d2 = malloc(n);

		assert_non_null(d2);
		snprintf(d2, n, "# keep me\r\n\n%s# tail comment", data);
		write_str(path, d2);
		chmod(path, 0644);
		free(d2);
	}
	free(data);
	assert_int_equal(registry_add(path, "router-2", sec2, sizeof(sec2), err,
	                              sizeof(err)),
	                 0);
	assert_string_not_equal(sec, sec2);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	data = read_str(path);
	assert_memory_equal(data, "# keep me\r\n\nrouter-1 $scrypt$", 29);
	assert_non_null(strstr(data, "\n# tail comment\nrouter-2 $scrypt$"));
	free(data);

	/* set replaces in place, then adds. */
	assert_int_equal(registry_set(path, "router-1",
	                              (const uint8_t *)"chosen-secret", 13, err,
	                              sizeof(err)),
	                 0);
	data = read_str(path);
	assert_memory_equal(data, "# keep me\r\n\nrouter-1 $scrypt$", 29);
	free(data);
	assert_int_equal(registry_set(path, "router-3",
	                              (const uint8_t *)"third", 5, err,
	                              sizeof(err)),
	                 0);
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 3);
	assert_int_equal(
	    verify(reg, &loop, "router-1", "chosen-secret", NULL, NULL), 0);
	assert_int_equal(verify(reg, &loop, "router-1", sec, NULL, NULL),
	                 -EACCES);
	assert_int_equal(verify(reg, &loop, "router-2", sec2, NULL, NULL), 0);
	assert_int_equal(verify(reg, &loop, "router-3", "third", NULL, NULL),
	                 0);
	registry_free(reg);
	err[0] = '\0';
	assert_int_equal(registry_set(path, "router-1", (const uint8_t *)"", 0,
	                              err, sizeof(err)),
	                 -EINVAL);
	assert_true(err[0] != '\0');

	/* remove */
	assert_int_equal(registry_remove(path, "router-1", err, sizeof(err)),
	                 0);
	assert_int_equal(registry_remove(path, "router-1", err, sizeof(err)),
	                 -ENOENT);
	assert_non_null(strstr(err, "no device \"router-1\""));
	assert_int_equal(
	    registry_remove(tpath("edit/none"), "router-1", err, sizeof(err)),
	    -ENOENT);
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 2);
	assert_false(registry_has(reg, "router-1"));
	registry_free(reg);
	data = read_str(path);
	assert_memory_equal(data, "# keep me\r\n\n# tail comment\nrouter-2 ",
	                    36);
	free(data);

	/* A broken file is not edited. */
	write_str(path, "router-1 $scrypt$junk\n");
	assert_int_equal(registry_add(path, "router-9", sec2, sizeof(sec2), err,
	                              sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, ":1: "));
	data = read_str(path);
	assert_string_equal(data, "router-1 $scrypt$junk\n");
	free(data);
	/* Nor a directory in its place. */
	assert_int_equal(registry_add(tpath("edit"), "router-9", sec2,
	                              sizeof(sec2), err, sizeof(err)),
	                 -EINVAL);
	loop_done(&loop);
}

/* No secret ever shows up in an error message. */
static void
test_no_secret_in_errors(void **state)
{
	static const char secret[] = "Sup3rS3cretValue";
	const uint8_t *s = (const uint8_t *)secret;
	const char *path = tpath("nosecret");
	char err[512], line[256];
	struct registry *reg;

	(void)state;
	write_str(path, "");
	assert_int_equal(
	    registry_set(path, "router 1", s, 16, err, sizeof(err)), -EINVAL);
	assert_null(strstr(err, secret));
	assert_int_equal(
	    registry_set(tpath("nodir/x"), "router-1", s, 16, err, sizeof(err)),
	    -ENOENT);
	assert_null(strstr(err, secret));
	assert_int_equal(
	    registry_set(path, "router-1", s, 16, err, sizeof(err)), 0);
	snprintf(line, sizeof(line), "router-1 %s\n", secret);
	write_str(path, line);
	assert_int_equal(
	    registry_set(path, "router-2", s, 16, err, sizeof(err)), -EINVAL);
	assert_null(strstr(err, secret));
	assert_int_equal(registry_load(path, &reg, err, sizeof(err)), -EINVAL);
	assert_null(strstr(err, secret));
	snprintf(line, sizeof(line), "%s $scrypt$\n", secret);
	write_str(path, line);
	assert_int_equal(registry_load(path, &reg, err, sizeof(err)), -EINVAL);
	assert_null(strstr(err, "Sup3r"));
}

static void
test_unique_secrets(void **state)
{
	const char *path = tpath("uniq");
	char secs[16][REGISTRY_SECRET_BUFSZ], id[16], err[256];
	int i, j;

	(void)state;
	for (i = 0; i < 16; i++) {
		snprintf(id, sizeof(id), "d%d", i);
		assert_int_equal(registry_add(path, id, secs[i],
		                              sizeof(secs[i]), err,
		                              sizeof(err)),
		                 0);
		assert_int_equal(strlen(secs[i]), REGISTRY_SECRET_LEN);
		assert_true(alphabet_ok(secs[i]));
		for (j = 0; j < i; j++)
			assert_string_not_equal(secs[i], secs[j]);
	}
}

static void
test_concurrent_adds(void **state)
{
	const char *path = tpath("conc");
	struct registry *reg;
	pid_t pid[2];
	int i, status;

	(void)state;
	for (i = 0; i < 2; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			char sec[REGISTRY_SECRET_BUFSZ], id[32];
			int j, bad = 0;

			for (j = 0; j < 12; j++) {
				snprintf(id, sizeof(id), "p%d-%d", i, j);
				if (registry_add(path, id, sec, sizeof(sec),
				                 NULL, 0) != 0)
					bad = 1;
			}
			_exit(bad);
		}
	}
	for (i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	reg = load_ok(path);
	assert_int_equal(registry_count(reg), 24);
	assert_true(registry_has(reg, "p0-11"));
	assert_true(registry_has(reg, "p1-0"));
	registry_free(reg);
}

static int
setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/registry_test.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	/* Cheap hashes keep the suite fast. */
	registry_new_ln = 10;
	registry_new_r = 1;
	registry_new_p = 1;
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_parse_good),
	    cmocka_unit_test(test_parse_bad),
	    cmocka_unit_test(test_parse_buffer),
	    cmocka_unit_test(test_load_errors),
	    cmocka_unit_test(test_hash_line),
	    cmocka_unit_test(test_verify_basic),
	    cmocka_unit_test(test_verify_args),
	    cmocka_unit_test(test_verify_cache),
	    cmocka_unit_test(test_proof),
	    cmocka_unit_test(test_throttle_device),
	    cmocka_unit_test(test_throttle_peer),
	    cmocka_unit_test(test_throttle_bounded),
	    cmocka_unit_test(test_throttle_inflight),
	    cmocka_unit_test(test_throttle_concurrent),
	    cmocka_unit_test(test_throttle_waiting),
	    cmocka_unit_test(test_reload),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_cancel_counts),
	    cmocka_unit_test(test_real_cost),
	    cmocka_unit_test(test_verify_many),
	    cmocka_unit_test(test_add_remove),
	    cmocka_unit_test(test_no_secret_in_errors),
	    cmocka_unit_test(test_unique_secrets),
	    cmocka_unit_test(test_concurrent_adds),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
