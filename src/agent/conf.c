/*
 * ncgrpc-agent configuration: a hand-written lexer and recursive-descent
 * parser for the Junos-style outbound-https syntax, and its validator.
 *
 * Grammar (every statement ends with ';' or is a block; values are words or
 * double-quoted strings; "inactive:" before a statement parses it and then
 * drops it, as Junos does with deactivated configuration):
 *
 *   file     = { top }
 *   top      = "system" "{" { "services" "{" { ohttps } "}" } "}"
 *            | ohttps
 *            | "agent" "{" { agent-st } "}"
 *   ohttps   = "outbound-https" "{" { client } "}"
 *   client   = "client" VALUE "{" { client-st } "}"
 *   client-st = "device-id" VALUE ";"
 *            | "secret" VALUE ";"
 *            | "reconnect-strategy" ( "in-order" | "sticky" ) ";"
 *            | "waittime" NUMBER ";"
 *            | "address" VALUE ( ";" | "{" { address-st } "}" )
 *   address-st = "port" NUMBER ";"
 *            | "trusted-cert" VALUE ";"
 *            | "trusted-cert-file" VALUE ";"
 *   agent-st = ( "user" | "netconf-command" | "shell" | "log-file" )
 *              VALUE ";"
 *            | ( "keepalive-interval" | "keepalive-timeout"
 *              | "tcp-keepalive-idle" | "tcp-keepalive-interval"
 *              | "tcp-keepalive-count" | "keepalive-interval-max"
 *              | "dead-peer-timeout" | "session-limit" ) NUMBER ";"
 *
 * A statement given twice keeps the last value, as a Junos "load merge"
 * would.  The parser stops at the first error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/fileio.h"
#include "common/utf8.h"
#include "conf.h"
#include "junos9.h"

#define CONF_UNNAMED "<config>"

enum tok { T_EOF, T_WORD, T_STRING, T_LBRACE, T_RBRACE, T_SEMI };

struct parser {
	const char *p_name;
	const char *p_buf;
	size_t p_len;
	size_t p_off;
	struct conf_pos p_pos;  /* position of p_buf[p_off] */
	enum tok p_tok;         /* the current token */
	struct conf_pos p_tpos; /* where it starts */
	char *p_text;           /* its text, NUL-terminated */
	size_t p_textlen;
	unsigned p_depth;
	int p_rc;           /* first error, or 0 */
	int p_after_secret; /* last statement was "secret" */
	char *p_err;
	size_t p_errlen;
};

/*
 * A kind of block: its keywords and the function that parses one statement
 * into a target of the block's type.  For "inactive:" statements the
 * target is a zeroed scratch object, made and freed by b_scratch and
 * b_scratch_free, so the statement is checked but has no effect.
 */
struct block {
	const char *b_name;
	const char *const *b_kw; /* NULL-terminated */
	int (*b_stmt)(struct parser *, int, void *);
	void *(*b_scratch)(void);
	void (*b_scratch_free)(void *);
};

static int parse_body(struct parser *, const struct block *, void *, int,
                      struct conf_pos);

/*
 * Error text.
 */

static void vfmterr(char *, size_t, const char *, const struct conf_pos *,
                    const char *, va_list)
    __attribute__((format(printf, 5, 0)));

static void
vfmterr(char *err, size_t errlen, const char *name, const struct conf_pos *pos,
        const char *fmt, va_list ap)
{
	int n;

	if (err == NULL || errlen == 0)
		return;
	if (name == NULL)
		name = CONF_UNNAMED;
	if (pos != NULL)
		n = snprintf(err, errlen, "%s:%u:%u: ", name, pos->po_line,
		             pos->po_col);
	else
		n = snprintf(err, errlen, "%s: ", name);
	if (n < 0) {
		err[0] = '\0';
		return;
	}
	if ((size_t)n >= errlen)
		return;
	(void)vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

static void fmterr(char *, size_t, const char *, const struct conf_pos *,
                   const char *, ...) __attribute__((format(printf, 5, 6)));

static void
fmterr(char *err, size_t errlen, const char *name, const struct conf_pos *pos,
       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfmterr(err, errlen, name, pos, fmt, ap);
	va_end(ap);
}

static int syntax(struct parser *, struct conf_pos, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error of the parse; always returns -1. */
static int
syntax(struct parser *p, struct conf_pos pos, const char *fmt, ...)
{
	va_list ap;

	if (p->p_rc != 0)
		return -1;
	p->p_rc = -EINVAL;
	va_start(ap, fmt);
	vfmterr(p->p_err, p->p_errlen, p->p_name, &pos, fmt, ap);
	va_end(ap);
	return -1;
}

static int
nomem(struct parser *p)
{
	if (p->p_rc == 0) {
		p->p_rc = -ENOMEM;
		fmterr(p->p_err, p->p_errlen, p->p_name, &p->p_tpos,
		       "out of memory");
	}
	return -1;
}

/*
 * Only text shaped like a keyword is ever quoted back in a message, so that
 * a secret that lands where a keyword was expected is not echoed.
 */
static int
keyword_shaped(const char *s)
{
	size_t i;

	if (s[0] < 'a' || s[0] > 'z')
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= 32)
			return 0;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	}
	return 1;
}

/* Describes the current token without quoting its text. */
static const char *
tok_kind(const struct parser *p)
{
	switch (p->p_tok) {
	case T_EOF:
		return "end of file";
	case T_WORD:
		return "a word";
	case T_STRING:
		return "a quoted string";
	case T_LBRACE:
		return "'{'";
	case T_RBRACE:
		return "'}'";
	case T_SEMI:
		return "';'";
	}
	return "?";
}

/* Printable ASCII names are echoed; anything else is described. */
static const char *
safe(const char *s)
{
	size_t i;

	if (s == NULL)
		return "(none)";
	for (i = 0; s[i] != '\0'; i++)
		if (i >= 200 || s[i] < 0x20 || s[i] > 0x7e || s[i] == '\'')
			return "(unprintable)";
	return s;
}

/*
 * Lexer.
 */

static int
at_end(const struct parser *p)
{
	return p->p_off >= p->p_len;
}

static void
advance(struct parser *p)
{
	if (p->p_buf[p->p_off] == '\n') {
		p->p_pos.po_line++;
		p->p_pos.po_col = 1;
	} else
		p->p_pos.po_col++;
	p->p_off++;
}

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	       c == '\v';
}

static int
is_delim(char c)
{
	return is_space(c) || c == '{' || c == '}' || c == ';' || c == '"' ||
	       c == '\0';
}

static int
append(struct parser *p, char c)
{
	if (p->p_textlen >= CONF_MAX_TOKEN)
		return syntax(p, p->p_tpos, "token longer than %d bytes",
		              CONF_MAX_TOKEN);
	p->p_text[p->p_textlen++] = c;
	return 0;
}

/*
 * Skips blanks and comments.  "#" (and so "## SECRET-DATA") runs to the end
 * of the line and "/ *...* /" may span lines, but only where a token could
 * start: inside a word they are part of the word.
 */
static int
skip_blank(struct parser *p)
{
	struct conf_pos open;

	while (!at_end(p)) {
		char c = p->p_buf[p->p_off];

		if (is_space(c)) {
			advance(p);
		} else if (c == '#') {
			while (!at_end(p) && p->p_buf[p->p_off] != '\n')
				advance(p);
		} else if (c == '/' && p->p_off + 1 < p->p_len &&
		           p->p_buf[p->p_off + 1] == '*') {
			open = p->p_pos;
			advance(p);
			advance(p);
			for (;;) {
				if (at_end(p))
					return syntax(p, open,
					              "unterminated comment; "
					              "expected '*/'");
				if (p->p_buf[p->p_off] == '*' &&
				    p->p_off + 1 < p->p_len &&
				    p->p_buf[p->p_off + 1] == '/') {
					advance(p);
					advance(p);
					break;
				}
				advance(p);
			}
		} else
			break;
	}
	return 0;
}

/*
 * A quoted string, Junos style: backslash escapes the next character, and
 * \n, \t and \r stand for newline, tab and carriage return (trusted-cert
 * holds PEM text written on one line with \n).  Literal newlines are kept.
 */
static int
lex_string(struct parser *p)
{
	char c;

	advance(p);
	for (;;) {
		if (at_end(p))
			return syntax(p, p->p_tpos,
			              "unterminated string; expected '\"'");
		c = p->p_buf[p->p_off];
		if (c == '"') {
			advance(p);
			break;
		}
		if (c == '\\') {
			advance(p);
			if (at_end(p))
				return syntax(p, p->p_tpos,
				              "unterminated string; "
				              "expected '\"'");
			c = p->p_buf[p->p_off];
			if (c == 'n')
				c = '\n';
			else if (c == 't')
				c = '\t';
			else if (c == 'r')
				c = '\r';
		}
		if (c == '\0')
			return syntax(p, p->p_pos, "NUL byte in input");
		if (append(p, c) != 0)
			return -1;
		advance(p);
	}
	p->p_tok = T_STRING;
	return 0;
}

/* Reads the next token into p_tok, p_tpos and p_text.  0 or -1. */
static int
lex(struct parser *p)
{
	char c;

	p->p_textlen = 0;
	p->p_text[0] = '\0';
	if (skip_blank(p) != 0)
		return -1;
	p->p_tpos = p->p_pos;
	if (at_end(p)) {
		p->p_tok = T_EOF;
		return 0;
	}
	c = p->p_buf[p->p_off];
	switch (c) {
	case '\0':
		return syntax(p, p->p_pos, "NUL byte in input");
	case '{':
		p->p_tok = T_LBRACE;
		advance(p);
		return 0;
	case '}':
		p->p_tok = T_RBRACE;
		advance(p);
		return 0;
	case ';':
		p->p_tok = T_SEMI;
		advance(p);
		return 0;
	case '"':
		if (lex_string(p) != 0)
			return -1;
		break;
	default:
		while (!at_end(p) && !is_delim(p->p_buf[p->p_off])) {
			if (append(p, p->p_buf[p->p_off]) != 0)
				return -1;
			advance(p);
		}
		p->p_tok = T_WORD;
		break;
	}
	p->p_text[p->p_textlen] = '\0';
	return 0;
}

/*
 * Parser helpers.
 */

/* Reads the value of statement kw: a word or a quoted string. */
static int
value(struct parser *p, const char *kw)
{
	if (lex(p) != 0)
		return -1;
	if (p->p_tok == T_WORD || p->p_tok == T_STRING)
		return 0;
	return syntax(p, p->p_tpos, "expected a value after '%s', found %s", kw,
	              tok_kind(p));
}

static int
end_stmt(struct parser *p, const char *kw)
{
	if (lex(p) != 0)
		return -1;
	if (p->p_tok == T_SEMI)
		return 0;
	return syntax(p, p->p_tpos,
	              "expected ';' to end the '%s' statement, found %s", kw,
	              tok_kind(p));
}

static int
open_block(struct parser *p, const char *kw)
{
	if (lex(p) != 0)
		return -1;
	if (p->p_tok == T_LBRACE)
		return 0;
	return syntax(p, p->p_tpos, "expected '{' after '%s', found %s", kw,
	              tok_kind(p));
}

