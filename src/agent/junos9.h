/*
 * Junos "$9$" secrets.
 *
 * Junos prints secrets (shared keys, passwords) in configuration output in a
 * reversible, keyless encoding marked by the prefix "$9$".  It is
 * obfuscation against shoulder surfing, not encryption: anyone can reverse
 * it.  ncgrpc-agent accepts such secrets so that a stanza copied from a
 * Junos box works unchanged.
 *
 * The encoding, as publicly documented: a 65-character alphabet is split in
 * four families.  After the prefix comes one salt character, then 0 to 3
 * random filler characters (3 for a salt from the first family, 0 for one
 * from the last).  Each plaintext byte is then written as 2 to 4 characters.
 * The byte is split into "gaps" by a fixed, position-dependent list of
 * weights that repeats every 7 bytes; each gap is the distance, minus one,
 * from the previous output character to the next along the alphabet, so a
 * character never follows itself.
 */
#ifndef NCGRPC_JUNOS9_H
#define NCGRPC_JUNOS9_H

#include <stddef.h>
#include <stdint.h>

/* Errors particular to decoding; see junos9_strerror(). */
enum junos9_err {
	JUNOS9_EBASE = -21000,
	JUNOS9_ENOPREFIX,  /* does not start with "$9$" */
	JUNOS9_ESHORT,     /* salt or filler characters missing */
	JUNOS9_EALPHABET,  /* a character outside the $9$ alphabet */
	JUNOS9_ETRUNCATED, /* the last byte's characters are incomplete */
	JUNOS9_EINVALID,   /* characters no encoder produces */
	JUNOS9_ENUL,       /* decodes to a NUL byte */
	JUNOS9_ELAST
};

/* Longest plaintext junos9_encode() accepts, and junos9_decode() returns. */
#define JUNOS9_MAX_PLAIN 4096

/* Nonzero if s starts with the "$9$" prefix (s may be NULL). */
int junos9_is_encoded(const char *s);

/*
 * Decodes the NUL-terminated "$9$" string in.  On success *out is a new,
 * NUL-terminated plaintext owned by the caller, which should clear it with
 * junos9_free() and *outlen (if not NULL) its length.  The plaintext never
 * holds a NUL byte.  Returns 0, JUNOS9_ENOPREFIX, JUNOS9_ESHORT,
 * JUNOS9_EALPHABET, JUNOS9_ETRUNCATED, JUNOS9_EINVALID (a gap that no
 * encoder writes, such as a repeated character or a byte value over 255),
 * JUNOS9_ENUL, -E2BIG (more than JUNOS9_MAX_PLAIN bytes) or -ENOMEM.
 * *out and *outlen are set only on success.
 */
int junos9_decode(const char *in, char **out, size_t *outlen);

/*
 * Returns a value in [0, bound) for the salt and filler characters.  Tests
 * pass a deterministic source; real callers pass NULL to junos9_encode().
 */
typedef uint32_t (*junos9_rand_fn)(void *arg, uint32_t bound);

/*
 * Encodes plain[0..len) (no NUL bytes, at most JUNOS9_MAX_PLAIN bytes) as a
 * new NUL-terminated "$9$" string in *out, owned by the caller.  rnd picks
 * the salt and filler characters; NULL means the OpenSSL random generator.
 * Returns 0, -EINVAL (NUL byte in plain), -E2BIG, -EIO (no randomness) or
 * -ENOMEM.  *out is set only on success.
 */
int junos9_encode(const char *plain, size_t len, junos9_rand_fn rnd, void *arg,
                  char **out);

/* Clears and frees a string returned by junos9_decode(); NULL is fine. */
void junos9_free(char *s);

/*
 * Describes any code returned above as a short lowercase phrase, never
 * NULL and never containing any part of the input.
 */
const char *junos9_strerror(int code);

#endif
