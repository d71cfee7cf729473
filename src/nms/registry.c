/*
 * The device registry: parsing, asynchronous scrypt verification with a
 * success cache, failure throttling, and atomic edits of the file.
 */
#include <sys/file.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "base64.h"
#include "err.h"
#include "buf.h"
#include "fileio.h"
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

/*
 * Cost of new lines.  Not const so that tests can make hashing cheap;
 * nothing else writes them.
 */
static unsigned registry_new_ln = 14;
static unsigned registry_new_r = 8;
static unsigned registry_new_p = 1;

/* Number of scrypt runs, so that tests can see which path a verify took. */
static atomic_uint registry_kdf_calls;

/*
 * Per-process secrets: the HMAC key of the success cache and the seed of
 * the hash tables, which peers must not be able to aim at one bucket.
 */
static uv_once_t registry_once = UV_ONCE_INIT;
static uint8_t registry_mac_key[MAC_LEN];
static uint64_t registry_seed;
static int registry_keys_ok;

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

struct throttle_entry {
	struct throttle_entry *te_next; /* hash chain */
	TAILQ_ENTRY(throttle_entry) te_lru;
	uint64_t te_start; /* window start, ms */
	unsigned te_fails;
	unsigned te_inflight;
	size_t te_keylen;
	uint8_t te_key[];
};

TAILQ_HEAD(throttle_list, throttle_entry);

struct throttle_table {
	struct throttle_entry **tt_tab;
	size_t tt_tabsize;
	size_t tt_count;
	/* By window start, newest first: expired entries gather at the tail. */
	struct throttle_list tt_lru;
	unsigned tt_max_fails;
};

/*
 * Failures count per (device id, peer) and per peer, never per id alone:
 * an attacker elsewhere must not be able to lock a device out.  rt_dev only
 * counts the checks in flight per id.
 */
struct registry_throttle {
	unsigned rt_refs;
	struct throttle_table rt_dev;
	struct throttle_table rt_peer;
	struct throttle_table rt_pair;
	uint64_t rt_window;
	unsigned rt_inflight;      /* per device id */
	unsigned rt_peer_inflight; /* per peer: a whole NAT site is one peer */
	unsigned rt_total_max;     /* scrypt checks queued or running */
	unsigned rt_total;
	size_t rt_max;
	uint64_t (*rt_now)(void *);
	void *rt_now_arg;
};

struct registry_req {
	union {
		uv_work_t u_work;
		uv_timer_t u_timer;
	} rq_u;
	int rq_queued; /* rq_u.u_work is in use, else rq_u.u_timer */
	struct registry *rq_reg;
	struct registry_entry *rq_entry; /* NULL: unknown device */
	struct registry_throttle *rq_thr;
	registry_verify_cb rq_cb;
	void *rq_arg;
	uint8_t *rq_secret;
	size_t rq_len;
	int rq_result;
	int rq_cancelled;
	int rq_has_mac;
	uint8_t rq_mac[MAC_LEN];
	int rq_idvalid;
	size_t rq_idlen;
	char rq_id[REGISTRY_ID_MAX + 1];
	size_t rq_peerlen; /* 0: no peer */
	uint8_t rq_peer[PEERKEY_MAX];
	size_t rq_pairlen; /* 0: no valid id */
	uint8_t rq_pair[PAIRKEY_MAX];
	int rq_counted; /* in the in-flight counts */
};

static void
keys_init(void)
{
	if (RAND_bytes(registry_mac_key, sizeof(registry_mac_key)) == 1 &&
	    RAND_bytes((unsigned char *)&registry_seed,
	               sizeof(registry_seed)) == 1)
		registry_keys_ok = 1;
}

static void
keys_once(void)
{
	uv_once(&registry_once, keys_init);
}

/* FNV-1a from a secret start, finished with a 64-bit mixer. */
static uint64_t
keyhash(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ULL ^ registry_seed;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* --- base64 --- */

/* Unpadded, as registry lines are written; base64url for secrets. */
static void
b64_encode(const uint8_t *in, size_t len, char *out, int url)
{
	base64_encode(in, len, out, url ? BASE64_URL : 0);
}

/*
 * Strict (one spelling per value) and never empty: a salt or hash field
 * with nothing in it is a broken line.  0, or -1.
 */
static int
b64_decode(const char *s, size_t len, uint8_t *out, size_t outmax,
           size_t *outlen)
{
	if (len == 0 ||
	    base64_decode(s, len, out, outmax, outlen, BASE64_STRICT) != 0)
		return -1;
	return 0;
}

/* --- parsing --- */

static int
id_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '@' || c == '-';
}

static int
id_valid(const char *id, size_t len)
{
	size_t i;

	if (len == 0 || len > REGISTRY_ID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!id_char((unsigned char)id[i]))
			return 0;
	return 1;
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Narrows a line to [*pp, *endp) without its CR and leading blanks.
 * Returns 0 for a blank or comment line, 1 otherwise.
 */
static int
line_trim(const char *s, size_t len, const char **pp, const char **endp)
{
	const char *p = s, *end = s + len;

	if (end > p && end[-1] == '\r')
		end--;
	while (p < end && is_blank(*p))
		p++;
	*pp = p;
	*endp = end;
	return p < end && *p != '#';
}

/* Parses 1 to 3 decimal digits. */
static int
parse_small(const char **pp, const char *end, unsigned *v)
{
	const char *p = *pp;
	unsigned n = 0, digits = 0;

	while (p < end && *p >= '0' && *p <= '9' && digits < 4) {
		n = n * 10 + (unsigned)(*p - '0');
		p++;
		digits++;
	}
	if (digits == 0 || digits > 3)
		return -1;
	*v = n;
	*pp = p;
	return 0;
}

static int
expect(const char **pp, const char *end, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(end - *pp) < n || memcmp(*pp, lit, n) != 0)
		return -1;
	*pp += n;
	return 0;
}

