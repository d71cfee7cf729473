/*
 * ncgrpc-sshd, the SSH front door: what its files share.
 *
 * sshd.c owns the process: configuration, host key, authorized_keys,
 * the listening socket and signals.  sconn.c owns each accepted SSH
 * connection (libssh session driven from the libuv loop) and its channels,
 * each joined to one Session call of ncgrpcd's operator API.
 * docs/internals/sshd.md explains the design.
 */
#ifndef NCGRPC_SSHD_H
#define NCGRPC_SSHD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <libssh/libssh.h>
#include <libssh/server.h>
#include <uv.h>

#ifndef container_of
#define container_of(ptr, type, member)                                        \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#endif

struct akeys;
struct sconf;
struct sconn;

struct sshd {
	uv_loop_t *sd_loop;
	struct sconf *sd_sc;   /* the configuration in force */
	ssh_bind sd_bind;      /* holds the host key */
	struct akeys *sd_keys; /* replaced on SIGHUP */
	char sd_hostfp[128];   /* host key fingerprint, for the log */
	unsigned sd_nconns;    /* SSH connections open */
	unsigned sd_nunauth;   /* of which not authenticated yet */
	uint64_t sd_dropped;   /* connections closed at once: over a cap */
	uint64_t sd_next_id;
	int sd_stopping;
	LIST_HEAD(, sconn) sd_conns;
};

/*
 * Takes over fd, a connected non-blocking TCP socket from peer
 * ("ADDR:PORT"): starts the SSH handshake, or closes fd (logging why) when
 * libssh cannot take it.
 */
void sconn_accept(struct sshd *sd, int fd, const char *peer);

/* Closes every connection (shutdown); channels end with why. */
void sconn_close_all(struct sshd *sd, const char *why);

#endif
