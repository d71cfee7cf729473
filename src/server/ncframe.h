/*
 * NETCONF message framing of operator input (RFC 6242).
 *
 * Operators write a byte stream (`ncgrpc session r1 --netconf < rpcs.xml`),
 * but the Ncgrpc protocol carries one whole NETCONF message, framing
 * included, per netconf_command.  An ncframe cuts the operator's stream into
 * those messages.  The first message is the operator's <hello>, always
 * ended by "]]>]]>".  Once the device's <hello> has been seen too (fed to
 * ncframe_observe_device()), later messages use chunked framing if both
 * hellos advertise urn:ietf:params:netconf:base:1.1, and "]]>]]>" framing
 * otherwise.
 *
 * Messages come back byte-exact: the concatenation of every message
 * ncframe_next() returns is exactly the operator bytes it consumed.  Bytes
 * between messages are never dropped: in "]]>]]>" mode the whitespace
 * before a message belongs to it, and in chunked mode anything but the
 * next "\n#" is a framing error.
 *
 * The struct is declared here so that a session can embed it; its fields
 * are private to ncframe.c.  Nothing is allocated until bytes arrive.
 */
#ifndef NCGRPC_NCFRAME_H
#define NCGRPC_NCFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Framing in force for operator input, as ncframe_mode() reports it. */
#define NCFRAME_UNDECIDED 0 /* a hello is still missing */
#define NCFRAME_EOM       1 /* NETCONF 1.0: messages end with "]]>]]>" */
#define NCFRAME_CHUNKED   2 /* NETCONF 1.1: RFC 6242 section 4.2 chunks */

/* A sensible max_msg for ncframe_init(). */
#define NCFRAME_DEFAULT_MAX_MSG (16u * 1024 * 1024)

/* How much of the device's output is kept while looking for its <hello>. */
#define NCFRAME_DEVICE_HELLO_MAX (1024u * 1024)

struct ncframe {
	struct buf f_in; /* operator bytes not yet consumed */
	size_t f_max;    /* largest message, framing included */
	size_t f_taken;  /* length of the message lent by ncframe_next() */
	size_t *f_q;     /* lengths of complete messages, oldest first */
	size_t f_qhead;
	size_t f_qlen;
	size_t f_qcap;
	size_t f_ready;   /* bytes of f_in covered by f_q */
	size_t f_scan;    /* offset in f_in where scanning resumes */
	int f_phase;      /* enum phase in ncframe.c */
	int f_cstate;     /* chunked parser state */
	uint64_t f_csize; /* chunk-size being read, then bytes left */
	int f_chunks;     /* chunks seen in the current message */
	int f_op11;       /* the operator's hello advertises base:1.1 */
	int f_eof;        /* ncframe_eof() was called */
	int f_err;        /* sticky error, 0 if none */
	struct buf f_dev; /* device output until its hello ends */
	size_t f_devscan; /* offset in f_dev where the search resumes */
	int f_devdone;    /* the device's hello was seen (or given up) */
	int f_dev11;      /* the device's hello advertises base:1.1 */
};

/*
 * Initialises f for messages of at most max_msg bytes, framing included
 * (0 means NCFRAME_DEFAULT_MAX_MSG).  Storage grows with the input; max_msg
 * is never allocated up front.
 */
void ncframe_init(struct ncframe *f, size_t max_msg);

/* Frees all storage.  f may be initialised again afterwards. */
void ncframe_free(struct ncframe *f);

/*
 * Takes len bytes of operator input.  Every byte is kept (the caller's
 * buffer is not referenced afterwards), so the caller bounds memory by
 * stopping reads while ncframe_pending() is above its high-water mark.
 * Returns 0, or:
 *   -EMSGSIZE  a message grew past max_msg (or a chunk-size says it will)
 *   -EPROTO    malformed chunked framing (RFC 6242 section 4.2)
 *   -ENOMEM
 *   -EINVAL    called after ncframe_eof() (not sticky)
 * Errors are sticky: later calls return the same code, and no byte after
 * the error is ever returned as part of a message.
 */
int ncframe_feed(struct ncframe *f, const uint8_t *data, size_t len);

/*
 * Says that the operator will send nothing more.  Returns 0, the sticky
 * error, or -EPROTO if a message was cut off: any byte of an unfinished
 * chunked message, or anything but whitespace after the last "]]>]]>".
 * If the framing is not decided yet, the verdict waits for the device's
 * hello and then shows up as ncframe_next()'s error.
 */
int ncframe_eof(struct ncframe *f);

/*
 * Lends the next whole message, framing bytes included, exactly as the
 * operator sent it.  *msg stays valid until the next call to ncframe_feed(),
 * ncframe_next(), ncframe_observe_device(), ncframe_eof() or
 * ncframe_free().  Returns 1 and sets *msg and *len; 0 if no message is
 * complete, or none can be framed yet because the device's hello has not
 * been seen; or the sticky error once every message completed before it
 * has been returned.
 */
int ncframe_next(struct ncframe *f, const uint8_t **msg, size_t *len);

/*
 * Shows f what the device sent up, so that it finds the device's <hello>
 * and whether it advertises base:1.1.  Only the hello is scanned; once it
 * has ended (or outgrown NCFRAME_DEVICE_HELLO_MAX, which counts as a
 * 1.0-only hello) calls cost nothing.  Seeing the hello may decide the
 * framing and so release buffered operator messages (or find an error in
 * them): call ncframe_next() afterwards.  Running out of memory while
 * keeping the hello becomes the sticky error -ENOMEM.
 */
void ncframe_observe_device(struct ncframe *f, const uint8_t *data, size_t len);

/* Returns NCFRAME_UNDECIDED, NCFRAME_EOM or NCFRAME_CHUNKED. */
int ncframe_mode(const struct ncframe *f);

/* Returns the operator bytes held that ncframe_next() has not yet lent. */
size_t ncframe_pending(const struct ncframe *f);

/*
 * Finds the NETCONF operation of a message for the audit log: the local
 * name of the first child element of <rpc> ("get-config", "commit"; a
 * prefix such as "nc:" is dropped), or "hello" for a <hello>.  msg is one
 * message in either framing, as ncframe_next() returns it; chunk headers
 * are skipped.  This is a light scanner, not an XML parser: it skips
 * whitespace, the XML declaration, processing instructions, comments,
 * CDATA, a DOCTYPE and attributes, and never reads outside msg.  Names
 * hold only ASCII letters, digits, '-', '_' and '.', so they are safe to
 * log.  Writes the name NUL-terminated to out and returns 0, or:
 *   -ENOENT        msg is not an <rpc> or <hello>, the <rpc> has no child
 *                  element, or the message is malformed or truncated
 *   -ENAMETOOLONG  the name and its NUL do not fit in outlen bytes
 * out is not touched on error.
 */
int ncframe_op_name(const uint8_t *msg, size_t len, char *out, size_t outlen);

#endif