/* Replaces *dst with a copy of the current token's text. */
static int
take_str(struct parser *p, char **dst)
{
	char *s;

	if ((s = strndup(p->p_text, p->p_textlen)) == NULL)
		return nomem(p);
	free(*dst);
	*dst = s;
	return 0;
}

/* "kw VALUE ;" into *dst. */
static int
str_stmt(struct parser *p, const char *kw, char **dst)
{
	char *s = NULL;

	if (value(p, kw) != 0 || take_str(p, &s) != 0)
		return -1;
	if (end_stmt(p, kw) != 0) {
		free(s);
		return -1;
	}
	free(*dst);
	*dst = s;
	return 0;
}

/* Parses a decimal number: digits only, no sign, no blanks. */
static int
parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;
	size_t i;

	if (s[0] == '\0')
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (max - (unsigned long)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* "kw NUMBER ;" with min <= NUMBER <= max, into *dst. */
static int
num_stmt(struct parser *p, const char *kw, const char *unit, unsigned min,
         unsigned max, unsigned *dst)
{
	unsigned long v;
	struct conf_pos vpos;

	if (value(p, kw) != 0)
		return -1;
	vpos = p->p_tpos;
	if (parse_uint(p->p_text, max, &v) != 0 || v < min)
		return syntax(p, vpos,
		              "bad %s value; expected %s from %u to %u", kw,
		              unit, min, max);
	if (end_stmt(p, kw) != 0)
		return -1;
	*dst = (unsigned)v;
	return 0;
}

static void
secret_clear(char **s, size_t *len)
{
	if (*s != NULL) {
		OPENSSL_cleanse(*s, *len);
		free(*s);
	}
	*s = NULL;
	*len = 0;
}

/*
 * Freeing.
 */

static void
address_clear(struct conf_address *ad)
{
	free(ad->ad_host);
	free(ad->ad_trusted_cert);
	free(ad->ad_trusted_cert_file);
	memset(ad, 0, sizeof(*ad));
}

static void
client_clear(struct conf_client *cl)
{
	size_t i;

	free(cl->cc_name);
	free(cl->cc_device_id);
	secret_clear(&cl->cc_secret, &cl->cc_secret_len);
	for (i = 0; i < cl->cc_naddrs; i++)
		address_clear(&cl->cc_addrs[i]);
	free(cl->cc_addrs);
	memset(cl, 0, sizeof(*cl));
}

static void
agent_clear(struct conf_agent *ag)
{
	free(ag->ag_user);
	free(ag->ag_netconf_command);
	free(ag->ag_shell);
	free(ag->ag_log_file);
	memset(ag, 0, sizeof(*ag));
}

void
conf_free(struct conf *cf)
{
	size_t i;

	if (cf == NULL)
		return;
	for (i = 0; i < cf->cf_nclients; i++)
		client_clear(&cf->cf_clients[i]);
	free(cf->cf_clients);
	agent_clear(&cf->cf_agent);
	free(cf->cf_name);
	free(cf);
}

static void *
scratch_conf(void)
{
	return calloc(1, sizeof(struct conf));
}

static void
scratch_conf_free(void *v)
{
	conf_free(v);
}

static void *
scratch_client(void)
{
	return calloc(1, sizeof(struct conf_client));
}

static void
scratch_client_free(void *v)
{
	client_clear(v);
	free(v);
}

static void *
scratch_address(void)
{
	return calloc(1, sizeof(struct conf_address));
}

static void
scratch_address_free(void *v)
{
	address_clear(v);
	free(v);
}

static void *
scratch_agent(void)
{
	return calloc(1, sizeof(struct conf_agent));
}

static void
scratch_agent_free(void *v)
{
	agent_clear(v);
	free(v);
}

/*
 * Blocks, innermost first.
 */

enum { KW_PORT, KW_TRUSTED_CERT, KW_TRUSTED_CERT_FILE };
static const char *const address_kw[] = {"port", "trusted-cert",
                                         "trusted-cert-file", NULL};

static int
address_stmt(struct parser *p, int kw, void *target)
{
	struct conf_address *ad = target;
	unsigned port;

	switch (kw) {
	case KW_PORT:
		if (num_stmt(p, "port", "a port number", 1, 65535, &port) != 0)
			return -1;
		ad->ad_port = (uint16_t)port;
		return 0;
	case KW_TRUSTED_CERT:
		return str_stmt(p, "trusted-cert", &ad->ad_trusted_cert);
	case KW_TRUSTED_CERT_FILE:
		return str_stmt(p, "trusted-cert-file",
		                &ad->ad_trusted_cert_file);
	}
	return -1;
}

static const struct block address_block = {
    "address", address_kw, address_stmt, scratch_address, scratch_address_free};

static int
client_secret(struct parser *p, struct conf_client *cl)
{
	char *s = NULL;
	size_t len = 0;
	int rc;

	if (value(p, "secret") != 0)
		return -1;
	if (junos9_is_encoded(p->p_text)) {
		rc = junos9_decode(p->p_text, &s, &len);
		if (rc == -ENOMEM)
			return nomem(p);
		if (rc != 0)
			return syntax(p, p->p_tpos, "bad secret: %s",
			              junos9_strerror(rc));
	} else {
		if ((s = strndup(p->p_text, p->p_textlen)) == NULL)
			return nomem(p);
		len = p->p_textlen;
	}
	/* The token buffer is cleared when the parse ends; the secret also
	 * lives there until the next token overwrites it. */
	OPENSSL_cleanse(p->p_text, p->p_textlen);
	if (end_stmt(p, "secret") != 0) {
		secret_clear(&s, &len);
		return -1;
	}
	secret_clear(&cl->cc_secret, &cl->cc_secret_len);
	cl->cc_secret = s;
	cl->cc_secret_len = len;
	p->p_after_secret = 1;
	return 0;
}

static int
client_address(struct parser *p, struct conf_client *cl)
{
	struct conf_address ad, *n;

	memset(&ad, 0, sizeof(ad));
	ad.ad_port = CONF_DEFAULT_PORT;
	ad.ad_pos = p->p_tpos;
	if (value(p, "address") != 0 || take_str(p, &ad.ad_host) != 0)
		goto fail;
	if (lex(p) != 0)
		goto fail;
	if (p->p_tok == T_LBRACE) {
		if (parse_body(p, &address_block, &ad, 0, p->p_tpos) != 0)
			goto fail;
	} else if (p->p_tok != T_SEMI) {
		syntax(p, p->p_tpos,
		       "expected '{' or ';' after the address, found %s",
		       tok_kind(p));
		goto fail;
	}
	n = reallocarray(cl->cc_addrs, cl->cc_naddrs + 1, sizeof(*n));
	if (n == NULL) {
		nomem(p);
		goto fail;
	}
	cl->cc_addrs = n;
	cl->cc_addrs[cl->cc_naddrs++] = ad;
	return 0;

fail:
	address_clear(&ad);
	return -1;
}

enum { KW_DEVICE_ID, KW_SECRET, KW_RECONNECT, KW_WAITTIME, KW_ADDRESS };
static const char *const client_kw[] = {
    "device-id", "secret", "reconnect-strategy", "waittime", "address", NULL};

static int
client_stmt(struct parser *p, int kw, void *target)
{
	struct conf_client *cl = target;
	struct conf_pos vpos;
	enum conf_reconnect r;

	switch (kw) {
	case KW_DEVICE_ID:
		return str_stmt(p, "device-id", &cl->cc_device_id);
	case KW_SECRET:
		return client_secret(p, cl);
	case KW_RECONNECT:
		if (value(p, "reconnect-strategy") != 0)
			return -1;
		vpos = p->p_tpos;
		if (strcmp(p->p_text, "in-order") == 0)
			r = CONF_RECONNECT_IN_ORDER;
		else if (strcmp(p->p_text, "sticky") == 0)
			r = CONF_RECONNECT_STICKY;
		else
			return syntax(p, vpos,
			              "bad reconnect-strategy; expected "
			              "in-order or sticky");
		if (end_stmt(p, "reconnect-strategy") != 0)
			return -1;
		cl->cc_reconnect = r;
		return 0;
	case KW_WAITTIME:
		return num_stmt(p, "waittime", "a number of seconds",
		                CONF_MIN_WAITTIME, CONF_MAX_WAITTIME,
		                &cl->cc_waittime);
	case KW_ADDRESS:
		return client_address(p, cl);
	}
	return -1;
}

static const struct block client_block = {"client", client_kw, client_stmt,
                                          scratch_client, scratch_client_free};

static const char *const ohttps_kw[] = {"client", NULL};

static int
ohttps_stmt(struct parser *p, int kw, void *target)
{
	struct conf *cf = target;
	struct conf_client cl, *n;

	(void)kw;
	memset(&cl, 0, sizeof(cl));
	cl.cc_reconnect = CONF_RECONNECT_IN_ORDER;
	cl.cc_waittime = CONF_DEFAULT_WAITTIME;
	cl.cc_pos = p->p_tpos;
	if (value(p, "client") != 0 || take_str(p, &cl.cc_name) != 0)
		goto fail;
	if (open_block(p, "client") != 0)
		goto fail;
	if (parse_body(p, &client_block, &cl, 0, p->p_tpos) != 0)
		goto fail;
	n = reallocarray(cf->cf_clients, cf->cf_nclients + 1, sizeof(*n));
	if (n == NULL) {
		nomem(p);
		goto fail;
	}
	cf->cf_clients = n;
	cf->cf_clients[cf->cf_nclients++] = cl;
	return 0;

fail:
	client_clear(&cl);
	return -1;
}

static const struct block ohttps_block = {
    "outbound-https", ohttps_kw, ohttps_stmt, scratch_conf, scratch_conf_free};

static const char *const services_kw[] = {"outbound-https", NULL};

static int
services_stmt(struct parser *p, int kw, void *target)
{
	(void)kw;
	if (open_block(p, "outbound-https") != 0)
		return -1;
	return parse_body(p, &ohttps_block, target, 0, p->p_tpos);
}

static const struct block services_block = {
    "services", services_kw, services_stmt, scratch_conf, scratch_conf_free};

static const char *const system_kw[] = {"services", NULL};

static int
system_stmt(struct parser *p, int kw, void *target)
{
	(void)kw;
	if (open_block(p, "services") != 0)
		return -1;
	return parse_body(p, &services_block, target, 0, p->p_tpos);
}

static const struct block system_block = {"system", system_kw, system_stmt,
                                          scratch_conf, scratch_conf_free};

enum {
	KW_USER,
	KW_NETCONF_COMMAND,
	KW_SHELL,
	KW_LOG_FILE,
	KW_KA_INTERVAL,
	KW_KA_TIMEOUT,
	KW_TCP_IDLE,
	KW_TCP_INTERVAL,
	KW_TCP_COUNT,
	KW_KA_INTERVAL_MAX,
	KW_DEAD_PEER,
	KW_SESSION_LIMIT
};
static const char *const agent_kw[] = {"user",
                                       "netconf-command",
                                       "shell",
                                       "log-file",
                                       "keepalive-interval",
                                       "keepalive-timeout",
                                       "tcp-keepalive-idle",
                                       "tcp-keepalive-interval",
                                       "tcp-keepalive-count",
                                       "keepalive-interval-max",
                                       "dead-peer-timeout",
                                       "session-limit",
                                       NULL};

static int
agent_stmt(struct parser *p, int kw, void *target)
{
	struct conf_agent *ag = target;

	switch (kw) {
	case KW_USER:
		return str_stmt(p, "user", &ag->ag_user);
	case KW_NETCONF_COMMAND:
		return str_stmt(p, "netconf-command", &ag->ag_netconf_command);
	case KW_SHELL:
		return str_stmt(p, "shell", &ag->ag_shell);
	case KW_LOG_FILE:
		return str_stmt(p, "log-file", &ag->ag_log_file);
	case KW_KA_INTERVAL:
		return num_stmt(
		    p, "keepalive-interval", "a number of seconds (0 disables)",
		    0, CONF_MAX_KEEPALIVE_INTERVAL, &ag->ag_keepalive_interval);
	case KW_KA_TIMEOUT:
		return num_stmt(p, "keepalive-timeout", "a number of seconds",
		                1, CONF_MAX_KEEPALIVE_TIMEOUT,
		                &ag->ag_keepalive_timeout);
	case KW_TCP_IDLE:
		return num_stmt(p, "tcp-keepalive-idle", "a number of seconds",
		                1, CONF_MAX_TCP_KEEPIDLE, &ag->ag_tcp_keepidle);
	case KW_TCP_INTERVAL:
		return num_stmt(p, "tcp-keepalive-interval",
		                "a number of seconds", 1,
		                CONF_MAX_TCP_KEEPINTVL, &ag->ag_tcp_keepintvl);
	case KW_TCP_COUNT:
		return num_stmt(p, "tcp-keepalive-count", "a probe count", 1,
		                CONF_MAX_TCP_KEEPCNT, &ag->ag_tcp_keepcnt);
	case KW_KA_INTERVAL_MAX:
		return num_stmt(p, "keepalive-interval-max",
		                "a number of seconds", 1,
		                CONF_MAX_KEEPALIVE_INTERVAL,
		                &ag->ag_keepalive_interval_max);
	case KW_DEAD_PEER:
		return num_stmt(
		    p, "dead-peer-timeout", "a number of seconds (0 disables)",
		    0, CONF_MAX_DEAD_PEER_TIMEOUT, &ag->ag_dead_peer_timeout);
	case KW_SESSION_LIMIT:
		return num_stmt(p, "session-limit", "a number of sessions", 1,
		                CONF_MAX_SESSION_LIMIT, &ag->ag_session_limit);
	}
	return -1;
}

static const struct block agent_block = {"agent", agent_kw, agent_stmt,
                                         scratch_agent, scratch_agent_free};

enum { KW_SYSTEM, KW_OHTTPS, KW_AGENT };
static const char *const top_kw[] = {"system", "outbound-https", "agent", NULL};

static int
top_stmt(struct parser *p, int kw, void *target)
{
	struct conf *cf = target;

	switch (kw) {
	case KW_SYSTEM:
		if (open_block(p, "system") != 0)
			return -1;
		return parse_body(p, &system_block, cf, 0, p->p_tpos);
	case KW_OHTTPS:
		if (open_block(p, "outbound-https") != 0)
			return -1;
		return parse_body(p, &ohttps_block, cf, 0, p->p_tpos);
	case KW_AGENT:
		if (open_block(p, "agent") != 0)
			return -1;
		return parse_body(p, &agent_block, &cf->cf_agent, 0, p->p_tpos);
	}
	return -1;
}

static const struct block top_block = {"top level", top_kw, top_stmt,
                                       scratch_conf, scratch_conf_free};

/*
 * The body of a block.
 */

static int
keyword_index(const struct block *b, const char *s)
{
	int i;

	for (i = 0; b->b_kw[i] != NULL; i++)
		if (strcmp(b->b_kw[i], s) == 0)
			return i;
	return -1;
}

static int
unexpected(struct parser *p, const struct block *b, int toplevel)
{
	char list[256], what[64];
	size_t off = 0;
	int i, n;

	list[0] = '\0';
	for (i = 0; b->b_kw[i] != NULL; i++) {
		n = snprintf(list + off, sizeof(list) - off, "%s%s",
		             i > 0 ? ", " : "", b->b_kw[i]);
		if (n < 0 || (size_t)n >= sizeof(list) - off)
			break;
		off += (size_t)n;
	}
	if (p->p_tok == T_WORD && !p->p_after_secret &&
	    keyword_shaped(p->p_text))
		(void)snprintf(what, sizeof(what), "unknown statement '%s'",
		               p->p_text);
	else
		(void)snprintf(what, sizeof(what), "found %s", tok_kind(p));
	if (toplevel)
		return syntax(p, p->p_tpos, "%s; expected one of: %s", what,
		              list);
	return syntax(p, p->p_tpos, "%s in '%s'; expected one of: %s, or '}'",
	              what, b->b_name, list);
}

/*
 * Parses statements of block b into target until the '}' matching the '{'
 * at open, or until the end of input at the top level.
 */
static int
parse_body(struct parser *p, const struct block *b, void *target, int toplevel,
           struct conf_pos open)
{
	void *scratch;
	int kw, inactive, rc;

	/* The grammar nests only five deep; the limit keeps a hostile file
	 * from exhausting the stack should the grammar ever grow. */
	if (!toplevel && ++p->p_depth > CONF_MAX_DEPTH)
		return syntax(p, open, "blocks nested deeper than %d",
		              CONF_MAX_DEPTH);
	for (;;) {
		if (lex(p) != 0)
			return -1;
		if (p->p_tok == T_EOF) {
			if (toplevel)
				break;
			return syntax(p, p->p_tpos,
			              "unexpected end of file; expected '}' "
			              "closing '%s' opened at %u:%u",
			              b->b_name, open.po_line, open.po_col);
		}
		if (p->p_tok == T_RBRACE) {
			if (toplevel)
				return syntax(p, p->p_tpos,
				              "unexpected '}' with no open "
				              "block");
			break;
		}
		inactive = 0;
		if (p->p_tok == T_WORD && strcmp(p->p_text, "inactive:") == 0) {
			inactive = 1;
			if (lex(p) != 0)
				return -1;
		}
		kw = p->p_tok == T_WORD ? keyword_index(b, p->p_text) : -1;
		if (kw < 0)
			return unexpected(p, b, toplevel);
		p->p_after_secret = 0;
		if (inactive) {
			if ((scratch = b->b_scratch()) == NULL)
				return nomem(p);
			rc = b->b_stmt(p, kw, scratch);
			b->b_scratch_free(scratch);
		} else
			rc = b->b_stmt(p, kw, target);
		if (rc != 0)
			return -1;
	}
	if (!toplevel)
		p->p_depth--;
	return 0;
}

/*
 * Entry points.
 */

static int
agent_defaults(struct conf_agent *ag)
{
	ag->ag_log_file = strdup(CONF_DEFAULT_LOG_FILE);
	ag->ag_netconf_command = strdup(CONF_DEFAULT_NETCONF_COMMAND);
	if (ag->ag_log_file == NULL || ag->ag_netconf_command == NULL)
		return -ENOMEM;
	ag->ag_keepalive_interval = CONF_DEFAULT_KEEPALIVE_INTERVAL;
	ag->ag_keepalive_timeout = CONF_DEFAULT_KEEPALIVE_TIMEOUT;
	ag->ag_tcp_keepidle = CONF_DEFAULT_TCP_KEEPIDLE;
	ag->ag_tcp_keepintvl = CONF_DEFAULT_TCP_KEEPINTVL;
	ag->ag_tcp_keepcnt = CONF_DEFAULT_TCP_KEEPCNT;
	ag->ag_keepalive_interval_max = CONF_DEFAULT_KEEPALIVE_INTERVAL_MAX;
	ag->ag_dead_peer_timeout = CONF_DEFAULT_DEAD_PEER_TIMEOUT;
	ag->ag_session_limit = CONF_DEFAULT_SESSION_LIMIT;
	return 0;
}

int
conf_parse_string(const char *name, const char *text, size_t len,
                  struct conf **out, char *err, size_t errlen)
{
	struct parser p;
	struct conf *cf;
	struct conf_pos start = {1, 1};
	int rc;

	if (name == NULL)
		name = CONF_UNNAMED;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (len > CONF_MAX_FILE) {
		fmterr(err, errlen, name, NULL, "larger than %d bytes; refused",
		       CONF_MAX_FILE);
		return -EFBIG;
	}
	memset(&p, 0, sizeof(p));
	p.p_name = name;
	p.p_buf = text;
	p.p_len = len;
	p.p_pos = start;
	p.p_tpos = start;
	p.p_err = err;
	p.p_errlen = errlen;
	cf = calloc(1, sizeof(*cf));
	p.p_text = malloc(CONF_MAX_TOKEN + 1);
	if (cf == NULL || p.p_text == NULL ||
	    (cf->cf_name = strdup(name)) == NULL ||
	    agent_defaults(&cf->cf_agent) != 0) {
		nomem(&p);
		goto done;
	}
	(void)parse_body(&p, &top_block, cf, 1, start);

done:
	/* Secrets pass through the token buffer. */
	if (p.p_text != NULL) {
		OPENSSL_cleanse(p.p_text, CONF_MAX_TOKEN + 1);
		free(p.p_text);
	}
	rc = p.p_rc;
	if (rc != 0) {
		conf_free(cf);
		return rc;
	}
	*out = cf;
	return 0;
}

int
conf_parse_file(const char *path, struct conf **out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int fd, rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		rc = -errno;
		fmterr(err, errlen, path, NULL, "cannot open: %s",
		       strerror(-rc));
		return rc;
	}
	/* The file holds secrets: no copy is left in freed memory. */
	rc = fileio_read_fd(fd, CONF_MAX_FILE, 0, FILEIO_SECRET, &buf, &len);
	(void)close(fd);
	if (rc == -EFBIG) {
		fmterr(err, errlen, path, NULL, "larger than %d bytes; refused",
		       CONF_MAX_FILE);
		return rc;
	}
	if (rc != 0) {
		fmterr(err, errlen, path, NULL, "cannot read: %s",
		       strerror(-rc));
		return rc;
	}
	rc = conf_parse_string(path, buf, len, out, err, errlen);
	fileio_free(buf, len, FILEIO_SECRET);
	return rc;
}

