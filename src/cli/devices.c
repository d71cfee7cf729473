/*
 * "ncgrpc devices" (ListDevices) and "ncgrpc watch" (WatchDevices), as a
 * table or as JSON.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "err.h"
#include "grpc.h"
#include "ncgrpc_operator.pb-c.h"
#include "utf8.h"

/* A unary call should not need long; a hung daemon should not hang us. */
#define DEVICES_DEADLINE_MS 15000

#define NCOLS 6

static struct {
	uv_loop_t *dv_loop;
	struct grpc_call *dv_call; /* NULL once on_end ran */
	int dv_watch;              /* watch, not devices */
	int dv_json;
	int dv_current;
	int dv_exit;
	int dv_interrupted;
	int dv_signals_open;
	Ncgrpc__Operator__V1__ListDevicesResponse *dv_resp;
	uv_signal_t dv_sig[3];
} dv;

static const int dv_signums[3] = {SIGINT, SIGTERM, SIGHUP};

void
json_string(FILE *f, const char *s)
{
	size_t len = strlen(s);
	const uint8_t *p = (const uint8_t *)s;
	uint8_t *clean = NULL;
	size_t i;

	/* Proto strings should be UTF-8; never print anything else. */
	if (!utf8_valid(p, len) && (clean = malloc(3 * len + 1)) != NULL) {
		len = utf8_sanitize(p, len, clean);
		p = clean;
	}
	fputc('"', f);
	for (i = 0; i < len; i++) {
		switch (p[i]) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (p[i] < 0x20 || p[i] == 0x7f)
				fprintf(f, "\\u%04x", p[i]);
			else
				fputc(p[i], f);
			break;
		}
	}
	fputc('"', f);
	free(clean);
}

static void
json_device(FILE *f, const Ncgrpc__Operator__V1__Device *d)
{
	fputs("{\"device_id\":", f);
	json_string(f, d->device_id);
	fputs(",\"peer\":", f);
	json_string(f, d->peer);
	/* The proto3 JSON mapping writes 64-bit integers as strings. */
	fprintf(f,
	        ",\"connected_since\":\"%" PRId64
	        "\",\"instance_id\":\"%" PRIu64
	        "\",\"idle_connections\":%" PRIu32
	        ",\"active_sessions\":%" PRIu32 "}",
	        d->connected_since, d->instance_id, d->idle_connections,
	        d->active_sessions);
}

/* "2026-11-26 14:05:01 (3m ago)", or "-" when unknown. */
static void
format_since(int64_t since, char *buf, size_t len)
{
	char when[64], age[32];

	if (since <= 0) {
		snprintf(buf, len, "-");
		return;
	}
	cli_format_time(since, when, sizeof(when));
	cli_format_age((int64_t)time(NULL) - since, age, sizeof(age));
	/* Cut rather than warn: both parts are short by construction. */
	if (snprintf(buf, len, "%.40s (%.20s ago)", when, age) < 0)
		buf[0] = '\0';
}

static void
print_table(const Ncgrpc__Operator__V1__ListDevicesResponse *r)
{
	static const char *const head[NCOLS] = {"DEVICE",   "PEER", "CONNECTED",
	                                        "INSTANCE", "IDLE", "SESSIONS"};
	char(*cells)[NCOLS][96];
	size_t w[NCOLS], i, k, n = r->n_devices;

	if ((cells = calloc(n + 1, sizeof(*cells))) == NULL) {
		cli_err("out of memory");
		dv.dv_exit = CLI_EXIT_FAIL;
		return;
	}
	for (k = 0; k < NCOLS; k++)
		snprintf(cells[0][k], sizeof(cells[0][k]), "%s", head[k]);
	for (i = 0; i < n; i++) {
		const Ncgrpc__Operator__V1__Device *d = r->devices[i];
		char(*c)[96] = cells[i + 1];

		snprintf(c[0], sizeof(c[0]), "%s", d->device_id);
		snprintf(c[1], sizeof(c[1]), "%s",
		         d->peer[0] != '\0' ? d->peer : "-");
		format_since(d->connected_since, c[2], sizeof(c[2]));
		snprintf(c[3], sizeof(c[3]), "%" PRIu64, d->instance_id);
		snprintf(c[4], sizeof(c[4]), "%s (%" PRIu32 ")",
		         d->idle_connections > 0 ? "yes" : "no",
		         d->idle_connections);
		snprintf(c[5], sizeof(c[5]), "%" PRIu32, d->active_sessions);
	}
	for (k = 0; k < NCOLS; k++) {
		w[k] = 0;
		for (i = 0; i <= n; i++)
			if (strlen(cells[i][k]) > w[k])
				w[k] = strlen(cells[i][k]);
	}
	for (i = 0; i <= n; i++) {
		for (k = 0; k < NCOLS - 1; k++)
			printf("%-*s  ", (int)w[k], cells[i][k]);
		printf("%s\n", cells[i][NCOLS - 1]);
	}
	free(cells);
}

