/*
 * TLS session resumption (tls.h, docs/internals/tls.md): the client's
 * cache of the newest ticket per server, and the server's tickets issued
 * on demand with appdata.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "err.h"
#include "tls_int.h"

static int tls_resume_idx = -1;

static void
resume_cache_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                  long argl, void *argp)
{
	struct tls_resume_cache *rc = ptr;
	size_t i;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (rc == NULL)
		return;
	for (i = 0; i < rc->rc_n; i++) {
		free(rc->rc_ent[i].rs_key);
		SSL_SESSION_free(rc->rc_ent[i].rs_sess);
	}
	free(rc->rc_ent);
	free(rc);
}

struct tls_resume_cache *
tls__resume_cache(SSL_CTX *ssl)
{
	if (tls_resume_idx < 0)
		return NULL;
	return SSL_CTX_get_ex_data(ssl, tls_resume_idx);
}

static struct tls_resume_cache *
resume_cache(SSL *ssl)
{
	return tls__resume_cache(SSL_get_SSL_CTX(ssl));
}

/*
 * A linear search: a context has a few keys per client that shares it,
 * and an agent's thousand clients cost microseconds per connection.
 */
static struct tls_resume *
resume_find(struct tls_resume_cache *rc, const char *key)
{
	size_t i;

	for (i = 0; i < rc->rc_n; i++)
		if (strcmp(rc->rc_ent[i].rs_key, key) == 0)
			return &rc->rc_ent[i];
	return NULL;
}

/* Drops the least recently used entry. */
static void
resume_evict(struct tls_resume_cache *rc)
{
	struct tls_resume *e = &rc->rc_ent[0];
	size_t i;

	for (i = 1; i < rc->rc_n; i++)
		if (rc->rc_ent[i].rs_used < e->rs_used)
			e = &rc->rc_ent[i];
	free(e->rs_key);
	SSL_SESSION_free(e->rs_sess);
	*e = rc->rc_ent[--rc->rc_n];
}

/*
 * A new entry for key, after the least recently used ones have made room:
 * one, or more when sharers of the context went and the bound fell.
 */
static struct tls_resume *
resume_slot(struct tls_resume_cache *rc, const char *key)
{
	struct tls_resume *e, *grown;
	size_t cap;
	char *k;

	if ((k = strdup(key)) == NULL)
		return NULL;
	while (rc->rc_n > 0 && rc->rc_n >= rc->rc_max)
		resume_evict(rc);
	if (rc->rc_n == rc->rc_cap) {
		cap = rc->rc_cap == 0 ? 4 : 2 * rc->rc_cap;
		if ((grown = reallocarray(rc->rc_ent, cap, sizeof(*grown))) ==
		    NULL) {
			free(k);
			return NULL;
		}
		rc->rc_ent = grown;
		rc->rc_cap = cap;
	}
	e = &rc->rc_ent[rc->rc_n++];
	e->rs_key = k;
	e->rs_sess = NULL;
	e->rs_used = 0;
	return e;
}

/*
 * A ticket arrived (TLS 1.3 sends them after the handshake, at any time):
 * it replaces the one kept for this server.  We keep a copy: OpenSSL marks
 * the connection's own session not resumable when the connection ends
 * without close_notify, which is exactly how it ends when the server
 * restarts, the case resumption is for.
 */
static int
resume_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_conn *c = SSL_get_app_data(ssl);
	struct tls_resume_cache *rc = resume_cache(ssl);
	struct tls_resume *e;
	SSL_SESSION *copy;

	if (c == NULL || c->c_resume == NULL || rc == NULL ||
	    !SSL_SESSION_is_resumable(sess))
		return 0;
	if ((copy = SSL_SESSION_dup(sess)) == NULL) {
		ERR_clear_error();
		return 0;
	}
	if ((e = resume_find(rc, c->c_resume)) == NULL &&
	    (e = resume_slot(rc, c->c_resume)) == NULL) {
		SSL_SESSION_free(copy);
		return 0;
	}
	SSL_SESSION_free(e->rs_sess);
	e->rs_sess = copy;
	e->rs_used = ++rc->rc_clock;
	return 0;
}

