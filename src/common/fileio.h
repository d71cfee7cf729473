/*
 * Whole files that operators give us (configurations, the device registry,
 * certificates and keys), read with a size limit, and, for files that hold
 * secrets, without leaving copies in freed memory.
 *
 * The caller opens the file itself, so that it can say which step failed
 * and can check the file first (fstat, O_NOFOLLOW ...).
 */
#ifndef NCGRPC_FILEIO_H
#define NCGRPC_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/* The file holds secrets: every copy made while growing is cleansed. */
#define FILEIO_SECRET 0x1

/*
 * Reads fd to its end into a new buffer with a NUL after the last byte
 * (which *outlen does not count).  hint, if not 0, is the size expected
 * (st_size), to read in one allocation.  Returns 0, -EFBIG when there are
 * more than max bytes (only max + 1 are read), -ENOMEM, or -errno of
 * read().  *out and *outlen are set only on success; free *out with
 * fileio_free() and the same flags.
 */
int fileio_read_fd(int fd, size_t max, size_t hint, int flags, char **out,
                   size_t *outlen);

/* Frees a buffer of fileio_read_fd(); cleansed first with FILEIO_SECRET. */
void fileio_free(char *buf, size_t len, int flags);

/*
 * Whether a file can be made at path: 0 when the directory that would hold
 * it may be written to and searched, or, when that directory does not
 * exist, its own parent (the daemons make one level of directory at their
 * first start).  Else -errno of access() (-ENOENT: no such directory;
 * -EROFS: a read-only mount, as /etc is under systemd's ProtectSystem;
 * -EACCES).  For the checks of "-n", which promise that a daemon will make
 * a missing file at its first start.
 */
int fileio_can_create(const char *path);

/*
 * Makes the directory that would hold path, one level (packagers usually
 * provide the rest), with mode.  Returns 1 when it made it, else 0.
 */
int fileio_make_parent(const char *path, mode_t mode);

#endif
