#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ncframe.h"

#define EOM_MARK     "]]>]]>"
#define EOM_MARK_LEN 6
#define BASE11       "urn:ietf:params:netconf:base:1.1"
#define CHUNK_MAX    4294967295u /* RFC 6242 section 4.2 */

/*
 * feed() copies and scans this much at a time, so that a framing error
 * early in a large write stops the copying there.
 */
#define FEED_STEP (64u * 1024)

/* ncframe_op_name() reads names into a buffer this big. */
#define OP_NAME_MAX 128

enum phase {
	PH_HELLO,   /* reading the operator's hello, framed by "]]>]]>" */
	PH_WAIT,    /* operator hello done; the device's is still missing */
	PH_EOM,     /* NETCONF 1.0 framing decided */
	PH_CHUNKED, /* NETCONF 1.1 framing decided */
};

/* Where the chunked parser stands; each names the byte it expects next. */
enum cstate {
	CS_LF,     /* the '\n' opening a chunk header or end-of-chunks */
	CS_HASH,   /* the '#' after it */
	CS_FIRST,  /* the first digit of chunk-size, or the second '#' */
	CS_DIGITS, /* more digits, or the '\n' ending chunk-size */
	CS_DATA,   /* chunk data; f_csize bytes are left */
	CS_ENDLF,  /* the '\n' closing "\n##" */
};