/*
 * Validation.
 */

static int verr(const struct conf *, char *, size_t, const struct conf_pos *,
                const char *, ...) __attribute__((format(printf, 5, 6)));

static int
verr(const struct conf *cf, char *err, size_t errlen,
     const struct conf_pos *pos, const char *fmt, ...)
{
	va_list ap;

	/* A hand-built conf has no positions. */
	if (pos != NULL && pos->po_line == 0)
		pos = NULL;
	va_start(ap, fmt);
	vfmterr(err, errlen, cf->cf_name, pos, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A protobuf string: valid UTF-8 without control characters. */
static int
text_ok(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return utf8_valid((const uint8_t *)s, len);
}

static int
host_ok(const char *h)
{
	unsigned char a[16];
	size_t len = strlen(h), label = 0, i;

	if (inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1)
		return 1;
	if (len == 0 || len > 253)
		return 0;
	for (i = 0; i < len; i++) {
		char c = h[i];

		if (c == '.') {
			/* Empty labels are wrong, except for a final dot. */
			if (label == 0 || h[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
		if (c == '-' && label == 0)
			return 0;
		if (++label > 63)
			return 0;
	}
	if (label != 0 && h[len - 1] == '-')
		return 0;
	/* An all-numeric last label is a mistyped IPv4 address, not a
	 * name (RFC 3696 section 2). */
	for (i = len - (label == 0 ? 1 : 0); i > 0 && h[i - 1] != '.'; i--)
		if (h[i - 1] < '0' || h[i - 1] > '9')
			return 1;
	return 0;
}

/*
 * True if s holds at least one BEGIN/END CERTIFICATE pair, every pair is
 * closed, and nothing but base64 and blanks lies between the markers.
 * Whether the certificates decode is left to the TLS layer.
 */
static int
pem_ok(const char *s)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	static const char end[] = "-----END CERTIFICATE-----";
	const char *b, *e, *q;
	int n = 0;

	while ((b = strstr(s, begin)) != NULL) {
		b += sizeof(begin) - 1;
		if ((e = strstr(b, end)) == NULL)
			return 0;
		for (q = b; q < e; q++) {
			char c = *q;

			if (!((c >= 'A' && c <= 'Z') ||
			      (c >= 'a' && c <= 'z') ||
			      (c >= '0' && c <= '9') || c == '+' || c == '/' ||
			      c == '=' || is_space(c)))
				return 0;
		}
		if (e == b)
			return 0;
		s = e + sizeof(end) - 1;
		n++;
	}
	return n > 0;
}

static int
validate_address(const struct conf *cf, const struct conf_client *cl, size_t i,
                 char *err, size_t errlen)
{
	const struct conf_address *ad = &cl->cc_addrs[i];
	const char *cn = safe(cl->cc_name), *hn = safe(ad->ad_host);
	size_t j;

	if (ad->ad_host == NULL || !host_ok(ad->ad_host))
		return verr(cf, err, errlen, &ad->ad_pos,
		            "client '%s': address '%s' is not an IP address "
		            "or host name",
		            cn, hn);
	if (ad->ad_port == 0)
		return verr(cf, err, errlen, &ad->ad_pos,
		            "client '%s': address '%s': port 0; expected 1 "
		            "to 65535",
		            cn, hn);
	for (j = 0; j < i; j++)
		if (strcasecmp(cl->cc_addrs[j].ad_host, ad->ad_host) == 0 &&
		    cl->cc_addrs[j].ad_port == ad->ad_port)
			return verr(cf, err, errlen, &ad->ad_pos,
			            "client '%s': address '%s' port %u "
			            "given twice",
			            cn, hn, ad->ad_port);
	if (ad->ad_trusted_cert != NULL && ad->ad_trusted_cert_file != NULL)
		return verr(cf, err, errlen, &ad->ad_pos,
		            "client '%s': address '%s' has both trusted-cert "
		            "and trusted-cert-file; expected one",
		            cn, hn);
	if (ad->ad_trusted_cert == NULL && ad->ad_trusted_cert_file == NULL)
		return verr(cf, err, errlen, &ad->ad_pos,
		            "client '%s': address '%s' has no trusted-cert; "
		            "expected the server's PEM certificate, or "
		            "trusted-cert-file",
		            cn, hn);
	if (ad->ad_trusted_cert != NULL && !pem_ok(ad->ad_trusted_cert))
		return verr(cf, err, errlen, &ad->ad_pos,
		            "client '%s': address '%s': trusted-cert is not "
		            "PEM; expected base64 text between "
		            "'-----BEGIN CERTIFICATE-----' and "
		            "'-----END CERTIFICATE-----'",
		            cn, hn);
	if (ad->ad_trusted_cert_file != NULL &&
	    ad->ad_trusted_cert_file[0] != '/')
		return verr(cf, err, errlen, &ad->ad_pos,
		            "client '%s': address '%s': trusted-cert-file; "
		            "expected an absolute path",
		            cn, hn);
	return 0;
}

static int
validate_client(const struct conf *cf, size_t i, char *err, size_t errlen)
{
	const struct conf_client *cl = &cf->cf_clients[i];
	const char *cn = safe(cl->cc_name);
	size_t j;
	int rc;

	if (cl->cc_name == NULL || !text_ok(cl->cc_name, strlen(cl->cc_name)) ||
	    cl->cc_name[0] == '\0' || strlen(cl->cc_name) > 255)
		return verr(cf, err, errlen, &cl->cc_pos,
		            "bad client name; expected 1 to 255 printable "
		            "characters");
	for (j = 0; j < i; j++)
		if (strcmp(cf->cf_clients[j].cc_name, cl->cc_name) == 0)
			return verr(cf, err, errlen, &cl->cc_pos,
			            "client '%s' defined twice (first at "
			            "line %u)",
			            cn, cf->cf_clients[j].cc_pos.po_line);
	if (cl->cc_device_id == NULL || cl->cc_device_id[0] == '\0')
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': no device-id; expected "
		            "'device-id NAME;'",
		            cn);
	if (!text_ok(cl->cc_device_id, strlen(cl->cc_device_id)))
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': device-id must be printable UTF-8",
		            cn);
	if (cl->cc_secret == NULL || cl->cc_secret_len == 0)
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': no secret; expected 'secret "
		            "\"...\";'",
		            cn);
	/* A $9$ secret may decode to a NUL, which the wire would cut at. */
	if (memchr(cl->cc_secret, '\0', cl->cc_secret_len) != NULL)
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': secret holds a NUL byte", cn);
	if (!utf8_valid((const uint8_t *)cl->cc_secret, cl->cc_secret_len))
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': secret is not valid UTF-8", cn);
	if (cl->cc_reconnect != CONF_RECONNECT_IN_ORDER &&
	    cl->cc_reconnect != CONF_RECONNECT_STICKY)
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': bad reconnect-strategy", cn);
	if (cl->cc_waittime < CONF_MIN_WAITTIME ||
	    cl->cc_waittime > CONF_MAX_WAITTIME)
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': waittime %u; expected %u to %u", cn,
		            cl->cc_waittime, CONF_MIN_WAITTIME,
		            CONF_MAX_WAITTIME);
	if (cl->cc_naddrs == 0)
		return verr(cf, err, errlen, &cl->cc_pos,
		            "client '%s': no address; expected at least one "
		            "'address HOST { ... }'",
		            cn);
	for (j = 0; j < cl->cc_naddrs; j++)
		if ((rc = validate_address(cf, cl, j, err, errlen)) != 0)
			return rc;
	return 0;
}

