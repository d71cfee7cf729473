/*
 * ncgrpc-sshd's authorized_keys parser (see akeys.h for the format).
 *
 * A line is parsed in three steps: the options (a small state machine over
 * quoted values), then the key type and base64 blob, handed to libssh, and
 * last the checks between lines (a key listed twice).  Every field a line
 * can fill is bounded before it is copied.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "akeys.h"
#include "err.h"
#include "fileio.h"

#define AKEYS_MSG_MAX 512

static int
id_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '@' || c == '-';
}

static int
op_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' ||
	       c == '-';
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Nonzero if s[0..len) is 1..max bytes, each accepted by ok (or a '*'/'?'
 * when wild). */
static int
word_valid(const char *s, size_t len, size_t max, int (*ok)(unsigned char),
           int wild)
{
	size_t i;

	if (len == 0 || len > max)
		return 0;
	for (i = 0; i < len; i++)
		if (!ok((unsigned char)s[i]) &&
		    !(wild && (s[i] == '*' || s[i] == '?')))
			return 0;
	return 1;
}

int
akeys_device_valid(const char *s)
{
	return word_valid(s, strnlen(s, AKEYS_MAX_DEVICE + 1), AKEYS_MAX_DEVICE,
	                  id_char, 0);
}

int
akeys_parse_user(const char *user, char *op, char *dev)
{
	const char *plus = strchr(user, '+');
	size_t oplen = 0, devlen;
	const char *d = user;

	if (plus != NULL) {
		oplen = (size_t)(plus - user);
		if (!word_valid(user, oplen, AKEYS_MAX_OPERATOR, op_char, 0))
			return -EINVAL;
		d = plus + 1;
	}
	devlen = strnlen(d, AKEYS_MAX_DEVICE + 1);
	if (!word_valid(d, devlen, AKEYS_MAX_DEVICE, id_char, 0))
		return -EINVAL;
	memcpy(op, user, oplen);
	op[oplen] = '\0';
	memcpy(dev, d, devlen);
	dev[devlen] = '\0';
	return 0;
}

static void
akey_clear(struct akey *ak)
{
	size_t i;

	for (i = 0; i < ak->ak_ndevices; i++)
		free(ak->ak_devices[i]);
	free(ak->ak_devices);
	ssh_key_free(ak->ak_key);
	memset(ak, 0, sizeof(*ak));
}

void
akeys_free(struct akeys *as)
{
	size_t i;

	if (as == NULL)
		return;
	for (i = 0; i < as->as_nkeys; i++)
		akey_clear(&as->as_keys[i]);
	free(as->as_keys);
	free(as);
}

/*
 * Reads a quoted value at *pp (just after the opening quote) into out
 * (outlen bytes, NUL included), unescaping \" and \\.  Returns 0 with *pp
 * past the closing quote, or -EINVAL.
 */
static int
quoted(const char **pp, const char *end, char *out, size_t outlen,
       const char **why)
{
	const char *p = *pp;
	size_t n = 0;

	for (;;) {
		if (p == end) {
			*why = "unterminated quoted value";
			return -EINVAL;
		}
		if (*p == '"')
			break;
		if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\'))
			p++;
		if (n + 1 >= outlen) {
			*why = "option value too long";
			return -EINVAL;
		}
		out[n++] = *p++;
	}
	out[n] = '\0';
	*pp = p + 1;
	return 0;
}

