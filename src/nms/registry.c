/*
 * The device registry, part 1 of 3: parsing the file, lookup by id, and
 * the scrypt line format (hashing).  Verification and throttling are in
 * registry_verify.c, atomic edits of the file in registry_edit.c; the
 * contract of all three is registry.h.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
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
#include "fileio.h"
#include "registry_int.h"

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

static void
keys_init(void)
{
	if (RAND_bytes(registry_mac_key, sizeof(registry_mac_key)) == 1 &&
	    RAND_bytes((unsigned char *)&registry_seed,
	               sizeof(registry_seed)) == 1)
		registry_keys_ok = 1;
}

void
reg_keys_once(void)
{
	uv_once(&registry_once, keys_init);
}

/* FNV-1a from a secret start, finished with a 64-bit mixer. */
uint64_t
reg_keyhash(const void *p, size_t len)
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
void
reg_b64_encode(const uint8_t *in, size_t len, char *out, int url)
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

int
reg_id_valid(const char *id, size_t len)
{
	size_t i;

	if (len == 0 || len > REGISTRY_ID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!id_char((unsigned char)id[i]))
			return 0;
	return 1;
}

int
reg_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Narrows a line to [*pp, *endp) without its CR and leading blanks.
 * Returns 0 for a blank or comment line, 1 otherwise.
 */
int
reg_line_trim(const char *s, size_t len, const char **pp, const char **endp)
{
	const char *p = s, *end = s + len;

	if (end > p && end[-1] == '\r')
		end--;
	while (p < end && reg_is_blank(*p))
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

	if (!reg_line_trim(s, len, &p, &end))
		return 1;
	for (id = p; p < end && !reg_is_blank(*p); p++)
		;
	idlen = (size_t)(p - id);
	if (!reg_id_valid(id, idlen)) {
		*msg = "invalid device id (1..255 of A-Z a-z 0-9 . _ : @ -)";
		return -EINVAL;
	}
	while (p < end && reg_is_blank(*p))
		p++;
	if (p == end) {
		*msg = "missing hash after device id";
		return -EINVAL;
	}
	for (h = p; p < end && !reg_is_blank(*p); p++)
		;
	memset(&k, 0, sizeof(k));
	if ((rc = parse_hash(h, p, &k, msg)) < 0)
		return rc;
	while (p < end && reg_is_blank(*p))
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

struct registry_entry *
reg_lookup(const struct registry *reg, const char *id, size_t idlen)
{
	struct registry_entry *e;

	if (reg->r_tabsize == 0)
		return NULL;
	e = reg->r_tab[reg_keyhash(id, idlen) & (reg->r_tabsize - 1)];
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
				b = reg_keyhash(x->e_id, x->e_idlen) &
				    (size - 1);
				x->e_next = tab[b];
				tab[b] = x;
			}
		}
		free(reg->r_tab);
		reg->r_tab = tab;
		reg->r_tabsize = size;
	}
	b = reg_keyhash(e->e_id, e->e_idlen) & (reg->r_tabsize - 1);
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

void
reg_unref(struct registry *reg)
{
	if (--reg->r_refs == 0)
		reg_destroy(reg);
}

/*
 * Parses a whole file image.  name is the file name for messages.
 */
int
reg_parse(const char *name, const char *data, size_t len, struct registry **out,
          char *err, size_t errlen)
{
	struct registry *reg;
	struct registry_entry *e, *dup;
	const char *line, *nl, *msg = NULL;
	size_t off = 0, linelen, lineno = 0;
	int rc;

	reg_keys_once();
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
int
reg_read_file(const char *path, char **bufp, size_t *lenp, struct stat *stp,
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

	if ((rc = reg_read_file(path, &buf, &len, NULL, err, errlen)) < 0)
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

	return reg_id_valid(device_id, len) &&
	       reg_lookup(reg, device_id, len) != NULL;
}

/* --- hashing --- */

/*
 * scrypt keys HMAC with the secret, and HMAC pads keys with zeros, so "s"
 * and "s\0" would hash alike.  Refusing NUL bytes (which no device
 * configuration can hold) keeps secrets of different lengths distinct
 * while staying standard scrypt.
 */
int
reg_secret_valid(const uint8_t *secret, size_t len)
{
	return secret != NULL && len > 0 && len <= REGISTRY_SECRET_MAX &&
	       memchr(secret, 0, len) == NULL;
}

/*
 * Runs scrypt with k's cost and salt into out[outlen].  secret is ours to
 * pass to OpenSSL, which wants a non-const pointer.
 */
int
reg_kdf_run(const struct kdfparams *k, uint8_t *secret, size_t len,
            uint8_t *out, size_t outlen)
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

int
reg_mac_secret(const uint8_t *secret, size_t len, uint8_t *mac)
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
	if (!reg_id_valid(device_id, idlen) || !reg_secret_valid(secret, len))
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
	rc = reg_kdf_run(&k, copy, len, k.k_hash, KDF_HASH_NEW);
	OPENSSL_clear_free(copy, len);
	if (rc < 0)
		return rc;
	reg_b64_encode(k.k_salt, KDF_SALT_NEW, salt64, 0);
	reg_b64_encode(k.k_hash, KDF_HASH_NEW, hash64, 0);
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