static int
validate_agent(const struct conf *cf, char *err, size_t errlen)
{
	const struct conf_agent *ag = &cf->cf_agent;
	const struct {
		const char *name;
		const char *val;
		int required;
	} strs[] = {
	    {"user", ag->ag_user, 0},
	    {"netconf-command", ag->ag_netconf_command, 1},
	    {"shell", ag->ag_shell, 0},
	    {"log-file", ag->ag_log_file, 1},
	};
	const struct {
		const char *name;
		unsigned val, min, max;
	} nums[] = {
	    {"keepalive-interval", ag->ag_keepalive_interval, 0,
	     CONF_MAX_KEEPALIVE_INTERVAL},
	    {"keepalive-timeout", ag->ag_keepalive_timeout, 1,
	     CONF_MAX_KEEPALIVE_TIMEOUT},
	    {"tcp-keepalive-idle", ag->ag_tcp_keepidle, 1,
	     CONF_MAX_TCP_KEEPIDLE},
	    {"tcp-keepalive-interval", ag->ag_tcp_keepintvl, 1,
	     CONF_MAX_TCP_KEEPINTVL},
	    {"tcp-keepalive-count", ag->ag_tcp_keepcnt, 1,
	     CONF_MAX_TCP_KEEPCNT},
	    {"keepalive-interval-max", ag->ag_keepalive_interval_max, 1,
	     CONF_MAX_KEEPALIVE_INTERVAL},
	    {"dead-peer-timeout", ag->ag_dead_peer_timeout, 0,
	     CONF_MAX_DEAD_PEER_TIMEOUT},
	    {"session-limit", ag->ag_session_limit, 1, CONF_MAX_SESSION_LIMIT},
	};
	size_t i;

	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		if (strs[i].val == NULL && !strs[i].required)
			continue;
		if (strs[i].val == NULL || strs[i].val[0] == '\0')
			return verr(cf, err, errlen, NULL, "agent: %s is empty",
			            strs[i].name);
	}
	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		if (nums[i].val < nums[i].min || nums[i].val > nums[i].max)
			return verr(cf, err, errlen, NULL,
			            "agent: %s %u; expected %u to %u",
			            nums[i].name, nums[i].val, nums[i].min,
			            nums[i].max);
	if (ag->ag_keepalive_interval_max < ag->ag_keepalive_interval)
		return verr(cf, err, errlen, NULL,
		            "agent: keepalive-interval-max %u is below "
		            "keepalive-interval %u",
		            ag->ag_keepalive_interval_max,
		            ag->ag_keepalive_interval);
	return 0;
}

