/*
 * ncgrpc-opload: opens shell sessions through ncgrpcd's operator socket,
 * many at a time, and times each one.  For bench/bench_scale.py: a client
 * in Python spent more CPU than ncgrpcd and the agents together with 20
 * sessions in flight, so its figures measured itself.
 *
 *	ncgrpc-opload -s SOCKET [-c CONCURRENCY] [-g GAP_MS] [-w WAIT_MS]
 *	    < DEVICE-IDS
 *
 * Reads device ids, one per line, and runs one shell session on each, at
 * most CONCURRENCY at a time, all on one connection (as an automation
 * client would).  With GAP_MS, each next open waits that long after a
 * session ends: opens spread out as an operator's are, not back to back,
 * so that what one session leaves running does not land on the next one.
 * A session: SessionOpen (line mode), then the first
 * output (the prompt), "echo x" and its output, "exit", and the end.
 * Prints one line per session:
 *
 *	session ID started=MS first=MS echo=MS total=MS status=NAME
 *
 * (milliseconds from the open, -1 for a step never reached), then
 *
 *	summary sessions=N failed=N seconds=S started_median=MS
 *	    started_p99=MS first_median=MS first_p99=MS
 *
 * Exits 0 when every session ended OK, 1 otherwise, 64 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "err.h"
#include "grpc.h"
#include "log.h"
#include "ncgrpc_operator.pb-c.h"
#include "peerutil.h"

#define OPSVC       "/ncgrpc.operator.v1.Operator/Session"
#define TAIL_LEN    8
#define MAX_ID_LEN  255
#define MAX_DEVICES 1000000

enum step { ST_PROMPT, ST_ECHO, ST_EXIT };

struct sess {
	const char *s_id;
	struct grpc_call *s_call;
	enum step s_step;
	uint64_t s_open, s_started, s_first, s_echo, s_end;
	char s_tail[TAIL_LEN];
	size_t s_tail_len;
	int s_status;
};

static struct {
	uv_loop_t *loop;
	struct grpc_conn *conn;
	const char *sock;
	unsigned long concurrency;
	unsigned long wait_ms;
	unsigned long gap_ms;
	uv_timer_t gap; /* the pause before the next open */
	struct sess *sess;
	size_t n, next, running, done, failed;
	uint64_t t0;
	int closing;
} ol = {.concurrency = 20, .wait_ms = 30000};

static void start_next(void);

static void
on_gap(uv_timer_t *t)
{
	(void)t;
	start_next();
}

/* Milliseconds from the session's open to t, or -1 for never. */
static double
ms_since_open(const struct sess *s, uint64_t t)
{
	return t == 0 ? -1.0 : (double)(t - s->s_open) / 1e6;
}

static int
send_input(struct sess *s, const char *line)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;

	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA;
	in.data.data = (uint8_t *)(uintptr_t)line;
	in.data.len = strlen(line);
	return grpc_call_send_pb(s->s_call, &in.base);
}

/*
 * Nonzero if pat (at most TAIL_LEN bytes) occurs in the session's output
 * so far: in data, or across its start with the last TAIL_LEN bytes kept
 * from the messages before, which are then updated.
 */
static int
output_has(struct sess *s, const uint8_t *data, size_t len, const char *pat)
{
	char edge[TAIL_LEN * 2];
	size_t plen = strlen(pat), head = len < TAIL_LEN ? len : TAIL_LEN, keep;
	int found;

	memcpy(edge, s->s_tail, s->s_tail_len);
	memcpy(edge + s->s_tail_len, data, head);
	found = memmem(edge, s->s_tail_len + head, pat, plen) != NULL ||
	        memmem(data, len, pat, plen) != NULL;
	if (len >= TAIL_LEN) {
		memcpy(s->s_tail, data + len - TAIL_LEN, TAIL_LEN);
		s->s_tail_len = TAIL_LEN;
	} else {
		keep = s->s_tail_len + len > TAIL_LEN ? TAIL_LEN - len
		                                      : s->s_tail_len;
		memmove(s->s_tail, s->s_tail + s->s_tail_len - keep, keep);
		memcpy(s->s_tail + keep, data, len);
		s->s_tail_len = keep + len;
	}
	return found;
}

static void
on_output(struct sess *s, const uint8_t *data, size_t len)
{
	uint64_t now = uv_hrtime();

	if (s->s_first == 0)
		s->s_first = now;
	switch (s->s_step) {
	case ST_PROMPT:
		if (!output_has(s, data, len, " "))
			return;
		s->s_step = ST_ECHO;
		s->s_tail_len = 0;
		if (send_input(s, "echo x\n") != 0)
			grpc_call_cancel(s->s_call);
		break;
	case ST_ECHO:
		/* The echoed line, then its output. */
		if (!output_has(s, data, len, "\r\nx\r\n"))
			return;
		s->s_echo = now;
		s->s_step = ST_EXIT;
		if (send_input(s, "exit\n") != 0)
			grpc_call_cancel(s->s_call);
		break;
	case ST_EXIT:
		break;
	}
}