/* Gives a client context its resumption cache. */
int
tls__resume_attach(SSL_CTX *ssl)
{
	struct tls_resume_cache *rc;

	/* Contexts are made on the loop's thread only. */
	if (tls_resume_idx < 0 &&
	    (tls_resume_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
	                                               resume_cache_free)) < 0)
		return -ENOMEM;
	if ((rc = calloc(1, sizeof(*rc))) == NULL)
		return -ENOMEM;
	rc->rc_max = TLS_RESUME_MAX;
	if (!SSL_CTX_set_ex_data(ssl, tls_resume_idx, rc)) {
		free(rc);
		return -ENOMEM;
	}
	/* The client offers tickets; we store them, OpenSSL does not. */
	SSL_CTX_clear_options(ssl, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(
	    ssl, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ssl, resume_new_session);
	return 0;
}

int
tls_conn_resume(struct tls_conn *c, const char *key)
{
	struct tls_resume_cache *rc;
	struct tls_resume *e;

	if (SSL_is_server(c->c_ssl) || key == NULL || c->c_resume != NULL)
		return -EINVAL;
	if ((c->c_resume = strdup(key)) == NULL)
		return -ENOMEM;
	if ((rc = resume_cache(c->c_ssl)) == NULL ||
	    (e = resume_find(rc, key)) == NULL || e->rs_sess == NULL)
		return 0;
	e->rs_used = ++rc->rc_clock;
	if (!SSL_set_session(c->c_ssl, e->rs_sess)) {
		ERR_clear_error();
		return 0;
	}
	return 1;
}

int
tls_ctx_set_ticket_key(struct tls_ctx *ctx, const uint8_t *key, size_t len,
                       unsigned lifetime)
{
	if (!ctx->tc_server || len != TLS_TICKET_KEY_LEN || lifetime == 0)
		return -EINVAL;
	if (SSL_CTX_set_tlsext_ticket_keys(ctx->tc_ssl, (void *)(uintptr_t)key,
	                                   (long)len) != 1) {
		ERR_clear_error();
		return NCG_ETLS;
	}
	SSL_CTX_clear_options(ctx->tc_ssl, SSL_OP_NO_TICKET);
	SSL_CTX_set_timeout(ctx->tc_ssl, (long)lifetime);
	return 0;
}

int
tls_conn_issue_ticket(struct tls_conn *c, const uint8_t *appdata, size_t len)
{
	SSL_SESSION *sess;

	if (!c->c_done || !SSL_is_server(c->c_ssl) ||
	    (SSL_get_options(c->c_ssl) & SSL_OP_NO_TICKET) != 0)
		return -EINVAL;
	/* TLS 1.2 sends its one ticket inside the handshake, or never. */
	if (SSL_version(c->c_ssl) != TLS1_3_VERSION)
		return -ENOTSUP;
	if ((sess = SSL_get0_session(c->c_ssl)) == NULL ||
	    !SSL_SESSION_set1_ticket_appdata(sess, appdata, len) ||
	    !SSL_new_session_ticket(c->c_ssl) ||
	    SSL_do_handshake(c->c_ssl) != 1) {
		ERR_clear_error();
		return -ENOMEM;
	}
	return 0;
}

int
tls_conn_resumed(const struct tls_conn *c)
{
	return c->c_done && SSL_session_reused(c->c_ssl);
}

int
tls_conn_ticket_appdata(const struct tls_conn *c, const uint8_t **data,
                        size_t *len)
{
	SSL_SESSION *sess;
	void *p = NULL;
	size_t n = 0;

	if (!tls_conn_resumed(c) || !SSL_is_server(c->c_ssl) ||
	    (sess = SSL_get0_session(c->c_ssl)) == NULL ||
	    SSL_SESSION_get0_ticket_appdata(sess, &p, &n) != 1 || n == 0)
		return -ENOENT;
	*data = p;
	*len = n;
	return 0;
}