int
conf_validate(const struct conf *cf, char *err, size_t errlen)
{
	size_t i;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((rc = validate_agent(cf, err, errlen)) != 0)
		return rc;
	if (cf->cf_nclients == 0)
		return verr(cf, err, errlen, NULL,
		            "no client; expected at least one 'client NAME "
		            "{ ... }' in 'outbound-https'");
	for (i = 0; i < cf->cf_nclients; i++)
		if ((rc = validate_client(cf, i, err, errlen)) != 0)
			return rc;
	return 0;
}

/*
 * Reload support.
 */

const struct conf_client *
conf_client_find(const struct conf *cf, const char *name)
{
	size_t i;

	for (i = 0; i < cf->cf_nclients; i++)
		if (cf->cf_clients[i].cc_name != NULL &&
		    strcmp(cf->cf_clients[i].cc_name, name) == 0)
			return &cf->cf_clients[i];
	return NULL;
}

static int
str_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

int
conf_client_equal_conn(const struct conf_client *a, const struct conf_client *b)
{
	const struct conf_address *x, *y;
	size_t i;

	if (!str_equal(a->cc_device_id, b->cc_device_id))
		return 0;
	if ((a->cc_secret == NULL) != (b->cc_secret == NULL) ||
	    a->cc_secret_len != b->cc_secret_len)
		return 0;
	if (a->cc_secret != NULL &&
	    CRYPTO_memcmp(a->cc_secret, b->cc_secret, a->cc_secret_len) != 0)
		return 0;
	if (a->cc_naddrs != b->cc_naddrs)
		return 0;
	for (i = 0; i < a->cc_naddrs; i++) {
		x = &a->cc_addrs[i];
		y = &b->cc_addrs[i];
		if (!str_equal(x->ad_host, y->ad_host) ||
		    x->ad_port != y->ad_port ||
		    !str_equal(x->ad_trusted_cert, y->ad_trusted_cert) ||
		    !str_equal(x->ad_trusted_cert_file,
		               y->ad_trusted_cert_file))
			return 0;
	}
	return 1;
}

const char *
conf_reconnect_name(enum conf_reconnect r)
{
	return r == CONF_RECONNECT_STICKY ? "sticky" : "in-order";
}
