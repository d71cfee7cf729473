/*
 * The TLS session ticket key file; see ticketkey.h.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "err.h"
#include "fileio.h"
#include "ticketkey.h"

static int
key_make(const char *path, uint8_t *key, char *err, size_t errlen)
{
	ssize_t n;
	int fd, rc;

	if (RAND_bytes(key, TICKETKEY_LEN) != 1) {
		ncg_seterr(err, errlen, "%s: no random bytes", path);
		return -EIO;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	          0600);
	if (fd < 0)
		return -errno;
	n = write(fd, key, TICKETKEY_LEN);
	rc = n == TICKETKEY_LEN ? 0 : n < 0 ? -errno : -EIO;
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	(void)close(fd);
	if (rc != 0) {
		(void)unlink(path);
		ncg_seterr(err, errlen, "cannot write %s: %s", path,
		           strerror(-rc));
	}
	return rc;
}

static int
key_read(const char *path, uint8_t *key, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ncg_seterr(err, errlen, "%s is not a regular file", path);
		rc = -EINVAL;
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		ncg_seterr(err, errlen,
		           "%s may be read by others (mode %04o): it must be "
		           "0600 (chmod 600 %s)",
		           path, (unsigned)(st.st_mode & 07777), path);
		rc = -EPERM;
		goto out;
	}
	rc = fileio_read_fd(fd, TICKETKEY_LEN, (size_t)st.st_size,
	                    FILEIO_SECRET, &buf, &len);
	if (rc == -EFBIG || (rc == 0 && len != TICKETKEY_LEN)) {
		ncg_seterr(err, errlen,
		           "%s is not a ticket key: it must hold exactly %d "
		           "bytes (delete it to make a new one)",
		           path, TICKETKEY_LEN);
		rc = -EINVAL;
	} else if (rc == 0)
		memcpy(key, buf, TICKETKEY_LEN);
	if (buf != NULL)
		fileio_free(buf, len, FILEIO_SECRET);
out:
	(void)close(fd);
	return rc;
}

int
ticketkey_load(const char *path, uint8_t *key, int *made, char *err,
               size_t errlen)
{
	int rc, tries;

	*made = 0;
	err[0] = '\0';
	/* Two starts at once: one makes the file, the other reads it. */
	for (tries = 0; tries < 2; tries++) {
		if ((rc = key_read(path, key, err, errlen)) != -ENOENT)
			break;
		if ((rc = key_make(path, key, err, errlen)) == 0) {
			*made = 1;
			break;
		}
		if (rc != -EEXIST)
			break;
	}
	if (rc != 0 && err[0] == '\0')
		ncg_seterr(err, errlen, "cannot read %s: %s", path,
		           strerror(-rc));
	if (rc != 0)
		OPENSSL_cleanse(key, TICKETKEY_LEN);
	return rc;
}

int
ticketkey_proof_key(const uint8_t *key, uint8_t *out)
{
	static const char label[] = "ncgrpc resumption proof key";
	unsigned int len = 0;

	if (HMAC(EVP_sha256(), key, TICKETKEY_LEN, (const uint8_t *)label,
	         sizeof(label) - 1, out, &len) == NULL ||
	    len != TICKETKEY_PROOF_LEN)
		return -EIO;
	return 0;
}