static int
kdf_cost_ok(unsigned ln, unsigned r, unsigned p)
{
	return ln >= 10 && ln <= 20 && r >= 1 && r <= 16 && p >= 1 && p <= 16 &&
	       (uint64_t)128 * r * ((uint64_t)1 << ln) <=
	           REGISTRY_SCRYPT_MAXMEM;
}

/* Parses "$scrypt$ln=..,r=..,p=..$SALT$HASH" filling [p, end). */
static int
parse_hash(const char *p, const char *end, struct kdfparams *k,
           const char **msg)
{
	unsigned ln, r, pp;
	const char *d;
	size_t n;

	if (expect(&p, end, "$scrypt$") < 0) {
		*msg = "unknown hash scheme (expected \"$scrypt$\")";
		return -EINVAL;
	}
	if (expect(&p, end, "ln=") < 0 || parse_small(&p, end, &ln) < 0 ||
	    expect(&p, end, ",r=") < 0 || parse_small(&p, end, &r) < 0 ||
	    expect(&p, end, ",p=") < 0 || parse_small(&p, end, &pp) < 0 ||
	    expect(&p, end, "$") < 0) {
		*msg = "malformed scrypt parameters (expected ln=N,r=N,p=N)";
		return -EINVAL;
	}
	if (!kdf_cost_ok(ln, r, pp)) {
		*msg = "scrypt parameters out of range (ln 10..20, r 1..16, "
		       "p 1..16, at most 256 MiB)";
		return -EINVAL;
	}
	k->k_ln = (uint8_t)ln;
	k->k_r = (uint8_t)r;
	k->k_p = (uint8_t)pp;
	if ((d = memchr(p, '$', (size_t)(end - p))) == NULL) {
		*msg = "missing hash after salt";
		return -EINVAL;
	}
	if (b64_decode(p, (size_t)(d - p), k->k_salt, sizeof(k->k_salt), &n) <
	    0) {
		*msg = "bad base64 in salt, or salt over 64 bytes";
		return -EINVAL;
	}
	if (n < KDF_SALT_MIN) {
		*msg = "salt shorter than 16 bytes";
		return -EINVAL;
	}
	k->k_saltlen = (uint8_t)n;
	p = d + 1;
	if (b64_decode(p, (size_t)(end - p), k->k_hash, sizeof(k->k_hash), &n) <
	    0) {
		*msg = "bad base64 in hash, or hash over 64 bytes";
		return -EINVAL;
	}
	if (n < KDF_HASH_MIN) {
		*msg = "hash shorter than 32 bytes";
		return -EINVAL;
	}
	k->k_hashlen = (uint8_t)n;
	return 0;
}

/*
 * Parses one line (without its LF).  Returns 1 for a blank or comment
 * line, 0 with a new entry in *out, -ENOMEM, or -EINVAL with *msg set.
 * Messages never quote the line, which might hold a secret pasted by
 * mistake.
 */
static int
parse_line(const char *s, size_t len, struct registry_entry **out,
           const char **msg)
{
	const char *p, *end, *id, *h;
	struct registry_entry *e;
	struct kdfparams k;
	size_t idlen;
	int rc;

	if (!line_trim(s, len, &p, &end))
		return 1;
	for (id = p; p < end && !is_blank(*p); p++)
		;
	idlen = (size_t)(p - id);
	if (!id_valid(id, idlen)) {
		*msg = "invalid device id (1..255 of A-Z a-z 0-9 . _ : @ -)";
		return -EINVAL;
	}
	while (p < end && is_blank(*p))
		p++;
	if (p == end) {
		*msg = "missing hash after device id";
		return -EINVAL;
	}
	for (h = p; p < end && !is_blank(*p); p++)
		;
	memset(&k, 0, sizeof(k));
	if ((rc = parse_hash(h, p, &k, msg)) < 0)
		return rc;
	while (p < end && is_blank(*p))
		p++;
	if (p < end && *p != '#') {
		*msg = "unexpected text after hash";
		return -EINVAL;
	}
	if ((e = calloc(1, sizeof(*e) + idlen + 1)) == NULL)
		return -ENOMEM;
	e->e_kdf = k;
	e->e_idlen = idlen;
	memcpy(e->e_id, id, idlen);
	*out = e;
	return 0;
}

/* --- the registry --- */

static struct registry_entry *
reg_lookup(const struct registry *reg, const char *id, size_t idlen)
{
	struct registry_entry *e;

	if (reg->r_tabsize == 0)
		return NULL;
	e = reg->r_tab[keyhash(id, idlen) & (reg->r_tabsize - 1)];
	for (; e != NULL; e = e->e_next)
		if (e->e_idlen == idlen && memcmp(e->e_id, id, idlen) == 0)
			return e;
	return NULL;
}

static int
reg_insert(struct registry *reg, struct registry_entry *e)
{
	struct registry_entry **tab, *x, *next;
	size_t size, i, b;

	if (reg->r_count >= reg->r_tabsize) {
		size = reg->r_tabsize == 0 ? 64 : reg->r_tabsize * 2;
		if ((tab = calloc(size, sizeof(*tab))) == NULL)
			return -ENOMEM;
		for (i = 0; i < reg->r_tabsize; i++) {
			for (x = reg->r_tab[i]; x != NULL; x = next) {
				next = x->e_next;
				b = keyhash(x->e_id, x->e_idlen) & (size - 1);
				x->e_next = tab[b];
				tab[b] = x;
			}
		}
		free(reg->r_tab);
		reg->r_tab = tab;
		reg->r_tabsize = size;
	}
	b = keyhash(e->e_id, e->e_idlen) & (reg->r_tabsize - 1);
	e->e_next = reg->r_tab[b];
	reg->r_tab[b] = e;
	reg->r_count++;
	return 0;
}

