/*
 * ncgrpc's raw-terminal extension of the jnx.jet.netconf protocol: the
 * names and values both ends use, and their parsers (docs/protocol.md,
 * "Raw terminal").
 *
 * The device offers the extension with the request metadata
 * TERMEXT_MD_MODE: TERMEXT_RAW on its NcgrpcInitialize call.  A server
 * grants it, for a shell session, with the same key and value in the
 * Initialize trailers, beside conn_type, with the initial window size
 * (TERMEXT_MD_WINDOW, "COLSxROWS") and the terminal type (TERMEXT_MD_TERM).
 * The window then changes through CommandGetResponse.window (field 100 of
 * proto/ncgrpc_wire.proto).  A peer that does not know the extension never
 * sees a granted trailer or field 100: it never offered, or never granted.
 */
#ifndef NCGRPC_TERMEXT_H
#define NCGRPC_TERMEXT_H

#include <stddef.h>
#include <stdint.h>

#define TERMEXT_MD_MODE   "ncgrpc-terminal"
#define TERMEXT_RAW       "raw"
#define TERMEXT_MD_WINDOW "ncgrpc-window"
#define TERMEXT_MD_TERM   "ncgrpc-term"

/* Window sizes outside 1..TERMEXT_WINDOW_MAX cells are refused. */
#define TERMEXT_WINDOW_MAX 4096
/* "4096x4096" and its NUL. */
#define TERMEXT_WINDOW_STRLEN 10
/* A terminal type: 1 to 63 bytes of [A-Za-z0-9._+-]. */
#define TERMEXT_TERM_MAX     63
#define TERMEXT_TERM_DEFAULT "xterm"

struct termext_window {
	uint16_t tw_cols;
	uint16_t tw_rows;
};

/*
 * Checks a size from a peer.  Returns 0 and sets *out, or -ERANGE when a
 * side is 0 or above TERMEXT_WINDOW_MAX.
 */
int termext_window_check(uint32_t cols, uint32_t rows,
                         struct termext_window *out);

/*
 * Parses "COLSxROWS" (decimal, no sign, no spaces, no leading zeros),
 * exactly len bytes of s.  Returns 0 and sets *out, -EINVAL when s is not
 * of that form (empty, truncated, trailing bytes, too many digits), or
 * -ERANGE when a side is out of range (termext_window_check()).
 */
int termext_window_parse(const void *s, size_t len, struct termext_window *out);

/*
 * Formats w as "COLSxROWS" into buf (at least TERMEXT_WINDOW_STRLEN
 * bytes).  Returns 0, -ERANGE for a size termext_window_check() refuses,
 * or -ENOBUFS when len is too small.
 */
int termext_window_format(const struct termext_window *w, char *buf,
                          size_t len);

/* Nonzero when s[0..len) is a terminal type we pass on. */
int termext_term_ok(const void *s, size_t len);

#endif
