/*
 * ncgrpc-sshd's authorized_keys: which public keys may log in, the operator
 * each one belongs to, the devices it may reach and the session types it
 * may open.  Also the SSH user name, which names the device.
 *
 * The file is OpenSSH's authorized_keys format, one key a line:
 *
 *   OPTIONS TYPE BASE64 [COMMENT]
 *
 * "#" starts a comment line; blank lines are ignored.  OPTIONS is a
 * comma-separated list without spaces outside quotes, of:
 *
 *   operator="NAME"          required: who holds the key (audit log)
 *   devices="PAT,PAT,..."    required: device ids, "*" and "?" wildcards
 *   sessions="TYPE,..."      netconf, shell, exec; default all three
 *
 * Inside quotes, \" is a quote and \\ a backslash.  Any other option, a key
 * type libssh does not know, a malformed key or a key listed twice makes
 * the whole file invalid: a reload then keeps the previous keys.
 *
 * Nothing here logs: errors come back as "file:line: message" in the
 * caller's buffer (err, errlen bytes, always NUL-terminated if errlen > 0).
 */
#ifndef NCGRPC_SSHD_AKEYS_H
#define NCGRPC_SSHD_AKEYS_H

#include <stddef.h>

#include <libssh/libssh.h>

/* Input limits. */
#define AKEYS_MAX_FILE     (1024 * 1024) /* bytes in the file */
#define AKEYS_MAX_LINE     16384         /* bytes in a line */
#define AKEYS_MAX_KEYS     10000
#define AKEYS_MAX_OPERATOR 64  /* bytes in an operator name */
#define AKEYS_MAX_DEVICE   255 /* bytes in a device id or pattern */
#define AKEYS_MAX_PATTERNS 64  /* device patterns of a key */

/* Session types, for ak_sessions and akeys_allows(). */
#define AKEYS_NETCONF 0x1
#define AKEYS_SHELL   0x2
#define AKEYS_EXEC    0x4
#define AKEYS_ALL     (AKEYS_NETCONF | AKEYS_SHELL | AKEYS_EXEC)

struct akey {
	char ak_operator[AKEYS_MAX_OPERATOR + 1];
	char **ak_devices; /* patterns */
	size_t ak_ndevices;
	unsigned ak_sessions; /* AKEYS_* bits */
	ssh_key ak_key;
	char ak_fp[128]; /* "ssh-ed25519 SHA256:..." for the audit log */
	unsigned ak_line;
};

/* A parsed file; owns everything it points to. */
struct akeys {
	struct akey *as_keys;
	size_t as_nkeys;
};

/*
 * Parses text[0..len) (need not be NUL-terminated; a NUL inside is an
 * error); name labels messages.  Returns 0 and sets *out (free with
 * akeys_free()), or -EINVAL (malformed, with a message), -EFBIG (more
 * than AKEYS_MAX_FILE bytes or AKEYS_MAX_KEYS keys) or -ENOMEM.
 */
int akeys_parse(const char *name, const char *text, size_t len,
                struct akeys **out, char *err, size_t errlen);

/*
 * Reads and parses the file at path.  Returns as akeys_parse(), or the
 * negated errno of open() or read().
 */
int akeys_load(const char *path, struct akeys **out, char *err, size_t errlen);

void akeys_free(struct akeys *as);

/* The entry of key, or NULL when the key is not listed. */
const struct akey *akeys_find(const struct akeys *as, const ssh_key key);

/* The entry whose ak_fp is fp, or NULL when no key has it. */
const struct akey *akeys_find_fp(const struct akeys *as, const char *fp);

/* The AKEYS_* bits ak allows on device. */
unsigned akeys_rights(const struct akey *ak, const char *device);

/*
 * Nonzero if ak may open a session of type (one AKEYS_* bit) on device.
 */
int akeys_allows(const struct akey *ak, const char *device, unsigned type);

/*
 * Nonzero if s is a device id: 1..AKEYS_MAX_DEVICE bytes of letters,
 * digits and ". _ : @ -" (the registry's rule).
 */
int akeys_device_valid(const char *s);

/*
 * Splits an SSH user name, "DEVICE" or "OPERATOR+DEVICE", into op (which
 * holds AKEYS_MAX_OPERATOR + 1 bytes; "" when not given) and dev (which
 * holds AKEYS_MAX_DEVICE + 1 bytes).  Returns 0, or -EINVAL when either
 * part is empty, too long or holds other bytes; op and dev are then
 * unchanged.
 */
int akeys_parse_user(const char *user, char *op, char *dev);

#endif