static void
reg_destroy(struct registry *reg)
{
	struct registry_entry *e, *next;
	size_t i;

	for (i = 0; i < reg->r_tabsize; i++) {
		for (e = reg->r_tab[i]; e != NULL; e = next) {
			next = e->e_next;
			OPENSSL_cleanse(e->e_mac, sizeof(e->e_mac));
			free(e);
		}
	}
	free(reg->r_tab);
	registry_throttle_free(reg->r_throttle);
	free(reg);
}

static void
reg_unref(struct registry *reg)
{
	if (--reg->r_refs == 0)
		reg_destroy(reg);
}

/*
 * Parses a whole file image.  name is the file name for messages.
 */
static int
reg_parse(const char *name, const char *data, size_t len, struct registry **out,
          char *err, size_t errlen)
{
	struct registry *reg;
	struct registry_entry *e, *dup;
	const char *line, *nl, *msg = NULL;
	size_t off = 0, linelen, lineno = 0;
	int rc;

	keys_once();
	if ((reg = calloc(1, sizeof(*reg))) == NULL) {
		ncg_seterr(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	reg->r_refs = 1;
	/* Without devices, unknown ids cost what a new line would. */
	reg->r_dummy.k_ln = (uint8_t)registry_new_ln;
	reg->r_dummy.k_r = (uint8_t)registry_new_r;
	reg->r_dummy.k_p = (uint8_t)registry_new_p;
	while (off < len) {
		line = data + off;
		nl = memchr(line, '\n', len - off);
		linelen = nl != NULL ? (size_t)(nl - line) : len - off;
		off += linelen + (nl != NULL);
		lineno++;
		if (linelen > REGISTRY_LINE_MAX) {
			ncg_seterr(err, errlen,
			           "%s:%zu: line longer than %d bytes", name,
			           lineno, REGISTRY_LINE_MAX);
			rc = -EINVAL;
			goto fail;
		}
		if (memchr(line, '\0', linelen) != NULL) {
			ncg_seterr(err, errlen, "%s:%zu: NUL byte in line",
			           name, lineno);
			rc = -EINVAL;
			goto fail;
		}
		rc = parse_line(line, linelen, &e, &msg);
		if (rc == 1)
			continue;
		if (rc == -ENOMEM) {
			ncg_seterr(err, errlen, "%s:%zu: out of memory", name,
			           lineno);
			goto fail;
		}
		if (rc < 0) {
			ncg_seterr(err, errlen, "%s:%zu: %s", name, lineno,
			           msg);
			goto fail;
		}
		e->e_line = lineno;
		if ((dup = reg_lookup(reg, e->e_id, e->e_idlen)) != NULL) {
			ncg_seterr(
			    err, errlen,
			    "%s:%zu: duplicate device id \"%s\" (first on "
			    "line %zu)",
			    name, lineno, e->e_id, dup->e_line);
			free(e);
			rc = -EINVAL;
			goto fail;
		}
		if (reg->r_count == 0)
			reg->r_dummy = e->e_kdf;
		if ((rc = reg_insert(reg, e)) < 0) {
			free(e);
			ncg_seterr(err, errlen, "%s: out of memory", name);
			goto fail;
		}
	}
	/* The dummy must not match anything: a fresh salt sees to that. */
	reg->r_dummy.k_saltlen = KDF_SALT_NEW;
	if (reg->r_dummy.k_hashlen == 0)
		reg->r_dummy.k_hashlen = KDF_HASH_NEW;
	if (RAND_bytes(reg->r_dummy.k_salt, KDF_SALT_NEW) != 1) {
		ncg_seterr(err, errlen, "%s: no random bytes", name);
		rc = -EIO;
		goto fail;
	}
	*out = reg;
	return 0;
fail:
	reg_destroy(reg);
	return rc;
}

/*
 * Reads a regular file of at most REGISTRY_FILE_MAX bytes into a new
 * NUL-terminated buffer (free it with free()).  *stp, if not NULL,
 * receives its status.
 */
static int
read_file(const char *path, char **bufp, size_t *lenp, struct stat *stp,
          char *err, size_t errlen)
{
	struct stat st;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		ncg_seterr(err, errlen, "%s: not a regular file", path);
		rc = -EINVAL;
	} else {
		/* The size is a hint; one byte more notices a file that grows.
		 */
		rc = fileio_read_fd(fd, REGISTRY_FILE_MAX,
		                    st.st_size > 0 ? (size_t)st.st_size : 0, 0,
		                    bufp, lenp);
		if (rc == -EFBIG)
			ncg_seterr(err, errlen, "%s: larger than %d bytes",
			           path, REGISTRY_FILE_MAX);
		else if (rc != 0)
			ncg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
		else if (stp != NULL)
			*stp = st;
	}
	close(fd);
	return rc;
}

int
registry_load(const char *path, struct registry **out, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	if ((rc = read_file(path, &buf, &len, NULL, err, errlen)) < 0)
		return rc;
	rc = reg_parse(path, buf, len, out, err, errlen);
	free(buf);
	return rc;
}

int
registry_parse(const char *name, const char *data, size_t len,
               struct registry **out, char *err, size_t errlen)
{
	if (len > REGISTRY_FILE_MAX) {
		ncg_seterr(err, errlen, "%s: larger than %d bytes", name,
		           REGISTRY_FILE_MAX);
		return -EFBIG;
	}
	return reg_parse(name, data, len, out, err, errlen);
}

void
registry_free(struct registry *reg)
{
	if (reg != NULL)
		reg_unref(reg);
}

size_t
registry_count(const struct registry *reg)
{
	return reg->r_count;
}

int
registry_has(const struct registry *reg, const char *device_id)
{
	size_t len = strnlen(device_id, REGISTRY_ID_MAX + 1);

	return id_valid(device_id, len) &&
	       reg_lookup(reg, device_id, len) != NULL;
}

void
registry_set_throttle(struct registry *reg, struct registry_throttle *thr)
{
	if (thr != NULL)
		thr->rt_refs++;
	registry_throttle_free(reg->r_throttle);
	reg->r_throttle = thr;
}

/* --- hashing --- */

/*
 * scrypt keys HMAC with the secret, and HMAC pads keys with zeros, so "s"
 * and "s\0" would hash alike.  Refusing NUL bytes (which no device
 * configuration can hold) keeps secrets of different lengths distinct
 * while staying standard scrypt.
 */
static int
secret_valid(const uint8_t *secret, size_t len)
{
	return secret != NULL && len > 0 && len <= REGISTRY_SECRET_MAX &&
	       memchr(secret, 0, len) == NULL;
}

/*
 * Runs scrypt with k's cost and salt into out[outlen].  secret is ours to
 * pass to OpenSSL, which wants a non-const pointer.
 */
static int
kdf_run(const struct kdfparams *k, uint8_t *secret, size_t len, uint8_t *out,
        size_t outlen)
{
	OSSL_PARAM params[7], *pp = params;
	uint8_t salt[KDF_SALT_MAX];
	uint64_t n = (uint64_t)1 << k->k_ln, maxmem;
	uint32_t r = k->k_r, p = k->k_p;
	EVP_KDF_CTX *ctx = NULL;
	EVP_KDF *kdf;
	int rc = -EIO;

	atomic_fetch_add(&registry_kdf_calls, 1);
	/* What OpenSSL allocates: B (128 r p) and V plus XY (128 r (N + 2)). */
	maxmem = (uint64_t)128 * r * (n + 2) + (uint64_t)128 * r * p + 4096;
	memcpy(salt, k->k_salt, k->k_saltlen);
	if ((kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL)) == NULL)
		return -EIO;
	if ((ctx = EVP_KDF_CTX_new(kdf)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	*pp++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
	                                          secret, len);
	*pp++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt,
	                                          k->k_saltlen);
	*pp++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	*pp++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	*pp++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
	*pp++ =
	    OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
	*pp = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, outlen, params) == 1)
		rc = 0;
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return rc;
}

