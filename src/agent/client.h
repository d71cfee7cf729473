/*
 * One outbound-https client of ncgrpc-agent (a "client NAME" stanza): it
 * keeps one connection to one server of its address list waiting in a
 * long-poll NcgrpcInitialize, and turns each granted Initialize into a
 * session on that connection while a fresh connection takes its place.
 *
 * Address selection (docs/configuration.md): addresses are tried in order
 * until one works; after a failed pass over the whole list the client waits
 * waittime seconds.  After a connection that worked ends, in-order starts
 * again from the first address, sticky from the address last connected.
 * Reconnects after a lost connection use a jittered backoff.
 */
#ifndef NCGRPC_CLIENT_H
#define NCGRPC_CLIENT_H

#include <stdint.h>

#include <uv.h>

#include "conf.h"
#include "heaptrim.h"
#include "session.h"
#include "xport.h"

struct client;

/*
 * Agent-wide settings, owned by the agent.  Connections read them when they
 * start; client_update() picks up a changed keepalive interval.
 */
struct client_settings {
	uint64_t cs_instance_id;          /* random per agent start */
	unsigned cs_ping_interval_ms;     /* HTTP/2 keepalive; 0: none */
	unsigned cs_ping_interval_max_ms; /* too_many_pings growth cap */
	unsigned cs_ping_timeout_ms;
	unsigned cs_session_limit;  /* sessions per client at once */
	struct xport_opts cs_xport; /* TCP keepalive, timeouts */
	struct session_env cs_session;
	/*
	 * Initialised by the agent, or NULL: each connection that starts
	 * to wait is counted there, and after a storm of them the heap
	 * gives back the pages that TLS handshakes left free (heaptrim.h).
	 */
	struct heaptrim *cs_trim;
};

/*
 * Creates a client from cc (copied: the client does not keep pointers into
 * the configuration) and starts connecting.  Returns 0 and sets *out, or
 * -ENOMEM.  A trusted-cert that cannot be loaded is logged and makes that
 * address fail each time it is tried.
 */
int client_start(uv_loop_t *loop, const struct conf_client *cc,
                 const struct client_settings *cs, struct client **out);

/* Applies waittime and reconnect-strategy of cc, which apply live. */
void client_update(struct client *cl, const struct conf_client *cc);

/*
 * Disconnects everything (sessions too) and frees the client; done runs
 * when the last connection and handle are gone.
 */
void client_stop(struct client *cl, const char *why, void (*done)(void *),
                 void *arg);

const char *client_name(const struct client *cl);

/* Sessions running now. */
unsigned client_sessions(const struct client *cl);

#endif