static void
print_devices(const Ncgrpc__Operator__V1__ListDevicesResponse *r)
{
	size_t i;

	if (!dv.dv_json) {
		print_table(r);
		return;
	}
	fputc('[', stdout);
	for (i = 0; i < r->n_devices; i++) {
		fputs(i == 0 ? "\n  " : ",\n  ", stdout);
		json_device(stdout, r->devices[i]);
	}
	fputs(r->n_devices > 0 ? "\n]\n" : "]\n", stdout);
}

static const char *
kind_name(int kind)
{
	switch (kind) {
	case NCGRPC__OPERATOR__V1__DEVICE_EVENT__KIND__CONNECTED:
		return "CONNECTED";
	case NCGRPC__OPERATOR__V1__DEVICE_EVENT__KIND__DISCONNECTED:
		return "DISCONNECTED";
	case NCGRPC__OPERATOR__V1__DEVICE_EVENT__KIND__RESTARTED:
		return "RESTARTED";
	default:
		return "UNKNOWN";
	}
}

static void
print_event(const Ncgrpc__Operator__V1__DeviceEvent *e)
{
	static const Ncgrpc__Operator__V1__Device none =
	    NCGRPC__OPERATOR__V1__DEVICE__INIT;
	const Ncgrpc__Operator__V1__Device *d =
	    e->device != NULL ? e->device : &none;
	char now[64];

	if (dv.dv_json) {
		printf("{\"kind\":\"%s\",\"device\":", kind_name(e->kind));
		json_device(stdout, d);
		fputs(",\"reason\":", stdout);
		json_string(stdout, e->reason);
		fputs("}\n", stdout);
	} else {
		cli_format_time((int64_t)time(NULL), now, sizeof(now));
		printf("%s %-12s %s peer=%s instance=%" PRIu64 " idle=%" PRIu32
		       " sessions=%" PRIu32 " reason=",
		       now, kind_name(e->kind), d->device_id,
		       d->peer[0] != '\0' ? d->peer : "-", d->instance_id,
		       d->idle_connections, d->active_sessions);
		json_string(stdout, e->reason);
		fputc('\n', stdout);
	}
	fflush(stdout);
}

static void
dv_close_signals(void)
{
	int i;

	if (!dv.dv_signals_open)
		return;
	dv.dv_signals_open = 0;
	for (i = 0; i < 3; i++)
		uv_close((uv_handle_t *)&dv.dv_sig[i], NULL);
}

static void
dv_on_message(struct grpc_call *c, const uint8_t *msg, size_t len, void *arg)
{
	Ncgrpc__Operator__V1__DeviceEvent *e;

	(void)arg;
	if (!dv.dv_watch) {
		if (dv.dv_resp != NULL)
			return;
		dv.dv_resp =
		    ncgrpc__operator__v1__list_devices_response__unpack(
		        NULL, len, msg);
		if (dv.dv_resp == NULL)
			grpc_call_cancel(c);
		return;
	}
	e = ncgrpc__operator__v1__device_event__unpack(NULL, len, msg);
	if (e == NULL) {
		cli_err("malformed DeviceEvent from ncgrpcd");
		dv.dv_exit = CLI_EXIT_FAIL;
		grpc_call_cancel(c);
		return;
	}
	print_event(e);
	ncgrpc__operator__v1__device_event__free_unpacked(e, NULL);
}

static void
dv_on_end(struct grpc_call *c, int status, const char *message, void *arg)
{
	(void)c;
	(void)arg;
	dv.dv_call = NULL;
	if (dv.dv_watch) {
		if (dv.dv_interrupted)
			dv.dv_exit = CLI_EXIT_OK;
		else if (dv.dv_exit == CLI_EXIT_OK) {
			cli_err("the watch ended: %s",
			        message[0] != '\0' ? message
			                           : grpc_status_name(status));
			dv.dv_exit = CLI_EXIT_FAIL;
		}
	} else if (status != GRPC_STATUS_OK) {
		opconn_report(status, message);
		dv.dv_exit = CLI_EXIT_FAIL;
	} else if (dv.dv_resp == NULL) {
		cli_err("no or malformed ListDevicesResponse from ncgrpcd");
		dv.dv_exit = CLI_EXIT_FAIL;
	} else {
		print_devices(dv.dv_resp);
		if (fflush(stdout) != 0 || ferror(stdout)) {
			cli_err("cannot write the list: %s", strerror(errno));
			dv.dv_exit = CLI_EXIT_FAIL;
		}
	}
	dv_close_signals();
	opconn_close();
}