static int
mac_secret(const uint8_t *secret, size_t len, uint8_t *mac)
{
	unsigned int maclen = 0;

	if (!registry_keys_ok)
		return -EIO;
	if (HMAC(EVP_sha256(), registry_mac_key, sizeof(registry_mac_key),
	         secret, len, mac, &maclen) == NULL ||
	    maclen != MAC_LEN)
		return -EIO;
	return 0;
}

int
registry_hash_line(const char *device_id, const uint8_t *secret, size_t len,
                   char **line_out)
{
	struct kdfparams k;
	char salt64[KDF_SALT_NEW * 4 / 3 + 4], hash64[KDF_HASH_NEW * 4 / 3 + 4];
	uint8_t *copy;
	size_t idlen, linelen;
	char *line;
	int rc;

	idlen = strnlen(device_id, REGISTRY_ID_MAX + 1);
	if (!id_valid(device_id, idlen) || !secret_valid(secret, len))
		return -EINVAL;
	memset(&k, 0, sizeof(k));
	k.k_ln = (uint8_t)registry_new_ln;
	k.k_r = (uint8_t)registry_new_r;
	k.k_p = (uint8_t)registry_new_p;
	k.k_saltlen = KDF_SALT_NEW;
	k.k_hashlen = KDF_HASH_NEW;
	if (RAND_bytes(k.k_salt, KDF_SALT_NEW) != 1)
		return -EIO;
	if ((copy = malloc(len)) == NULL)
		return -ENOMEM;
	memcpy(copy, secret, len);
	rc = kdf_run(&k, copy, len, k.k_hash, KDF_HASH_NEW);
	OPENSSL_clear_free(copy, len);
	if (rc < 0)
		return rc;
	b64_encode(k.k_salt, KDF_SALT_NEW, salt64, 0);
	b64_encode(k.k_hash, KDF_HASH_NEW, hash64, 0);
	linelen = idlen + sizeof(" $scrypt$ln=NN,r=NN,p=NN$$") +
	          strlen(salt64) + strlen(hash64);
	if ((line = malloc(linelen)) == NULL)
		return -ENOMEM;
	snprintf(line, linelen, "%s $scrypt$ln=%u,r=%u,p=%u$%s$%s", device_id,
	         registry_new_ln, registry_new_r, registry_new_p, salt64,
	         hash64);
	*line_out = line;
	return 0;
}

/* --- throttling --- */

static uint64_t
clock_default(void *arg)
{
	(void)arg;
	return uv_hrtime() / 1000000;
}