static int
is_ws(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Says whether a hello (without its "]]>]]>") holds a <capability> whose
 * text, trimmed, is exactly the base:1.1 URN.  Matching the element rather
 * than the bare string keeps a capability mentioned in a comment, or a
 * longer URN that starts with this one, from switching the framing.
 */
static int
has_base11(const uint8_t *p, size_t n)
{
	const uint8_t *e;
	size_t i = 0, local, ts, te;

	while (i < n) {
		if (p[i] != '<') {
			i++;
			continue;
		}
		if (n - i >= 4 && memcmp(p + i, "<!--", 4) == 0) {
			e = memmem(p + i + 4, n - i - 4, "-->", 3);
			if (e == NULL)
				return 0;
			i = (size_t)(e - p) + 3;
			continue;
		}
		local = ++i;
		while (i < n && p[i] != '>' && p[i] != '/' && !is_ws(p[i]) &&
		       p[i] != '<') {
			if (p[i] == ':')
				local = i + 1;
			i++;
		}
		/* An end tag stops at once on its '/', so it never matches. */
		if (i - local != 10 || memcmp(p + local, "capability", 10) != 0)
			continue;
		while (i < n && p[i] != '>')
			i++;
		if (i >= n)
			return 0;
		if (p[i - 1] == '/')
			continue; /* <capability/> */
		ts = ++i;
		while (i < n && p[i] != '<')
			i++;
		te = i;
		while (ts < te && is_ws(p[ts]))
			ts++;
		while (te > ts && is_ws(p[te - 1]))
			te--;
		if (te - ts == sizeof(BASE11) - 1 &&
		    memcmp(p + ts, BASE11, te - ts) == 0)
			return 1;
	}
	return 0;
}

static int
set_error(struct ncframe *f, int err)
{
	f->f_err = err;
	return err;
}

/* Drops the message ncframe_next() lent, now that the loan has ended. */
static void
release(struct ncframe *f)
{
	if (f->f_taken == 0)
		return;
	buf_consume(&f->f_in, f->f_taken);
	f->f_ready -= f->f_taken;
	f->f_scan -= f->f_taken;
	f->f_taken = 0;
}

/* Queues a complete message of n bytes that starts at f_ready. */
static int
push(struct ncframe *f, size_t n)
{
	size_t cap, *q;

	if (f->f_qhead + f->f_qlen == f->f_qcap) {
		/*
		 * Slide down only when at least half the array is free, so
		 * that each element moves O(1) times on average.
		 */
		if (f->f_qhead > 0 && f->f_qhead >= f->f_qcap / 2) {
			memmove(f->f_q, f->f_q + f->f_qhead,
			        f->f_qlen * sizeof(*f->f_q));
			f->f_qhead = 0;
		} else {
			cap = f->f_qcap == 0 ? 16 : f->f_qcap * 2;
			q = reallocarray(f->f_q, cap, sizeof(*q));
			if (q == NULL)
				return set_error(f, -ENOMEM);
			f->f_q = q;
			f->f_qcap = cap;
		}
	}
	f->f_q[f->f_qhead + f->f_qlen++] = n;
	f->f_ready += n;
	f->f_scan = f->f_ready;
	return 0;
}

/*
 * Ends the operator's stream if ncframe_eof() asked for it and the framing
 * of what is left can be judged.
 */
static int
eof_check(struct ncframe *f)
{
	const uint8_t *p = buf_data(&f->f_in);
	size_t i, n = buf_len(&f->f_in);

	if (!f->f_eof || f->f_phase == PH_WAIT)
		return 0;
	for (i = f->f_ready; i < n; i++) {
		/* Trailing whitespace is normal at the end of a file. */
		if (f->f_phase == PH_CHUNKED || !is_ws(p[i]))
			return set_error(f, -EPROTO);
	}
	return 0;
}

static int scan(struct ncframe *);

static int
decide(struct ncframe *f)
{
	f->f_phase = f->f_op11 && f->f_dev11 ? PH_CHUNKED : PH_EOM;
	f->f_cstate = CS_LF;
	f->f_chunks = 0;
	return scan(f);
}

/* Finds messages ended by "]]>]]>": the operator's hello, or 1.0 ones. */
static int
scan_eom(struct ncframe *f)
{
	const uint8_t *p, *m;
	size_t n, from, len;

	for (;;) {
		p = buf_data(&f->f_in);
		n = buf_len(&f->f_in);
		/* Back up over a mark that may have been cut by the feed. */
		from = f->f_scan;
		if (from >= f->f_ready + EOM_MARK_LEN - 1)
			from -= EOM_MARK_LEN - 1;
		else
			from = f->f_ready;
		m = memmem(p + from, n - from, EOM_MARK, EOM_MARK_LEN);
		if (m == NULL) {
			f->f_scan = n;
			if (n - f->f_ready > f->f_max)
				return set_error(f, -EMSGSIZE);
			return 0;
		}
		len = (size_t)(m - p) + EOM_MARK_LEN - f->f_ready;
		if (len > f->f_max)
			return set_error(f, -EMSGSIZE);
		if (f->f_phase == PH_HELLO)
			f->f_op11 =
			    has_base11(p + f->f_ready, len - EOM_MARK_LEN);
		if (push(f, len) != 0)
			return f->f_err;
		if (f->f_phase == PH_HELLO) {
			f->f_phase = PH_WAIT;
			return f->f_devdone ? decide(f) : 0;
		}
	}
}

/* Walks RFC 6242 section 4.2 chunked framing from f_scan. */
static int
scan_chunked(struct ncframe *f)
{
	const uint8_t *p = buf_data(&f->f_in);
	size_t pos = f->f_scan, n = buf_len(&f->f_in), take, msglen;
	uint8_t c;

	while (pos < n) {
		if (f->f_cstate == CS_DATA) {
			take = n - pos;
			if (take > f->f_csize)
				take = (size_t)f->f_csize;
			pos += take;
			f->f_csize -= take;
			if (f->f_csize == 0)
				f->f_cstate = CS_LF;
			continue;
		}
		c = p[pos++];
		switch (f->f_cstate) {
		case CS_LF:
			if (c != '\n')
				goto proto;
			f->f_cstate = CS_HASH;
			break;
		case CS_HASH:
			if (c != '#')
				goto proto;
			f->f_cstate = CS_FIRST;
			break;
		case CS_FIRST:
			/* A message needs one chunk; sizes have no 0 prefix. */
			if (c == '#' && f->f_chunks > 0)
				f->f_cstate = CS_ENDLF;
			else if (c >= '1' && c <= '9') {
				f->f_csize = c - '0';
				f->f_cstate = CS_DIGITS;
			} else
				goto proto;
			break;
		case CS_DIGITS:
			if (c >= '0' && c <= '9') {
				f->f_csize = f->f_csize * 10 + (c - '0');
				if (f->f_csize > CHUNK_MAX)
					goto proto;
				break;
			}
			if (c != '\n')
				goto proto;
			/*
			 * Refuse now what cannot fit once the chunk and
			 * "\n##\n" are in, rather than after buffering it.
			 */
			msglen = pos - f->f_ready;
			if (f->f_csize > f->f_max ||
			    msglen + 4 > f->f_max - f->f_csize) {
				f->f_scan = pos;
				return set_error(f, -EMSGSIZE);
			}
			f->f_chunks++;
			f->f_cstate = CS_DATA;
			break;
		case CS_ENDLF:
			if (c != '\n')
				goto proto;
			f->f_chunks = 0;
			f->f_cstate = CS_LF;
			if (push(f, pos - f->f_ready) != 0)
				return f->f_err;
			break;
		default:
			goto proto;
		}
	}
	f->f_scan = pos;
	return 0;
proto:
	f->f_scan = pos;
	return set_error(f, -EPROTO);
}

static int
scan(struct ncframe *f)
{
	int rc;

	switch (f->f_phase) {
	case PH_HELLO:
	case PH_EOM:
		rc = scan_eom(f);
		break;
	case PH_CHUNKED:
		rc = scan_chunked(f);
		break;
	default:
		rc = 0;
		break;
	}
	return rc != 0 ? rc : eof_check(f);
}

void
ncframe_init(struct ncframe *f, size_t max_msg)
{
	memset(f, 0, sizeof(*f));
	/*
	 * f_in has no limit of its own: messages are bounded by f_max and
	 * their number by the caller's backpressure on ncframe_pending().
	 */
	buf_init(&f->f_in, 0);
	buf_init(&f->f_dev, NCFRAME_DEVICE_HELLO_MAX);
	f->f_max = max_msg == 0 ? NCFRAME_DEFAULT_MAX_MSG : max_msg;
	f->f_phase = PH_HELLO;
}

void
ncframe_free(struct ncframe *f)
{
	buf_free(&f->f_in);
	buf_free(&f->f_dev);
	free(f->f_q);
	f->f_q = NULL;
	f->f_qhead = f->f_qlen = f->f_qcap = 0;
	f->f_ready = f->f_scan = f->f_taken = 0;
}

int
ncframe_feed(struct ncframe *f, const uint8_t *data, size_t len)
{
	size_t n;
	int rc;

	release(f);
	if (f->f_err != 0)
		return f->f_err;
	if (f->f_eof)
		return -EINVAL;
	while (len > 0) {
		n = len < FEED_STEP ? len : FEED_STEP;
		/* f_in has no limit, so only -ENOMEM can come back. */
		if (buf_append(&f->f_in, data, n) != 0)
			return set_error(f, -ENOMEM);
		data += n;
		len -= n;
		if ((rc = scan(f)) != 0)
			return rc;
	}
	return 0;
}

int
ncframe_eof(struct ncframe *f)
{
	release(f);
	if (f->f_err != 0)
		return f->f_err;
	f->f_eof = 1;
	return eof_check(f);
}

int
ncframe_next(struct ncframe *f, const uint8_t **msg, size_t *len)
{
	size_t n;

	release(f);
	if (f->f_qlen == 0)
		return f->f_err;
	n = f->f_q[f->f_qhead++];
	if (--f->f_qlen == 0)
		f->f_qhead = 0;
	f->f_taken = n;
	*msg = buf_data(&f->f_in);
	*len = n;
	return 1;
}

void
ncframe_observe_device(struct ncframe *f, const uint8_t *data, size_t len)
{
	const uint8_t *p, *m;
	size_t room, take, from, n;

	release(f);
	if (f->f_devdone || len == 0)
		return;
	/* Past the cap the hello counts as 1.0-only, so keep no more. */
	room = f->f_dev.b_max - buf_len(&f->f_dev);
	take = len < room ? len : room;
	if (buf_append(&f->f_dev, data, take) != 0) {
		/* Out of memory inside a session ends the session. */
		if (f->f_err == 0)
			set_error(f, -ENOMEM);
		return;
	}
	p = buf_data(&f->f_dev);
	n = buf_len(&f->f_dev);
	from = f->f_devscan >= EOM_MARK_LEN - 1
	           ? f->f_devscan - (EOM_MARK_LEN - 1)
	           : 0;
	m = memmem(p + from, n - from, EOM_MARK, EOM_MARK_LEN);
	if (m != NULL)
		f->f_dev11 = has_base11(p, (size_t)(m - p));
	else if (n < f->f_dev.b_max) {
		f->f_devscan = n;
		return;
	}
	/* Found, or too long to be a sane hello: then it is 1.0-only. */
	f->f_devdone = 1;
	buf_free(&f->f_dev);
	f->f_devscan = 0;
	if (f->f_phase == PH_WAIT && f->f_err == 0)
		decide(f); /* an error stays sticky for ncframe_next() */
}

int
ncframe_mode(const struct ncframe *f)
{
	switch (f->f_phase) {
	case PH_EOM:
		return NCFRAME_EOM;
	case PH_CHUNKED:
		return NCFRAME_CHUNKED;
	default:
		return NCFRAME_UNDECIDED;
	}
}

size_t
ncframe_pending(const struct ncframe *f)
{
	return buf_len(&f->f_in) - f->f_taken;
}

/*
 * A cursor over the XML text of one message: it hides chunk headers and
 * stops at the end of the framing, so the scanner above it never sees
 * framing bytes and never reads past the message.
 */
struct rd {
	const uint8_t *r_p;
	size_t r_len; /* end of the text: the "]]>]]>" or the message */
	size_t r_pos;
	int r_chunked;
	uint64_t r_left; /* data bytes left in the current chunk */
};

/* Reads the chunk header at r_pos.  Returns 0, or -1 at end or on junk. */
static int
rd_chunk(struct rd *r)
{
	uint64_t size = 0;

	if (r->r_len - r->r_pos < 3 || r->r_p[r->r_pos] != '\n' ||
	    r->r_p[r->r_pos + 1] != '#')
		return -1;
	r->r_pos += 2;
	if (r->r_p[r->r_pos] < '1' || r->r_p[r->r_pos] > '9')
		return -1; /* end-of-chunks, or malformed */
	while (r->r_pos < r->r_len && r->r_p[r->r_pos] >= '0' &&
	       r->r_p[r->r_pos] <= '9') {
		size = size * 10 + (r->r_p[r->r_pos++] - '0');
		if (size > CHUNK_MAX)
			return -1;
	}
	if (r->r_pos >= r->r_len || r->r_p[r->r_pos] != '\n')
		return -1;
	r->r_pos++;
	r->r_left = size;
	return 0;
}

static void
rd_init(struct rd *r, const uint8_t *msg, size_t len)
{
	const uint8_t *m;

	memset(r, 0, sizeof(*r));
	r->r_p = msg;
	r->r_len = len;
	/* No XML text starts with '#', so this cannot be a 1.0 message. */
	if (len >= 2 && msg[0] == '\n' && msg[1] == '#')
		r->r_chunked = 1;
	else if ((m = memmem(msg, len, EOM_MARK, EOM_MARK_LEN)) != NULL)
		r->r_len = (size_t)(m - msg);
}

/* Returns the next byte of text, or -1 at its end. */
static int
rd_get(struct rd *r)
{
	if (r->r_chunked && r->r_left == 0 && rd_chunk(r) != 0) {
		r->r_pos = r->r_len;
		return -1;
	}
	if (r->r_pos >= r->r_len)
		return -1;
	if (r->r_chunked)
		r->r_left--;
	return r->r_p[r->r_pos++];
}

/* Skips up to and including pat (at most 3 bytes).  Returns 0 or -1. */
static int
rd_skip_past(struct rd *r, const char *pat)
{
	size_t n = strlen(pat), have = 0;
	char w[3] = {0};
	int c;

	while ((c = rd_get(r)) != -1) {
		memmove(w, w + 1, n - 1);
		w[n - 1] = (char)c;
		if (++have >= n && memcmp(w, pat, n) == 0)
			return 0;
	}
	return -1;
}

/* Skips a DOCTYPE or other <!...> declaration, internal subset included. */
static int
rd_skip_decl(struct rd *r)
{
	int c, depth = 0, quote = 0;

	while ((c = rd_get(r)) != -1) {
		if (quote != 0) {
			if (c == quote)
				quote = 0;
		} else if (c == '"' || c == '\'')
			quote = c;
		else if (c == '[')
			depth++;
		else if (c == ']' && depth > 0)
			depth--;
		else if (c == '>' && depth == 0)
			return 0;
	}
	return -1;
}

/*
 * Skips attributes to the end of a start tag.  Returns 1 for an empty
 * element ("/>"), 0 otherwise, -1 at end of text.
 */
static int
rd_skip_attrs(struct rd *r)
{
	int c, quote = 0, slash = 0;

	while ((c = rd_get(r)) != -1) {
		if (quote != 0) {
			if (c == quote)
				quote = 0;
			continue;
		}
		if (c == '>')
			return slash;
		if (c == '"' || c == '\'')
			quote = c;
		slash = c == '/';
	}
	return -1;
}

static int
is_namechar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

enum tag {
	TAG_NONE,  /* end of text, or markup the scanner does not accept */
	TAG_START, /* a start tag, read to its '>' */
	TAG_END,   /* the "</" of an end tag */
};

/*
 * Skips text, comments, processing instructions, CDATA and declarations
 * to the next tag.  For a start tag, stores its local name (prefix dropped)
 * in name, *empty says whether it was "<x/>", and *toolong whether the
 * name did not fit in size bytes.
 */
static enum tag
rd_next_tag(struct rd *r, char *name, size_t size, int *empty, int *toolong)
{
	size_t n;
	int c;

	for (;;) {
		while ((c = rd_get(r)) != -1 && c != '<')
			;
		if (c == -1)
			return TAG_NONE;
		c = rd_get(r);
		if (c == '?') {
			if (rd_skip_past(r, "?>") != 0)
				return TAG_NONE;
			continue;
		}
		if (c == '!') {
			c = rd_get(r);
			if (c == '-') {
				if (rd_get(r) != '-' ||
				    rd_skip_past(r, "-->") != 0)
					return TAG_NONE;
			} else if (c == '[') {
				if (rd_skip_past(r, "]]>") != 0)
					return TAG_NONE;
			} else if (c == -1 || rd_skip_decl(r) != 0)
				return TAG_NONE;
			continue;
		}
		if (c == '/')
			return TAG_END;
		break;
	}
	n = 0;
	*toolong = 0;
	while (is_namechar(c) || c == ':') {
		if (c == ':') {
			n = 0; /* the prefix is not part of the name */
			*toolong = 0;
		} else if (n + 1 < size)
			name[n++] = (char)c;
		else
			*toolong = 1;
		c = rd_get(r);
	}
	if (n == 0 && !*toolong)
		return TAG_NONE;
	name[n] = '\0';
	if (c == '>')
		*empty = 0;
	else if (c == '/')
		*empty = rd_get(r) == '>';
	else if (is_ws((uint8_t)c))
		*empty = rd_skip_attrs(r);
	else
		return TAG_NONE;
	if (*empty == -1 || (c == '/' && !*empty))
		return TAG_NONE;
	return TAG_START;
}

int
ncframe_op_name(const uint8_t *msg, size_t len, char *out, size_t outlen)
{
	char name[OP_NAME_MAX];
	struct rd r;
	size_t n;
	int empty, toolong;

	rd_init(&r, msg, len);
	if (rd_next_tag(&r, name, sizeof(name), &empty, &toolong) !=
	        TAG_START ||
	    toolong)
		return -ENOENT;
	if (strcmp(name, "rpc") == 0) {
		if (empty)
			return -ENOENT;
		if (rd_next_tag(&r, name, sizeof(name), &empty, &toolong) !=
		    TAG_START)
			return -ENOENT;
		if (toolong)
			return -ENAMETOOLONG;
	} else if (strcmp(name, "hello") != 0)
		return -ENOENT;
	n = strlen(name);
	if (n >= outlen)
		return -ENAMETOOLONG;
	memcpy(out, name, n + 1);
	return 0;
}
