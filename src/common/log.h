/*
 * Logging for the daemons and tools.
 *
 * Messages are lowercase, without a final period, with variable text in
 * quotes.  log_warn() and fatal() append ": strerror(errno)".  Library
 * modules do not log; they return errors and leave logging to callers.
 *
 * Every message is escaped as it is written (log_escape()), so text a peer
 * supplied cannot start a new line or send a terminal escape: callers pass
 * peer text as it came and need not escape it themselves.
 */
#ifndef NCGRPC_LOG_H
#define NCGRPC_LOG_H

#include <stdarg.h>
#include <stdnoreturn.h>

enum log_level {
	LOG_LEVEL_WARN = 0,
	LOG_LEVEL_INFO = 1,
	LOG_LEVEL_DEBUG = 2,
};

/*
 * Sets the program name put before each line and the most verbose level
 * written.  Output goes to stderr until log_open() names a file.
 */
void log_init(const char *progname, enum log_level level);

/*
 * Appends to path instead of stderr (created 0600 if missing).  Returns 0 or
 * a negative errno; on error the previous destination is kept.
 */
int log_open(const char *path);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/*
 * Escapes in[0..inlen) for a one-line, printable-ASCII log: a backslash
 * becomes "\\\\", and every byte below 0x20 or from 0x7f up (newlines, ESC,
 * DEL, and each byte of any non-ASCII text) becomes "\\xNN" (lowercase hex).
 * Writes at most outlen bytes to out, NUL included, never cutting an escape
 * in two, and always NUL-terminates when outlen > 0.  Returns the length of
 * the whole escaped text (without the NUL), which may exceed outlen - 1; with
 * outlen 0 it only measures (out may then be NULL).
 */
size_t log_escape(char *out, size_t outlen, const void *in, size_t inlen);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif
