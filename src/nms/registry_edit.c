/*
 * The device registry, part 3 of 3: atomic edits of the file (add, remove,
 * set), under an exclusive lock, written to a temporary file and renamed
 * over the old one.  See registry.h for the contract.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "buf.h"
#include "err.h"
#include "registry_int.h"

/* --- editing the file --- */

enum edit_op { EDIT_ADD, EDIT_REMOVE, EDIT_SET };

/* Returns 1 if the line is the device line of id. */
static int
line_is(const char *s, size_t len, const char *id, size_t idlen)
{
	const char *p, *end, *t;

	if (!reg_line_trim(s, len, &p, &end))
		return 0;
	for (t = p; t < end && !reg_is_blank(*t); t++)
		;
	return (size_t)(t - p) == idlen && memcmp(p, id, idlen) == 0;
}

/*
 * The new contents: data with id's line dropped (remove) or replaced
 * (set), or newline appended (add, or set of a new id).
 */
static int
edit_build(struct buf *b, const char *data, size_t len, enum edit_op op,
           const char *id, size_t idlen, const char *newline)
{
	const char *line, *nl;
	size_t off = 0, linelen, full;
	int found = 0, rc;

	while (off < len) {
		line = data + off;
		nl = memchr(line, '\n', len - off);
		linelen = nl != NULL ? (size_t)(nl - line) : len - off;
		full = linelen + (nl != NULL);
		off += full;
		if (op != EDIT_ADD && line_is(line, linelen, id, idlen)) {
			found = 1;
			if (op == EDIT_REMOVE)
				continue;
			if ((rc = buf_append(b, newline, strlen(newline))) <
			        0 ||
			    (rc = buf_append(b, "\n", 1)) < 0)
				return rc;
			continue;
		}
		if ((rc = buf_append(b, line, full)) < 0)
			return rc;
	}
	if (op == EDIT_ADD || (op == EDIT_SET && !found)) {
		if (len > 0 && data[len - 1] != '\n' &&
		    (rc = buf_append(b, "\n", 1)) < 0)
			return rc;
		if ((rc = buf_append(b, newline, strlen(newline))) < 0 ||
		    (rc = buf_append(b, "\n", 1)) < 0)
			return rc;
	}
	return 0;
}