int
registry_throttle_new(struct registry_throttle **out)
{
	struct registry_throttle *thr;

	keys_once();
	if ((thr = calloc(1, sizeof(*thr))) == NULL)
		return -ENOMEM;
	thr->rt_refs = 1;
	TAILQ_INIT(&thr->rt_dev.tt_lru);
	TAILQ_INIT(&thr->rt_peer.tt_lru);
	TAILQ_INIT(&thr->rt_pair.tt_lru);
	thr->rt_dev.tt_max_fails = UINT_MAX;
	thr->rt_pair.tt_max_fails = REGISTRY_THROTTLE_FAILURES;
	thr->rt_peer.tt_max_fails = REGISTRY_THROTTLE_FAILURES;
	thr->rt_total_max = REGISTRY_THROTTLE_TOTAL_INFLIGHT;
	thr->rt_window = REGISTRY_THROTTLE_WINDOW_MS;
	thr->rt_inflight = REGISTRY_THROTTLE_INFLIGHT;
	thr->rt_peer_inflight = REGISTRY_THROTTLE_PEER_INFLIGHT;
	thr->rt_max = REGISTRY_THROTTLE_ENTRIES;
	thr->rt_now = clock_default;
	*out = thr;
	return 0;
}

static void
tt_clear(struct throttle_table *tt)
{
	struct throttle_entry *te;

	while ((te = TAILQ_FIRST(&tt->tt_lru)) != NULL) {
		TAILQ_REMOVE(&tt->tt_lru, te, te_lru);
		free(te);
	}
	free(tt->tt_tab);
	tt->tt_tab = NULL;
	tt->tt_tabsize = tt->tt_count = 0;
}

void
registry_throttle_free(struct registry_throttle *thr)
{
	if (thr == NULL || --thr->rt_refs > 0)
		return;
	tt_clear(&thr->rt_dev);
	tt_clear(&thr->rt_peer);
	tt_clear(&thr->rt_pair);
	free(thr);
}

void
registry_throttle_set_limits(struct registry_throttle *thr,
                             unsigned dev_failures, unsigned peer_failures,
                             uint64_t window_ms, unsigned inflight,
                             size_t max_entries)
{
	if (dev_failures != 0)
		thr->rt_pair.tt_max_fails = dev_failures;
	if (peer_failures != 0)
		thr->rt_peer.tt_max_fails = peer_failures;
	if (window_ms != 0)
		thr->rt_window = window_ms;
	if (inflight != 0)
		thr->rt_inflight = inflight;
	if (max_entries != 0)
		thr->rt_max = max_entries;
}

void
registry_throttle_set_checks(struct registry_throttle *thr,
                             unsigned peer_inflight, unsigned total_inflight)
{
	if (peer_inflight != 0)
		thr->rt_peer_inflight = peer_inflight;
	if (total_inflight != 0)
		thr->rt_total_max = total_inflight;
}

unsigned
registry_throttle_inflight(const struct registry_throttle *thr)
{
	return thr->rt_total;
}

void
registry_throttle_set_clock(struct registry_throttle *thr,
                            uint64_t (*now_ms)(void *arg), void *arg)
{
	thr->rt_now = now_ms != NULL ? now_ms : clock_default;
	thr->rt_now_arg = now_ms != NULL ? arg : NULL;
}

size_t
registry_throttle_count(const struct registry_throttle *thr)
{
	return thr->rt_dev.tt_count + thr->rt_peer.tt_count +
	       thr->rt_pair.tt_count;
}

static struct throttle_entry **
tt_slot(struct throttle_table *tt, const uint8_t *key, size_t keylen)
{
	struct throttle_entry **tp;

	if (tt->tt_tabsize == 0)
		return NULL;
	tp = &tt->tt_tab[keyhash(key, keylen) & (tt->tt_tabsize - 1)];
	for (; *tp != NULL; tp = &(*tp)->te_next)
		if ((*tp)->te_keylen == keylen &&
		    memcmp((*tp)->te_key, key, keylen) == 0)
			return tp;
	return tp;
}

static struct throttle_entry *
tt_lookup(struct throttle_table *tt, const uint8_t *key, size_t keylen)
{
	struct throttle_entry **tp = tt_slot(tt, key, keylen);

	return tp != NULL ? *tp : NULL;
}

static void
tt_remove(struct throttle_table *tt, struct throttle_entry *te)
{
	struct throttle_entry **tp = tt_slot(tt, te->te_key, te->te_keylen);

	*tp = te->te_next;
	TAILQ_REMOVE(&tt->tt_lru, te, te_lru);
	tt->tt_count--;
	free(te);
}

static int
tt_grow(struct throttle_table *tt)
{
	struct throttle_entry **tab, *te;
	size_t size, b;

	size = tt->tt_tabsize == 0 ? 64 : tt->tt_tabsize * 2;
	if ((tab = calloc(size, sizeof(*tab))) == NULL)
		return -ENOMEM;
	/* Every entry is on the list, which is easier to walk than chains. */
	TAILQ_FOREACH(te, &tt->tt_lru, te_lru)
	{
		b = keyhash(te->te_key, te->te_keylen) & (size - 1);
		te->te_next = tab[b];
		tab[b] = te;
	}
	free(tt->tt_tab);
	tt->tt_tab = tab;
	tt->tt_tabsize = size;
	return 0;
}

/* Starts a new window for te if its last one has passed. */
static void
tt_refresh(struct registry_throttle *thr, struct throttle_table *tt,
           struct throttle_entry *te, uint64_t now)
{
	if (now - te->te_start < thr->rt_window)
		return;
	te->te_fails = 0;
	te->te_start = now;
	TAILQ_REMOVE(&tt->tt_lru, te, te_lru);
	TAILQ_INSERT_HEAD(&tt->tt_lru, te, te_lru);
}

/*
 * Finds or makes the entry for key.  Expired entries are dropped from the
 * tail first; a full table then forgets the oldest window.  Returns NULL
 * when out of memory, and the throttle then forgets this attempt rather
 * than failing the verify.
 */
