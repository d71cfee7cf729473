#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"

static FILE *audit_fp;

int
audit_open(const char *path)
{
	FILE *fp;
	int fd;

	if (strcmp(path, "-") == 0) {
		audit_close();
		audit_fp = stderr;
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		return -errno;
	if ((fp = fdopen(fd, "a")) == NULL) {
		int e = errno;

		close(fd);
		return -e;
	}
	audit_close();
	audit_fp = fp;
	return 0;
}

void
audit_close(void)
{
	if (audit_fp != NULL && audit_fp != stderr)
		fclose(audit_fp);
	audit_fp = NULL;
}

/* Writes v, quoted and escaped if it is empty or holds odd bytes. */
static void
put_value(FILE *fp, const char *v)
{
	const unsigned char *p;
	int plain = *v != '\0';

	for (p = (const unsigned char *)v; *p != '\0'; p++)
		if (*p <= ' ' || *p == '"' || *p == '\\' || *p >= 0x7f)
			plain = 0;
	if (plain) {
		fputs(v, fp);
		return;
	}
	fputc('"', fp);
	for (p = (const unsigned char *)v; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(fp, "\\%c", *p);
		else if (*p < ' ' || *p == 0x7f)
			fprintf(fp, "\\x%02x", *p);
		else
			fputc(*p, fp);
	}
	fputc('"', fp);
}

/*
 * Each event is formatted in memory and written with one write(2), so the
 * lines of the two daemons sharing the file (O_APPEND) never interleave.
 */
void
audit_event(const char *event, ...)
{
	struct timeval tv;
	struct tm tm;
	const char *k, *v;
	char ts[32], *line = NULL;
	size_t len = 0;
	va_list ap;
	FILE *mf;

	if (audit_fp == NULL)
		return;
	if ((mf = open_memstream(&line, &len)) == NULL)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(mf, "%s.%03ldZ event=%s", ts, (long)(tv.tv_usec / 1000), event);
	va_start(ap, event);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (v == NULL)
			continue;
		fprintf(mf, " %s=", k);
		put_value(mf, v);
	}
	va_end(ap);
	fputc('\n', mf);
	if (fclose(mf) == 0 && line != NULL) {
		fflush(audit_fp);
		(void)!write(fileno(audit_fp), line, len);
	}
	free(line);
}
