/*
 * Logging for the daemons and tools.
 *
 * Messages are lowercase, without a final period, with variable text in
 * quotes.  log_warn() and fatal() append ": strerror(errno)".  Library
 * modules do not log; they return errors and leave logging to callers.
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

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
noreturn void fatalx(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#endif