static struct throttle_entry *
tt_get(struct registry_throttle *thr, struct throttle_table *tt,
       const uint8_t *key, size_t keylen, uint64_t now)
{
	struct throttle_entry *te;
	size_t b;

	if ((te = tt_lookup(tt, key, keylen)) != NULL) {
		tt_refresh(thr, tt, te, now);
		return te;
	}
	while ((te = TAILQ_LAST(&tt->tt_lru, throttle_list)) != NULL &&
	       (tt->tt_count >= thr->rt_max ||
	        (now - te->te_start >= thr->rt_window && te->te_inflight == 0)))
		tt_remove(tt, te);
	if (tt->tt_count >= tt->tt_tabsize && tt_grow(tt) < 0)
		return NULL;
	if ((te = calloc(1, sizeof(*te) + keylen)) == NULL)
		return NULL;
	te->te_start = now;
	te->te_keylen = keylen;
	memcpy(te->te_key, key, keylen);
	b = keyhash(key, keylen) & (tt->tt_tabsize - 1);
	te->te_next = tt->tt_tab[b];
	tt->tt_tab[b] = te;
	TAILQ_INSERT_HEAD(&tt->tt_lru, te, te_lru);
	tt->tt_count++;
	return te;
}

static uint64_t
thr_now(const struct registry_throttle *thr)
{
	return thr->rt_now(thr->rt_now_arg);
}

/*
 * Returns -EAGAIN if key has used up its failures in the current window,
 * -EBUSY if the checks in flight could use up the rest (they are counted
 * as if they failed, so that concurrency does not buy extra guesses), or 0.
 */
static int
tt_failed_out(struct registry_throttle *thr, struct throttle_table *tt,
              const uint8_t *key, size_t keylen, uint64_t now)
{
	struct throttle_entry *te;

	if (keylen == 0 || (te = tt_lookup(tt, key, keylen)) == NULL)
		return 0;
	tt_refresh(thr, tt, te, now);
	if (te->te_fails >= tt->tt_max_fails)
		return -EAGAIN;
	if (te->te_inflight > 0 &&
	    te->te_fails + te->te_inflight >= tt->tt_max_fails)
		return -EBUSY;
	return 0;
}

static int
tt_busy(struct throttle_table *tt, unsigned limit, const uint8_t *key,
        size_t keylen)
{
	struct throttle_entry *te;

	if (keylen == 0 || (te = tt_lookup(tt, key, keylen)) == NULL)
		return 0;
	return te->te_inflight >= limit;
}

static void
tt_fail(struct registry_throttle *thr, struct throttle_table *tt,
        const uint8_t *key, size_t keylen, uint64_t now)
{
	struct throttle_entry *te;

	if (keylen > 0 && (te = tt_get(thr, tt, key, keylen, now)) != NULL)
		te->te_fails++;
}

static void
tt_inflight(struct registry_throttle *thr, struct throttle_table *tt,
            const uint8_t *key, size_t keylen, int delta, uint64_t now)
{
	struct throttle_entry *te;

	if (keylen == 0)
		return;
	if (delta > 0) {
		if ((te = tt_get(thr, tt, key, keylen, now)) != NULL)
			te->te_inflight++;
	} else if ((te = tt_lookup(tt, key, keylen)) != NULL &&
	           te->te_inflight > 0) {
		/* The entry may have been forgotten and made anew meanwhile. */
		if (--te->te_inflight == 0 && te->te_fails == 0)
			tt_remove(tt, te);
	}
}

static void
tt_reset(struct throttle_table *tt, const uint8_t *key, size_t keylen)
{
	struct throttle_entry *te;

	if (keylen == 0 || (te = tt_lookup(tt, key, keylen)) == NULL)
		return;
	te->te_fails = 0;
	if (te->te_inflight == 0)
		tt_remove(tt, te);
}

/*
 * Makes the throttle key of a peer: 4 bytes for IPv4 (also when mapped into
 * IPv6), the /64 prefix for IPv6, else the text itself, truncated.
 */
static size_t
peer_key(const char *peer, uint8_t *key)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *h = peer, *e, *c;
	uint8_t a[16];
	size_t len;

	if (*peer == '[' && (e = strchr(peer, ']')) != NULL) {
		h = peer + 1;
		len = (size_t)(e - h);
	} else if ((c = strchr(peer, ':')) != NULL &&
	           strchr(c + 1, ':') == NULL) {
		len = (size_t)(c - peer);
	} else {
		len = strlen(peer);
	}
	if ((e = memchr(h, '%', len)) != NULL) /* a zone id */
		len = (size_t)(e - h);
	if (len < sizeof(host)) {
		memcpy(host, h, len);
		host[len] = '\0';
		if (inet_pton(AF_INET, host, a) == 1) {
			key[0] = 4;
			memcpy(key + 1, a, 4);
			return 5;
		}
		if (inet_pton(AF_INET6, host, a) == 1) {
			static const uint8_t mapped[12] = {
			    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
			if (memcmp(a, mapped, sizeof(mapped)) == 0) {
				key[0] = 4;
				memcpy(key + 1, a + 12, 4);
				return 5;
			}
			key[0] = 6;
			memcpy(key + 1, a, 8);
			return 9;
		}
	}
	len = strlen(peer);
	if (len > PEERKEY_MAX - 1)
		len = PEERKEY_MAX - 1;
	key[0] = 'S';
	memcpy(key + 1, peer, len);
	return len + 1;
}

/* The throttle key of (peer, device id). */
static size_t
pair_key(const struct registry_req *req, uint8_t *key)
{
	if (!req->rq_idvalid)
		return 0;
	memcpy(key, req->rq_peer, req->rq_peerlen);
	memcpy(key + req->rq_peerlen, req->rq_id, req->rq_idlen);
	return req->rq_peerlen + req->rq_idlen;
}

