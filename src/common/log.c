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

static void
log_vwrite(const char *level, const char *fmt, va_list ap, int errnum)
{
	FILE *fp = log_fp != NULL ? log_fp : stderr;
	struct timeval tv;
	struct tm tm;
	char ts[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	flockfile(fp);
	fprintf(fp, "%s.%03ldZ %s[%ld] %s: ", ts, (long)(tv.tv_usec / 1000),
		log_progname, (long)getpid(), level);
	vfprintf(fp, fmt, ap);
	if (errnum != 0)
		fprintf(fp, ": %s", strerror(errnum));
	fputc('\n', fp);
	fflush(fp);
	funlockfile(fp);
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