static int
write_all(int fd, const uint8_t *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Makes the new file beside path and renames it over path. */
static int
replace_file(const char *path, const struct buf *b, const struct stat *old,
             char *err, size_t errlen)
{
	char *tmp, *dir, *slash;
	size_t plen = strlen(path);
	int fd, dfd, rc;

	if ((tmp = malloc(plen + sizeof(".XXXXXX"))) == NULL) {
		ncg_seterr(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".XXXXXX", sizeof(".XXXXXX"));
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
		free(tmp);
		return rc;
	}
	rc = 0;
	if (fchmod(fd, 0600) < 0)
		rc = -errno;
	/* Whoever owned the file (ncgrpcd's user) must still read it. */
	if (rc == 0 && old != NULL && geteuid() == 0 &&
	    fchown(fd, old->st_uid, old->st_gid) < 0)
		rc = -errno;
	if (rc == 0)
		rc = write_all(fd, buf_data(b), buf_len(b));
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		ncg_seterr(err, errlen, "%s: %s", tmp, strerror(-rc));
		unlink(tmp);
		free(tmp);
		return rc;
	}
	free(tmp);
	/* The rename itself must reach the disk too. */
	if ((dir = strdup(path)) == NULL)
		return 0;
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	dfd =
	    open(slash != NULL ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(dir);
	return 0;
}

static int
lock_file(const char *path, char *err, size_t errlen)
{
	char *lock;
	size_t plen = strlen(path);
	int fd, rc;

	if ((lock = malloc(plen + sizeof(".lock"))) == NULL) {
		ncg_seterr(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	memcpy(lock, path, plen);
	memcpy(lock + plen, ".lock", sizeof(".lock"));
	/* Never unlinked: removing a lock file races with its next user. */
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", lock, strerror(errno));
		free(lock);
		return rc;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", lock, strerror(errno));
		close(fd);
		free(lock);
		return rc;
	}
	free(lock);
	return fd;
}

static int
edit_file(const char *path, enum edit_op op, const char *id,
          const uint8_t *secret, size_t len, char *err, size_t errlen)
{
	struct registry *reg = NULL;
	struct stat st;
	struct buf b;
	char *data = NULL, *newline = NULL;
	size_t datalen = 0, idlen;
	int lfd, rc, exists = 1, has;

	idlen = strnlen(id, REGISTRY_ID_MAX + 1);
	if (!reg_id_valid(id, idlen)) {
		ncg_seterr(
		    err, errlen,
		    "invalid device id (1..255 of A-Z a-z 0-9 . _ : @ -)");
		return -EINVAL;
	}
	/* Hash before locking: scrypt is slow, and other editors wait. */
	if (op != EDIT_REMOVE &&
	    (rc = registry_hash_line(id, secret, len, &newline)) < 0) {
		ncg_seterr(err, errlen, "cannot hash the secret of \"%s\": %s",
		           id,
		           rc == -EINVAL ? "empty, too long or holds a NUL byte"
		                         : strerror(-rc));
		return rc;
	}
	if ((lfd = lock_file(path, err, errlen)) < 0) {
		free(newline);
		return lfd;
	}
	buf_init(&b, REGISTRY_FILE_MAX);
	rc = reg_read_file(path, &data, &datalen, &st, err, errlen);
	if (rc == -ENOENT && op != EDIT_REMOVE) {
		exists = 0;
		rc = 0;
	}
	if (rc < 0)
		goto out;
	if ((rc = reg_parse(path, data != NULL ? data : "", datalen, &reg, err,
	                    errlen)) < 0)
		goto out;
	has = reg_lookup(reg, id, idlen) != NULL;
	if (op == EDIT_ADD && has) {
		ncg_seterr(err, errlen, "%s: device \"%s\" already exists",
		           path, id);
		rc = -EEXIST;
		goto out;
	}
	if (op == EDIT_REMOVE && !has) {
		ncg_seterr(err, errlen, "%s: no device \"%s\"", path, id);
		rc = -ENOENT;
		goto out;
	}
	rc = edit_build(&b, data != NULL ? data : "", datalen, op, id, idlen,
	                newline);
	if (rc < 0) {
		rc = rc == -ENOBUFS ? -EFBIG : rc;
		ncg_seterr(err, errlen, "%s: %s", path,
		           rc == -EFBIG ? "would grow too large"
		                        : "out of memory");
		goto out;
	}
	rc = replace_file(path, &b, exists ? &st : NULL, err, errlen);
out:
	registry_free(reg);
	buf_free(&b);
	free(data);
	free(newline);
	close(lfd); /* and with it the lock */
	return rc;
}

int
registry_new_secret(char *out, size_t outlen)
{
	uint8_t raw[GEN_SECRET_RAW];

	if (outlen < REGISTRY_SECRET_BUFSZ)
		return -ENOBUFS;
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	reg_b64_encode(raw, sizeof(raw), out, 1);
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

int
registry_add(const char *path, const char *device_id, char *secret_out,
             size_t secret_out_len, char *err, size_t errlen)
{
	char secret[REGISTRY_SECRET_BUFSZ];
	int rc;

	if (secret_out_len < REGISTRY_SECRET_BUFSZ) {
		ncg_seterr(err, errlen, "secret buffer too small");
		return -ENOBUFS;
	}
	if (registry_new_secret(secret, sizeof(secret)) != 0) {
		ncg_seterr(err, errlen, "no random bytes for a secret");
		return -EIO;
	}
	rc = edit_file(path, EDIT_ADD, device_id, (const uint8_t *)secret,
	               REGISTRY_SECRET_LEN, err, errlen);
	if (rc == 0)
		memcpy(secret_out, secret, sizeof(secret));
	OPENSSL_cleanse(secret, sizeof(secret));
	return rc;
}

int
registry_remove(const char *path, const char *device_id, char *err,
                size_t errlen)
{
	return edit_file(path, EDIT_REMOVE, device_id, NULL, 0, err, errlen);
}

int
registry_set(const char *path, const char *device_id, const uint8_t *secret,
             size_t len, char *err, size_t errlen)
{
	return edit_file(path, EDIT_SET, device_id, secret, len, err, errlen);
}