/* --- verification --- */

static void
req_free(struct registry_req *req)
{
	if (req->rq_secret != NULL)
		OPENSSL_clear_free(req->rq_secret, req->rq_len);
	OPENSSL_cleanse(req->rq_mac, sizeof(req->rq_mac));
	registry_throttle_free(req->rq_thr);
	reg_unref(req->rq_reg);
	free(req);
}

static const uint8_t *
req_devkey(const struct registry_req *req, size_t *len)
{
	*len = req->rq_idvalid ? req->rq_idlen : 0;
	return (const uint8_t *)req->rq_id;
}

/* Counts the outcome of an attempt against its device id and peer. */
static void
req_account(struct registry_req *req, int result)
{
	struct registry_throttle *thr = req->rq_thr;
	uint64_t now;

	if (thr == NULL)
		return;
	now = thr_now(thr);
	if (result == 0) {
		tt_reset(&thr->rt_pair, req->rq_pair, req->rq_pairlen);
	} else if (result == -EACCES || result == -ENOENT) {
		tt_fail(thr, &thr->rt_pair, req->rq_pair, req->rq_pairlen, now);
		tt_fail(thr, &thr->rt_peer, req->rq_peer, req->rq_peerlen, now);
	}
}

/* Counts req in (delta 1) or out of (-1) the checks in flight. */
static void
req_inflight(struct registry_req *req, int delta)
{
	struct registry_throttle *thr = req->rq_thr;
	const uint8_t *dk;
	size_t dlen;
	uint64_t now;

	if (thr == NULL || (delta > 0) == req->rq_counted)
		return;
	req->rq_counted = delta > 0;
	now = thr_now(thr);
	dk = req_devkey(req, &dlen);
	tt_inflight(thr, &thr->rt_dev, dk, dlen, delta, now);
	tt_inflight(thr, &thr->rt_peer, req->rq_peer, req->rq_peerlen, delta,
	            now);
	tt_inflight(thr, &thr->rt_pair, req->rq_pair, req->rq_pairlen, delta,
	            now);
	if (delta > 0)
		thr->rt_total++;
	else if (thr->rt_total > 0)
		thr->rt_total--;
}

static void
req_timer_close(uv_handle_t *h)
{
	req_free(REG_CONTAINER_OF(h, struct registry_req, rq_u.u_timer));
}

static void
req_timer(uv_timer_t *t)
{
	struct registry_req *req;

	req = REG_CONTAINER_OF(t, struct registry_req, rq_u.u_timer);
	req->rq_cb(req->rq_arg,
	           req->rq_cancelled ? -ECANCELED : req->rq_result);
	uv_close((uv_handle_t *)t, req_timer_close);
}

/* Threadpool: the only place scrypt runs. */
static void
req_work(uv_work_t *w)
{
	struct registry_req *req;
	const struct kdfparams *k;
	uint8_t out[KDF_HASH_MAX];
	int rc;

	req = REG_CONTAINER_OF(w, struct registry_req, rq_u.u_work);
	k = req->rq_entry != NULL ? &req->rq_entry->e_kdf
	                          : &req->rq_reg->r_dummy;
	rc = kdf_run(k, req->rq_secret, req->rq_len, out, k->k_hashlen);
	if (rc < 0)
		req->rq_result = rc;
	else if (req->rq_entry == NULL)
		req->rq_result = -ENOENT;
	else if (CRYPTO_memcmp(out, k->k_hash, k->k_hashlen) != 0)
		req->rq_result = -EACCES;
	else {
		req->rq_result = 0;
		req->rq_has_mac =
		    mac_secret(req->rq_secret, req->rq_len, req->rq_mac) == 0;
	}
	OPENSSL_cleanse(out, sizeof(out));
	OPENSSL_cleanse(req->rq_secret, req->rq_len);
}

static void
req_after_work(uv_work_t *w, int status)
{
	struct registry_req *req;
	int result;

	req = REG_CONTAINER_OF(w, struct registry_req, rq_u.u_work);
	/*
	 * An attempt that ran counts even when cancelled: otherwise hanging
	 * up after sending a guess would dodge the throttle.
	 */
	if (status == 0) {
		req_account(req, req->rq_result);
		if (req->rq_result == 0 && req->rq_has_mac) {
			memcpy(req->rq_entry->e_mac, req->rq_mac, MAC_LEN);
			req->rq_entry->e_cached = 1;
		}
	}
	req_inflight(req, -1);
	if (status != 0 || req->rq_cancelled)
		result = -ECANCELED;
	else
		result = req->rq_result;
	req->rq_cb(req->rq_arg, result);
	req_free(req);
}

/*
 * Settles req at once when no scrypt is needed, returning 1 with
 * rq_result set; 0 sends it to the threadpool.  Also -EBUSY (returned as
 * 1) when the KDF slots of this id or peer are all busy.
 */