/* devices="a,b*": fills ak_devices.  0, -EINVAL (why) or -ENOMEM. */
static int
set_devices(struct akey *ak, const char *v, const char **why)
{
	const char *p = v, *comma;
	size_t len;
	char *pat, **grown;

	if (ak->ak_devices != NULL) {
		*why = "devices given twice";
		return -EINVAL;
	}
	for (;;) {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (!word_valid(p, len, AKEYS_MAX_DEVICE, id_char, 1)) {
			*why = "devices: a pattern is empty, too long or holds "
			       "a byte other than letters, digits, \". _ : @ "
			       "-\" and the wildcards \"*\" and \"?\"";
			return -EINVAL;
		}
		if (ak->ak_ndevices == AKEYS_MAX_PATTERNS) {
			*why = "devices: too many patterns";
			return -EINVAL;
		}
		if ((pat = strndup(p, len)) == NULL)
			return -ENOMEM;
		grown = reallocarray(ak->ak_devices, ak->ak_ndevices + 1,
		                     sizeof(*grown));
		if (grown == NULL) {
			free(pat);
			return -ENOMEM;
		}
		ak->ak_devices = grown;
		ak->ak_devices[ak->ak_ndevices++] = pat;
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

/* sessions="netconf,shell": sets ak_sessions.  0 or -EINVAL (why). */
static int
set_sessions(struct akey *ak, const char *v, const char **why)
{
	static const struct {
		const char *name;
		unsigned bit;
	} types[] = {{"netconf", AKEYS_NETCONF},
	             {"shell", AKEYS_SHELL},
	             {"exec", AKEYS_EXEC}};
	const char *p = v, *comma;
	unsigned bits = 0;
	size_t len, i;

	for (;;) {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
			if (strlen(types[i].name) == len &&
			    memcmp(types[i].name, p, len) == 0)
				break;
		if (i == sizeof(types) / sizeof(types[0])) {
			*why = "sessions: each type must be netconf, shell or "
			       "exec";
			return -EINVAL;
		}
		bits |= types[i].bit;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	ak->ak_sessions = bits;
	return 0;
}

/* Whether word[0..len) names a key type: a line without options. */
static int
is_key_type(const char *word, size_t len)
{
	char type[64];

	if (len >= sizeof(type))
		return 0;
	memcpy(type, word, len);
	type[len] = '\0';
	return ssh_key_type_from_name(type) != SSH_KEYTYPE_UNKNOWN;
}

/*
 * Parses the options at *pp into ak.  Returns 0 with *pp at the blank after
 * them, -EINVAL (why) or -ENOMEM.
 */
static int
parse_options(struct akey *ak, const char **pp, const char *end,
              const char **why)
{
	const char *p = *pp, *name;
	char value[AKEYS_MAX_LINE];
	size_t nlen;
	int rc, seen_sessions = 0;

	for (;;) {
		name = p;
		while (p < end && ((*p >= 'a' && *p <= 'z') || *p == '-'))
			p++;
		nlen = (size_t)(p - name);
		if (nlen > 0 && p < end &&
		    (*p == ',' || *p == ' ' || *p == '\t') &&
		    !is_key_type(name, nlen)) {
			/* OpenSSH's no-pty, restrict, ...: none is ours. */
			*why = "unknown option (known: operator, devices, "
			       "sessions)";
			return -EINVAL;
		}
		if (nlen == 0 || p + 1 >= end || p[0] != '=' || p[1] != '"') {
			*why = "expected an option NAME=\"VALUE\" before the "
			       "key (operator=, devices=, sessions=)";
			return -EINVAL;
		}
		p += 2;
		if ((rc = quoted(&p, end, value, sizeof(value), why)) != 0)
			return rc;
		if (nlen == 8 && memcmp(name, "operator", 8) == 0) {
			if (ak->ak_operator[0] != '\0') {
				*why = "operator given twice";
				return -EINVAL;
			}
			if (!word_valid(value, strlen(value),
			                AKEYS_MAX_OPERATOR, op_char, 0)) {
				*why = "operator: 1..64 letters, digits or \". "
				       "_ @ -\"";
				return -EINVAL;
			}
			memcpy(ak->ak_operator, value, strlen(value) + 1);
		} else if (nlen == 7 && memcmp(name, "devices", 7) == 0) {
			if ((rc = set_devices(ak, value, why)) != 0)
				return rc;
		} else if (nlen == 8 && memcmp(name, "sessions", 8) == 0) {
			if (seen_sessions++) {
				*why = "sessions given twice";
				return -EINVAL;
			}
			if ((rc = set_sessions(ak, value, why)) != 0)
				return rc;
		} else {
			*why = "unknown option (known: operator, devices, "
			       "sessions)";
			return -EINVAL;
		}
		if (p == end || is_blank(*p))
			break;
		if (*p != ',') {
			*why = "options are separated by ',' without spaces";
			return -EINVAL;
		}
		p++;
	}
	if (ak->ak_operator[0] == '\0' || ak->ak_devices == NULL) {
		*why =
		    "operator=\"NAME\" and devices=\"PATTERNS\" are required";
		return -EINVAL;
	}
	if (!seen_sessions)
		ak->ak_sessions = AKEYS_ALL;
	*pp = p;
	return 0;
}

/* The next blank-separated word at *pp: sets w and wlen, moves *pp past. */
static void
next_word(const char **pp, const char *end, const char **w, size_t *wlen)
{
	const char *p = *pp;

	while (p < end && is_blank(*p))
		p++;
	*w = p;
	while (p < end && !is_blank(*p))
		p++;
	*wlen = (size_t)(p - *w);
	*pp = p;
}

/* "TYPE SHA256:..." of ak's key into ak_fp.  0 or -ENOMEM. */
static int
fingerprint(struct akey *ak)
{
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp;

	if (ssh_get_publickey_hash(ak->ak_key, SSH_PUBLICKEY_HASH_SHA256, &hash,
	                           &hlen) != 0)
		return -ENOMEM;
	fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
	ssh_clean_pubkey_hash(&hash);
	if (fp == NULL)
		return -ENOMEM;
	snprintf(ak->ak_fp, sizeof(ak->ak_fp), "%s %s",
	         ssh_key_type_to_char(ssh_key_type(ak->ak_key)), fp);
	ssh_string_free_char(fp);
	return 0;
}

/* One line (without newline) into ak.  0, -EINVAL (why) or -ENOMEM. */
static int
parse_line(struct akey *ak, const char *p, const char *end, const char **why)
{
	char type[64], b64[AKEYS_MAX_LINE];
	const char *w;
	size_t wlen;
	enum ssh_keytypes_e kt;
	int rc;

	if ((rc = parse_options(ak, &p, end, why)) != 0)
		return rc;
	next_word(&p, end, &w, &wlen);
	if (wlen == 0 || wlen >= sizeof(type)) {
		*why = wlen == 0 ? "no key after the options"
		                 : "key type too long";
		return -EINVAL;
	}
	memcpy(type, w, wlen);
	type[wlen] = '\0';
	kt = ssh_key_type_from_name(type);
	if (kt == SSH_KEYTYPE_UNKNOWN) {
		*why = "unknown key type";
		return -EINVAL;
	}
	/*
	 * A certificate is matched by its key, not by itself, so one listed
	 * here would never let anyone in: list the plain public key.
	 */
	if (strstr(type, "-cert-v01@openssh.com") != NULL) {
		*why = "an OpenSSH certificate; list the plain public key "
		       "instead";
		return -EINVAL;
	}
	next_word(&p, end, &w, &wlen);
	if (wlen == 0) {
		*why = "the key's base64 is missing";
		return -EINVAL;
	}
	memcpy(b64, w, wlen);
	b64[wlen] = '\0';
	if (ssh_pki_import_pubkey_base64(b64, kt, &ak->ak_key) != SSH_OK ||
	    ak->ak_key == NULL) {
		ak->ak_key = NULL;
		*why = "malformed key";
		return -EINVAL;
	}
	if (fingerprint(ak) != 0)
		return -ENOMEM;
	return 0;
}

int
akeys_parse(const char *name, const char *text, size_t len, struct akeys **out,
            char *err, size_t errlen)
{
	struct akeys *as;
	struct akey ak, *grown;
	const char *p = text, *end = text + len, *eol, *s, *why = NULL;
	unsigned line = 0;
	size_t i;
	int rc = 0;

	if (len > AKEYS_MAX_FILE) {
		ncg_seterr(err, errlen, "%s: larger than %d bytes", name,
		           AKEYS_MAX_FILE);
		return -EFBIG;
	}
	if (memchr(text, '\0', len) != NULL) {
		ncg_seterr(err, errlen, "%s: holds a NUL byte", name);
		return -EINVAL;
	}
	if ((as = calloc(1, sizeof(*as))) == NULL)
		goto nomem;
	for (; p < end; p = eol < end ? eol + 1 : end) {
		line++;
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		if ((size_t)(eol - p) > AKEYS_MAX_LINE) {
			why = "line too long";
			rc = -EINVAL;
			goto bad;
		}
		s = p;
		while (s < eol && (is_blank(*s) || *s == '\r'))
			s++;
		if (s == eol || *s == '#')
			continue;
		if (as->as_nkeys == AKEYS_MAX_KEYS) {
			ncg_seterr(err, errlen, "%s:%u: more than %d keys",
			           name, line, AKEYS_MAX_KEYS);
			akeys_free(as);
			return -EFBIG;
		}
		memset(&ak, 0, sizeof(ak));
		ak.ak_line = line;
		/* A CR before the newline is not part of the comment. */
		rc = parse_line(
		    &ak, s, eol > s && eol[-1] == '\r' ? eol - 1 : eol, &why);
		if (rc == 0)
			for (i = 0; i < as->as_nkeys; i++)
				if (ssh_key_cmp(as->as_keys[i].ak_key,
				                ak.ak_key,
				                SSH_KEY_CMP_PUBLIC) == 0) {
					why = "key listed twice (one operator "
					      "per key)";
					rc = -EINVAL;
				}
		if (rc != 0) {
			akey_clear(&ak);
			if (rc == -ENOMEM)
				goto nomem;
			goto bad;
		}
		grown =
		    reallocarray(as->as_keys, as->as_nkeys + 1, sizeof(*grown));
		if (grown == NULL) {
			akey_clear(&ak);
			goto nomem;
		}
		as->as_keys = grown;
		as->as_keys[as->as_nkeys++] = ak;
	}
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	*out = as;
	return 0;
bad:
	ncg_seterr(err, errlen, "%s:%u: %s", name, line, why);
	akeys_free(as);
	return -EINVAL;
nomem:
	ncg_seterr(err, errlen, "%s: out of memory", name);
	akeys_free(as);
	return -ENOMEM;
}

int
akeys_load(const char *path, struct akeys **out, char *err, size_t errlen)
{
	struct stat st;
	char *text;
	size_t len;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		rc = -errno;
		ncg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		ncg_seterr(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	rc = fileio_read_fd(fd, AKEYS_MAX_FILE, (size_t)st.st_size, 0, &text,
	                    &len);
	close(fd);
	if (rc != 0) {
		ncg_seterr(err, errlen, "%s: %s", path,
		           rc == -EFBIG ? "file too large" : strerror(-rc));
		return rc;
	}
	rc = akeys_parse(path, text, len, out, err, errlen);
	fileio_free(text, len, 0);
	return rc;
}

const struct akey *
akeys_find(const struct akeys *as, const ssh_key key)
{
	size_t i;

	if (as == NULL || key == NULL)
		return NULL;
	for (i = 0; i < as->as_nkeys; i++)
		if (ssh_key_cmp(as->as_keys[i].ak_key, key,
		                SSH_KEY_CMP_PUBLIC) == 0)
			return &as->as_keys[i];
	return NULL;
}

const struct akey *
akeys_find_fp(const struct akeys *as, const char *fp)
{
	size_t i;

	if (as == NULL)
		return NULL;
	for (i = 0; i < as->as_nkeys; i++)
		if (strcmp(as->as_keys[i].ak_fp, fp) == 0)
			return &as->as_keys[i];
	return NULL;
}

unsigned
akeys_rights(const struct akey *ak, const char *device)
{
	unsigned bits = 0;

	if (akeys_allows(ak, device, AKEYS_NETCONF))
		bits |= AKEYS_NETCONF;
	if (akeys_allows(ak, device, AKEYS_SHELL))
		bits |= AKEYS_SHELL;
	if (akeys_allows(ak, device, AKEYS_EXEC))
		bits |= AKEYS_EXEC;
	return bits;
}

int
akeys_allows(const struct akey *ak, const char *device, unsigned type)
{
	size_t i;

	if ((ak->ak_sessions & type) == 0)
		return 0;
	for (i = 0; i < ak->ak_ndevices; i++)
		if (fnmatch(ak->ak_devices[i], device, 0) == 0)
			return 1;
	return 0;
}
