#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_progname = "ncgrpc";
static enum log_level log_level = LOG_LEVEL_INFO;
static FILE *log_fp;

void
log_init(const char *progname, enum log_level level)
{
	log_progname = progname;
	log_level = level;
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

int
log_open(const char *path)
{
	int fd;
	FILE *fp;

	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		return -errno;
	fp = fdopen(fd, "a");
	if (fp == NULL) {
		int e = errno;
		close(fd);
		return -e;
	}
	setvbuf(fp, NULL, _IOLBF, 0);
	if (log_fp != NULL)
		fclose(log_fp);
	log_fp = fp;
	return 0;
}

size_t
log_escape(char *out, size_t outlen, const void *in, size_t inlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = in;
	size_t i, n = 0, w = 0, elen;
	int full = outlen == 0;
	char e[4];

	for (i = 0; i < inlen; i++) {
		unsigned char c = p[i];

		if (c == '\\') {
			e[0] = e[1] = '\\';
			elen = 2;
		} else if (c < 0x20 || c >= 0x7f) {
			e[0] = '\\';
			e[1] = 'x';
			e[2] = hex[c >> 4];
			e[3] = hex[c & 0xf];
			elen = 4;
		} else {
			e[0] = (char)c;
			elen = 1;
		}
		/* Never cut an escape in two: stop writing at the first that
		 * does not fit, but go on measuring. */
		if (!full && n + elen < outlen)
			memcpy(out + n, e, elen);
		else if (!full) {
			full = 1;
			w = n;
		}
		n += elen;
	}
	if (outlen > 0)
		out[full ? w : n] = '\0';
	return n;
}

/* Writes text[0..len) escaped (log_escape()) without a size limit. */
static void
write_escaped(FILE *fp, const char *text, size_t len)
{
	char chunk[1024];
	size_t off = 0, n;

	while (off < len) {
		/* Each input byte takes at most 4 output bytes. */
		n = len - off < (sizeof(chunk) - 1) / 4
		        ? len - off
		        : (sizeof(chunk) - 1) / 4;
		log_escape(chunk, sizeof(chunk), text + off, n);
		fputs(chunk, fp);
		off += n;
	}
}

/*
 * Every message is formatted first and written escaped: text that a peer
 * supplied (a grpc-message, a device id, a reason) may hold newlines or
 * terminal escapes, and escaping here, in the one sink, covers every caller.
 */
static void
log_vwrite(const char *level, const char *fmt, va_list ap, int errnum)
{
	FILE *fp = log_fp != NULL ? log_fp : stderr;
	struct timeval tv;
	struct tm tm;
	char ts[32], small[512], *msg = small;
	va_list ap2;
	int len;

	va_copy(ap2, ap);
	len = vsnprintf(small, sizeof(small), fmt, ap);
	if (len < 0) {
		len = 0;
		small[0] = '\0';
	} else if ((size_t)len >= sizeof(small) &&
	           (msg = malloc((size_t)len + 1)) != NULL)
		vsnprintf(msg, (size_t)len + 1, fmt, ap2);
	else if (msg == NULL) {
		/* Out of memory: the truncated text is better than none. */
		msg = small;
		len = (int)strlen(small);
	}
	va_end(ap2);
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	flockfile(fp);
	fprintf(fp, "%s.%03ldZ %s[%ld] %s: ", ts, (long)(tv.tv_usec / 1000),
	        log_progname, (long)getpid(), level);
	write_escaped(fp, msg, (size_t)len);
	if (errnum != 0)
		fprintf(fp, ": %s", strerror(errnum));
	fputc('\n', fp);
	fflush(fp);
	funlockfile(fp);
	if (msg != small)
		free(msg);
}

#define LOG_FN(name, lvl, tag, witherr)                                        \
	void name(const char *fmt, ...)                                        \
	{                                                                      \
		int saved = errno;                                             \
		va_list ap;                                                    \
		if (log_level < (lvl))                                         \
			return;                                                \
		va_start(ap, fmt);                                             \
		log_vwrite(tag, fmt, ap, (witherr) ? saved : 0);               \
		va_end(ap);                                                    \
		errno = saved;                                                 \
	}

LOG_FN(log_warn, LOG_LEVEL_WARN, "warning", 1)
LOG_FN(log_warnx, LOG_LEVEL_WARN, "warning", 0)
LOG_FN(log_info, LOG_LEVEL_INFO, "info", 0)
LOG_FN(log_debug, LOG_LEVEL_DEBUG, "debug", 0)

void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vwrite("fatal", fmt, ap, saved);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite("fatal", fmt, ap, 0);
	va_end(ap);
	exit(1);
}