static int
req_decide(struct registry_req *req, const uint8_t *secret, size_t len)
{
	struct registry_throttle *thr = req->rq_thr;
	struct registry_entry *e = req->rq_entry;
	uint8_t mac[MAC_LEN];
	const uint8_t *dk;
	size_t dlen;
	uint64_t now = thr != NULL ? thr_now(thr) : 0;
	int hit;

	dk = req_devkey(req, &dlen);
	/*
	 * The failures of this peer, and of this peer with this id, come
	 * before everything else.  Failures of the id from elsewhere do not
	 * count here: the real device, from its own address, still gets in.
	 */
	if (thr != NULL) {
		int a = tt_failed_out(thr, &thr->rt_pair, req->rq_pair,
		                      req->rq_pairlen, now);
		int b = tt_failed_out(thr, &thr->rt_peer, req->rq_peer,
		                      req->rq_peerlen, now);

		if (a == -EAGAIN || b == -EAGAIN || a == -EBUSY ||
		    b == -EBUSY) {
			req->rq_result =
			    a == -EAGAIN || b == -EAGAIN ? -EAGAIN : -EBUSY;
			return 1;
		}
	}
	/* Nothing secret is learnt from these failing fast. */
	if (!req->rq_idvalid) {
		req->rq_result = -ENOENT;
		return 1;
	}
	if (!secret_valid(secret, len)) {
		req->rq_result = e != NULL ? -EACCES : -ENOENT;
		return 1;
	}
	/*
	 * A cache miss is not a failure: the secret may be right but not
	 * yet seen, so scrypt decides.  Only a right secret is faster.
	 */
	if (e != NULL && e->e_cached && mac_secret(secret, len, mac) == 0) {
		hit = CRYPTO_memcmp(mac, e->e_mac, MAC_LEN) == 0;
		OPENSSL_cleanse(mac, sizeof(mac));
		if (hit) {
			req->rq_result = 0;
			return 1;
		}
	}
	if (thr != NULL && (tt_busy(&thr->rt_dev, thr->rt_inflight, dk, dlen) ||
	                    tt_busy(&thr->rt_peer, thr->rt_peer_inflight,
	                            req->rq_peer, req->rq_peerlen) ||
	                    thr->rt_total >= thr->rt_total_max)) {
		/* Not a failure: the device is told to come back later. */
		req->rq_result = -EBUSY;
		return 1;
	}
	return 0;
}

int
registry_verify(struct registry *reg, uv_loop_t *loop, const char *device_id,
                const uint8_t *secret, size_t len, const char *peer_addr,
                registry_verify_cb cb, void *arg, struct registry_req **out)
{
	struct registry_req *req;
	struct registry_throttle *thr;
	int rc;

	if (reg == NULL || loop == NULL || device_id == NULL || cb == NULL ||
	    (secret == NULL && len > 0))
		return -EINVAL;
	if ((req = calloc(1, sizeof(*req))) == NULL)
		return -ENOMEM;
	req->rq_reg = reg;
	req->rq_cb = cb;
	req->rq_arg = arg;
	req->rq_idlen = strnlen(device_id, REGISTRY_ID_MAX + 1);
	if ((req->rq_idvalid = id_valid(device_id, req->rq_idlen))) {
		memcpy(req->rq_id, device_id, req->rq_idlen);
		req->rq_entry = reg_lookup(reg, req->rq_id, req->rq_idlen);
	}
	if (peer_addr != NULL)
		req->rq_peerlen = peer_key(peer_addr, req->rq_peer);
	req->rq_pairlen = pair_key(req, req->rq_pair);
	thr = req->rq_thr = reg->r_throttle;

	if (req_decide(req, secret, len)) {
		if ((rc = uv_timer_init(loop, &req->rq_u.u_timer)) < 0) {
			free(req);
			return rc;
		}
		/* From here on, req_free() and the close callback own req. */
		reg->r_refs++;
		if (thr != NULL)
			thr->rt_refs++;
		(void)uv_timer_start(&req->rq_u.u_timer, req_timer, 0, 0);
		if (req->rq_result != -EAGAIN && req->rq_result != -EBUSY)
			req_account(req, req->rq_result);
	} else {
		if ((req->rq_secret = malloc(len)) == NULL) {
			free(req);
			return -ENOMEM;
		}
		memcpy(req->rq_secret, secret, len);
		req->rq_len = len;
		rc = uv_queue_work(loop, &req->rq_u.u_work, req_work,
		                   req_after_work);
		if (rc < 0) {
			OPENSSL_clear_free(req->rq_secret, len);
			free(req);
			return rc;
		}
		req->rq_queued = 1;
		reg->r_refs++;
		if (thr != NULL) {
			thr->rt_refs++;
			req_inflight(req, 1);
		}
	}
	if (out != NULL)
		*out = req;
	return 0;
}

void
registry_cancel(struct registry_req *req)
{
	req->rq_cancelled = 1;
	/* Fails harmlessly once the work has started; it then just ends. */
	if (req->rq_queued)
		uv_cancel((uv_req_t *)&req->rq_u.u_work);
}

/* --- editing the file --- */

enum edit_op { EDIT_ADD, EDIT_REMOVE, EDIT_SET };

/* Returns 1 if the line is the device line of id. */
static int
line_is(const char *s, size_t len, const char *id, size_t idlen)
{
	const char *p, *end, *t;

	if (!line_trim(s, len, &p, &end))
		return 0;
	for (t = p; t < end && !is_blank(*t); t++)
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
	if (!id_valid(id, idlen)) {
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
	rc = read_file(path, &data, &datalen, &st, err, errlen);
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
registry_add(const char *path, const char *device_id, char *secret_out,
             size_t secret_out_len, char *err, size_t errlen)
{
	uint8_t raw[GEN_SECRET_RAW];
	char secret[REGISTRY_SECRET_BUFSZ];
	int rc;

	if (secret_out_len < REGISTRY_SECRET_BUFSZ) {
		ncg_seterr(err, errlen, "secret buffer too small");
		return -ENOBUFS;
	}
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		ncg_seterr(err, errlen, "no random bytes for a secret");
		return -EIO;
	}
	b64_encode(raw, sizeof(raw), secret, 1);
	OPENSSL_cleanse(raw, sizeof(raw));
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