static void
s_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	struct sess *s = arg;
	Ncgrpc__Operator__V1__SessionOutput *out;

	out = ncgrpc__operator__v1__session_output__unpack(NULL, len, msg);
	if (out == NULL) {
		log_warnx("%s: malformed SessionOutput", s->s_id);
		grpc_call_cancel(c);
		return;
	}
	switch (out->output_case) {
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_STARTED:
		if (s->s_started == 0)
			s->s_started = uv_hrtime();
		break;
	case NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA:
		on_output(s, out->data.data, out->data.len);
		break;
	default:
		break;
	}
	ncgrpc__operator__v1__session_output__free_unpacked(out, NULL);
}

static void
s_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	struct sess *s = arg;

	(void)c;
	s->s_call = NULL;
	s->s_end = uv_hrtime();
	s->s_status = status;
	/* A session that never got to "exit" did not end on its own. */
	if (status == GRPC_STATUS_OK && s->s_step != ST_EXIT)
		s->s_status = GRPC_STATUS_UNKNOWN;
	if (s->s_status != GRPC_STATUS_OK) {
		ol.failed++;
		log_warnx("%s: %s: %s", s->s_id, grpc_status_name(status),
		          message);
	}
	peer_say("session %s started=%.2f first=%.2f echo=%.2f total=%.2f "
	         "status=%s",
	         s->s_id, ms_since_open(s, s->s_started),
	         ms_since_open(s, s->s_first), ms_since_open(s, s->s_echo),
	         ms_since_open(s, s->s_end), grpc_status_name(s->s_status));
	ol.running--;
	ol.done++;
	if (ol.gap_ms > 0 && ol.next < ol.n)
		uv_timer_start(&ol.gap, on_gap, ol.gap_ms, 0);
	else
		start_next();
}

static const struct grpc_call_ops s_ops = {
    .on_message = s_on_message,
    .on_end = s_on_end,
};

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The p-th percentile (nearest rank) of the n values in v, sorted here. */
static double
percentile(double *v, size_t n, double p)
{
	size_t k;

	if (n == 0)
		return -1.0;
	qsort(v, n, sizeof(*v), cmp_double);
	k = (size_t)(p / 100.0 * (double)n + 0.5);
	k = k == 0 ? 0 : k - 1;
	return v[k < n ? k : n - 1];
}

static void
summarize(void)
{
	double *st, *fi;
	size_t i, ns = 0, nf = 0;

	if ((st = calloc(ol.n + 1, sizeof(*st))) == NULL ||
	    (fi = calloc(ol.n + 1, sizeof(*fi))) == NULL) {
		free(st);
		log_warnx("out of memory for the summary");
		return;
	}
	for (i = 0; i < ol.n; i++) {
		if (ol.sess[i].s_started != 0)
			st[ns++] =
			    ms_since_open(&ol.sess[i], ol.sess[i].s_started);
		if (ol.sess[i].s_first != 0)
			fi[nf++] =
			    ms_since_open(&ol.sess[i], ol.sess[i].s_first);
	}
	peer_say("summary sessions=%zu failed=%zu seconds=%.3f "
	         "started_median=%.2f started_p99=%.2f first_median=%.2f "
	         "first_p99=%.2f",
	         ol.n, ol.failed, (double)(uv_hrtime() - ol.t0) / 1e9,
	         percentile(st, ns, 50), percentile(st, ns, 99),
	         percentile(fi, nf, 50), percentile(fi, nf, 99));
	free(st);
	free(fi);
}

static void
start_one(struct sess *s)
{
	Ncgrpc__Operator__V1__SessionInput in =
	    NCGRPC__OPERATOR__V1__SESSION_INPUT__INIT;
	Ncgrpc__Operator__V1__SessionOpen o =
	    NCGRPC__OPERATOR__V1__SESSION_OPEN__INIT;
	int rc;

	s->s_open = uv_hrtime();
	rc = grpc_call_start(ol.conn, OPSVC, NULL, 0, &s_ops, s, &s->s_call);
	if (rc != 0) {
		log_warnx("%s: cannot start the call: %s", s->s_id,
		          ncg_strerror(rc));
		s->s_status = GRPC_STATUS_UNAVAILABLE;
		ol.failed++;
		ol.done++;
		return;
	}
	o.device_id = (char *)(uintptr_t)s->s_id;
	o.type = NCGRPC__OPERATOR__V1__SESSION_TYPE__SHELL;
	o.wait_ms = (uint32_t)ol.wait_ms;
	in.input_case = NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_OPEN;
	in.open = &o;
	ol.running++;
	if (grpc_call_send_pb(s->s_call, &in.base) != 0)
		grpc_call_cancel(s->s_call); /* on_end counts it */
}

static void
start_next(void)
{
	while (!ol.closing && ol.next < ol.n && ol.running < ol.concurrency)
		start_one(&ol.sess[ol.next++]);
	if (ol.done == ol.n && !ol.closing) {
		ol.closing = 1;
		uv_close((uv_handle_t *)&ol.gap, NULL);
		summarize();
		grpc_conn_close(ol.conn, 0);
	}
}

static void
on_ready(struct grpc_conn *conn, void *arg)
{
	(void)conn;
	(void)arg;
	ol.t0 = uv_hrtime();
	start_next();
}

static void
on_closed(struct grpc_conn *conn, int err, const char *reason, void *arg)
{
	(void)conn;
	(void)arg;
	ol.conn = NULL;
	if (!ol.closing) {
		log_warnx("connection to %s closed: %s", ol.sock,
		          err != 0 ? ncg_strerror(err) : reason);
		ol.failed += ol.n - ol.done;
		ol.closing = 1;
		uv_close((uv_handle_t *)&ol.gap, NULL);
	}
}

static const struct grpc_conn_ops conn_ops = {
    .on_ready = on_ready,
    .on_closed = on_closed,
};

/* Reads the device ids from stdin; returns 0 or -1 (said why). */
static int
read_ids(void)
{
	char line[MAX_ID_LEN + 2];
	size_t cap = 0, len;
	struct sess *ns;

	while (fgets(line, sizeof(line), stdin) != NULL) {
		len = strcspn(line, "\r\n");
		if (line[len] == '\0' && !feof(stdin)) {
			log_warnx("device id %zu: longer than %d bytes",
			          ol.n + 1, MAX_ID_LEN);
			return -1;
		}
		line[len] = '\0';
		if (len == 0)
			continue;
		if (ol.n == MAX_DEVICES) {
			log_warnx("more than %d device ids", MAX_DEVICES);
			return -1;
		}
		if (ol.n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			if ((ns = reallocarray(ol.sess, cap, sizeof(*ns))) ==
			    NULL)
				goto nomem;
			ol.sess = ns;
		}
		memset(&ol.sess[ol.n], 0, sizeof(ol.sess[ol.n]));
		if ((ol.sess[ol.n].s_id = strdup(line)) == NULL)
			goto nomem;
		ol.n++;
	}
	if (ferror(stdin)) {
		log_warn("reading the device ids");
		return -1;
	}
	return 0;
nomem:
	log_warnx("out of memory for the device ids");
	return -1;
}

static unsigned long
number(const char *s, const char *what, unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
	    v > max) {
		fprintf(stderr,
		        "ncgrpc-opload: %s must be a number from %lu to %lu, "
		        "not \"%s\"\n",
		        what, min, max, s);
		exit(64);
	}
	return v;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: ncgrpc-opload -s SOCKET [-c CONCURRENCY] "
	           "[-g GAP_MS] [-w WAIT_MS] < DEVICE-IDS\n"
	           "Opens a shell session on each device id read from "
	           "standard input (one per line),\n"
	           "at most CONCURRENCY (default 20) at a time, through "
	           "ncgrpcd's operator socket,\n"
	           "and prints the time of each step.  WAIT_MS (default "
	           "30000) is each open's wait\n"
	           "for an idle device connection.  GAP_MS (default 0) is "
	           "the pause after a\n"
	           "session ends before the next open.\n");
}

int
main(int argc, char **argv)
{
	int ch, rc;
	size_t i;

	log_init("ncgrpc-opload", LOG_LEVEL_WARN);
	while ((ch = getopt(argc, argv, "c:g:hs:w:")) != -1) {
		switch (ch) {
		case 'c':
			ol.concurrency =
			    number(optarg, "the concurrency", 1, 10000);
			break;
		case 'g':
			ol.gap_ms = number(optarg, "the gap", 0, 60000);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 's':
			ol.sock = optarg;
			break;
		case 'w':
			ol.wait_ms = number(optarg, "the wait", 0, 600000);
			break;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (ol.sock == NULL || optind != argc) {
		usage(stderr);
		return 64;
	}
	if (read_ids() != 0)
		return 64;
	if (ol.n == 0) {
		fprintf(stderr, "ncgrpc-opload: no device ids on standard "
		                "input\n");
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	ol.loop = uv_default_loop();
	uv_timer_init(ol.loop, &ol.gap);
	rc = grpc_conn_connect_unix(ol.loop, ol.sock, NULL, &conn_ops, NULL,
	                            &ol.conn);
	if (rc != 0) {
		log_warnx("cannot connect to %s: %s", ol.sock,
		          ncg_strerror(rc));
		return 1;
	}
	uv_run(ol.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(ol.loop) != 0)
		log_warnx("event loop closed with handles open");
	for (i = 0; i < ol.n; i++)
		free((char *)(uintptr_t)ol.sess[i].s_id);
	free(ol.sess);
	return ol.failed == 0 && ol.done == ol.n ? 0 : 1;
}
