/*
 * Whole files, bounded (fileio.h).
 */
#include <errno.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "fileio.h"

#define FILEIO_FIRST 8192

/* Grows buf to cap bytes; a secret's old copy is cleansed, not realloc()ed. */
static int
grow(char **buf, size_t len, size_t cap, int flags)
{
	char *n;

	if (!(flags & FILEIO_SECRET)) {
		if ((n = realloc(*buf, cap)) == NULL)
			return -ENOMEM;
		*buf = n;
		return 0;
	}
	if ((n = malloc(cap)) == NULL)
		return -ENOMEM;
	if (*buf != NULL) {
		memcpy(n, *buf, len);
		OPENSSL_cleanse(*buf, len);
		free(*buf);
	}
	*buf = n;
	return 0;
}

int
fileio_read_fd(int fd, size_t max, size_t hint, int flags, char **out,
               size_t *outlen)
{
	char *buf = NULL;
	size_t len = 0, cap = 0, want;
	ssize_t n;
	int rc;

	if (max > SIZE_MAX - 2)
		max = SIZE_MAX - 2;
	for (;;) {
		/*
		 * Room for the NUL, and for one byte past max, which is how a
		 * larger file is noticed without reading all of it.
		 */
		if (len + 1 >= cap) {
			want = cap == 0 ? (hint != 0 ? hint + 2 : FILEIO_FIRST)
			                : cap * 2;
			if (want > max + 2 || want < cap)
				want = max + 2;
			if ((rc = grow(&buf, len, want, flags)) != 0)
				goto fail;
			cap = want;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			rc = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			rc = -EFBIG;
			goto fail;
		}
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
fail:
	fileio_free(buf, len, flags);
	return rc;
}

void
fileio_free(char *buf, size_t len, int flags)
{
	if (buf == NULL)
		return;
	if (flags & FILEIO_SECRET)
		OPENSSL_cleanse(buf, len);
	free(buf);
}

/* access(W_OK | X_OK) on the directory part of path: 0 or -errno. */
static int
dir_writable(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int rc = 0;

	if (slash == NULL)
		return access(".", W_OK | X_OK) == 0 ? 0 : -errno;
	if (slash == path)
		return access("/", W_OK | X_OK) == 0 ? 0 : -errno;
	if ((dir = strndup(path, (size_t)(slash - path))) == NULL)
		return -ENOMEM;
	if (access(dir, W_OK | X_OK) == -1)
		rc = -errno;
	free(dir);
	return rc;
}

int
fileio_can_create(const char *path)
{
	const char *slash;
	char *dir;
	int rc;

	if ((rc = dir_writable(path)) != -ENOENT ||
	    (slash = strrchr(path, '/')) == NULL || slash == path)
		return rc;
	/* No such directory: the daemon makes it, in its own parent. */
	if ((dir = strndup(path, (size_t)(slash - path))) == NULL)
		return -ENOMEM;
	rc = dir_writable(dir);
	free(dir);
	return rc;
}

int
fileio_make_parent(const char *path, mode_t mode)
{
	char *copy;
	int made;

	if ((copy = strdup(path)) == NULL)
		return 0;
	made = mkdir(dirname(copy), mode) == 0;
	free(copy);
	return made;
}
