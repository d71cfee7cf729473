/*
 * Internals of the device registry, shared by its three parts:
 *  - registry.c: parsing the file, lookup, and the scrypt line format;
 *  - registry_verify.c: verification in the threadpool, and throttling;
 *  - registry_edit.c: atomic edits of the file (add, remove, set).
 * Nothing outside src/nms/registry*.c includes this file; the contract is
 * registry.h.
 */
#ifndef NCGRPC_REGISTRY_INT_H
#define NCGRPC_REGISTRY_INT_H

#include <sys/stat.h>

#include <stddef.h>
#include <stdint.h>

#include "registry.h"

#define REG_CONTAINER_OF(p, type, member)                                      \
	((type *)(void *)((char *)(p)-offsetof(type, member)))

#define KDF_SALT_MIN   16
#define KDF_SALT_MAX   64
#define KDF_HASH_MIN   32
#define KDF_HASH_MAX   64
#define KDF_SALT_NEW   16
#define KDF_HASH_NEW   32
#define MAC_LEN        32
#define PEERKEY_MAX    65 /* one type byte, then up to 64 bytes */
#define PAIRKEY_MAX    (PEERKEY_MAX + REGISTRY_ID_MAX)
#define GEN_SECRET_RAW 24 /* base64url of 24 bytes is 32 characters */

struct kdfparams {
	uint8_t k_ln, k_r, k_p;
	uint8_t k_saltlen, k_hashlen;
	uint8_t k_salt[KDF_SALT_MAX];
	uint8_t k_hash[KDF_HASH_MAX];
};

struct registry_entry {
	struct registry_entry *e_next; /* hash chain */
	struct kdfparams e_kdf;
	int e_cached; /* e_mac holds HMAC(key, last good secret) */
	uint8_t e_mac[MAC_LEN];
	size_t e_line;
	size_t e_idlen;
	char e_id[]; /* NUL terminated */
};

struct registry {
	unsigned r_refs; /* the owner's, plus one per request in flight */
	struct registry_entry **r_tab;
	size_t r_tabsize; /* power of two, or 0 */
	size_t r_count;
	struct kdfparams r_dummy; /* what unknown ids cost */
	struct registry_throttle *r_throttle;
};

/* registry.c */
void reg_keys_once(void);
uint64_t reg_keyhash(const void *p, size_t len);
void reg_b64_encode(const uint8_t *in, size_t len, char *out, int url);
int reg_id_valid(const char *id, size_t len);
int reg_is_blank(char c);
int reg_line_trim(const char *s, size_t len, const char **pp,
                  const char **endp);
struct registry_entry *reg_lookup(const struct registry *reg, const char *id,
                                  size_t idlen);
void reg_unref(struct registry *reg);
int reg_parse(const char *name, const char *data, size_t len,
              struct registry **out, char *err, size_t errlen);
int reg_read_file(const char *path, char **bufp, size_t *lenp, struct stat *stp,
                  char *err, size_t errlen);
int reg_secret_valid(const uint8_t *secret, size_t len);
int reg_kdf_run(const struct kdfparams *k, uint8_t *secret, size_t len,
                uint8_t *out, size_t outlen);
int reg_mac_secret(const uint8_t *secret, size_t len, uint8_t *mac);

#endif