static const struct grpc_call_ops dv_call_ops = {
    .on_message = dv_on_message,
    .on_end = dv_on_end,
};

static void
dv_on_ready(struct grpc_conn *conn, void *arg)
{
	Ncgrpc__Operator__V1__ListDevicesRequest lreq =
	    NCGRPC__OPERATOR__V1__LIST_DEVICES_REQUEST__INIT;
	Ncgrpc__Operator__V1__WatchDevicesRequest wreq =
	    NCGRPC__OPERATOR__V1__WATCH_DEVICES_REQUEST__INIT;
	int rc;

	(void)arg;
	if (dv.dv_watch)
		rc = grpc_call_start(conn, CLI_OPSVC "WatchDevices", NULL, 0,
		                     &dv_call_ops, NULL, &dv.dv_call);
	else
		rc = grpc_call_start(conn, CLI_OPSVC "ListDevices", NULL,
		                     DEVICES_DEADLINE_MS, &dv_call_ops, NULL,
		                     &dv.dv_call);
	if (rc != 0) {
		cli_err("cannot start the call: %s", ncg_strerror(rc));
		dv.dv_exit = CLI_EXIT_FAIL;
		dv_close_signals();
		opconn_close();
		return;
	}
	wreq.include_current = dv.dv_current;
	/* on_end may run inside send or close_send: check dv_call after. */
	rc = opconn_send(dv.dv_call, dv.dv_watch ? &wreq.base : &lreq.base);
	if (rc != 0 && dv.dv_call != NULL) {
		cli_err("cannot send the request: %s", ncg_strerror(rc));
		dv.dv_exit = CLI_EXIT_FAIL;
		grpc_call_cancel(dv.dv_call);
		return;
	}
	if (dv.dv_call != NULL)
		grpc_call_close_send(dv.dv_call);
}

static void
dv_on_closed(int unreachable, void *arg)
{
	(void)arg;
	if (unreachable)
		dv.dv_exit = CLI_EXIT_UNREACHABLE;
	dv_close_signals();
}

static const struct opconn_ops dv_conn_ops = {
    .oo_ready = dv_on_ready,
    .oo_closed = dv_on_closed,
};

static void
dv_on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	dv.dv_interrupted = 1;
	if (dv.dv_call != NULL)
		grpc_call_cancel(dv.dv_call); /* on_end may run inside */
	else {
		dv_close_signals();
		opconn_close();
	}
}

static int
dv_run(const struct cli *cl)
{
	const char *path;
	int i, rc;

	if ((path = cli_socket_path(cl)) == NULL)
		return CLI_EXIT_FAIL;
	dv.dv_loop = uv_default_loop();
	for (i = 0; i < 3; i++) {
		uv_signal_init(dv.dv_loop, &dv.dv_sig[i]);
		uv_signal_start(&dv.dv_sig[i], dv_on_signal, dv_signums[i]);
	}
	dv.dv_signals_open = 1;
	if (opconn_open(dv.dv_loop, path, &dv_conn_ops, NULL) != 0) {
		dv.dv_exit = CLI_EXIT_UNREACHABLE;
		dv_close_signals();
	}
	uv_run(dv.dv_loop, UV_RUN_DEFAULT);
	rc = dv.dv_exit;
	if (dv.dv_resp != NULL)
		ncgrpc__operator__v1__list_devices_response__free_unpacked(
		    dv.dv_resp, NULL);
	if (uv_loop_close(dv.dv_loop) != 0)
		cli_err("event loop closed with handles open");
	return rc;
}

static int
dv_parse(int argc, char **argv, int watch)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"current", no_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	optind = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			dv.dv_json = 1;
			break;
		case 'c':
			if (watch) {
				dv.dv_current = 1;
				break;
			}
			/* FALLTHROUGH */
		default:
			return cli_usage_error("%s: unknown option \"%s\"",
			                       argv[0], argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage_error("%s: unexpected argument \"%s\"",
		                       argv[0], argv[optind]);
	return 0;
}

int
cmd_devices(const struct cli *cl, int argc, char **argv)
{
	int rc;

	if ((rc = dv_parse(argc, argv, 0)) != 0)
		return rc;
	return dv_run(cl);
}

int
cmd_watch(const struct cli *cl, int argc, char **argv)
{
	int rc;

	dv.dv_watch = 1;
	if ((rc = dv_parse(argc, argv, 1)) != 0)
		return rc;
	return dv_run(cl);
}
