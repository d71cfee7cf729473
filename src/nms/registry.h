/*
 * The device registry of ncgrpcd: device id -> hashed shared secret.
 *
 * File format
 * -----------
 * Text, one device per line.  Blank lines and lines whose first non-blank
 * character is '#' are ignored; CRLF line ends are accepted.  A device line
 * is
 *
 *	DEVICE-ID $scrypt$ln=LN,r=R,p=P$SALT$HASH [# comment]
 *
 * separated by spaces or tabs, where
 *  - DEVICE-ID is 1..255 bytes of [A-Za-z0-9._:@-] and appears only once;
 *  - LN, R, P are decimal scrypt parameters: N = 2^LN with LN in 10..20,
 *    R and P in 1..16, and the memory scrypt needs (128 * R * N bytes) at
 *    most REGISTRY_SCRYPT_MAXMEM, so that four concurrent verifies cannot
 *    exhaust the host;
 *  - SALT (16..64 bytes) and HASH (32..64 bytes) are standard base64
 *    (RFC 4648 alphabet, '=' padding optional, unused bits zero).  HASH is
 *    scrypt(secret, SALT, N, R, P) truncated to the HASH length.
 * Lines are at most REGISTRY_LINE_MAX bytes and the file at most
 * REGISTRY_FILE_MAX bytes.  The file should be mode 0600: it holds no
 * secrets, but the hashes allow offline guessing.
 *
 * Threads
 * -------
 * registry_load(), registry_hash_line(), registry_add(), registry_remove()
 * and registry_set() may run on any thread.  Everything else, including
 * registry_free() and everything on a struct registry_throttle, must run on
 * the thread of the loop given to registry_verify().
 *
 * Reload
 * ------
 * The server parses a fresh registry with registry_load(), attaches its
 * throttle with registry_set_throttle() and registry_free()s the old one.
 * A registry is reference-counted: verifies in flight keep the old one
 * alive until their callbacks have run.  Failure counts live in the
 * struct registry_throttle, which the server creates once and attaches to
 * each registry it loads, so a reload (or an attacker waiting for one)
 * does not reset them.  The success cache lives in the registry's entries
 * and starts empty after a reload.
 */
#ifndef NCGRPC_REGISTRY_H
#define NCGRPC_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define REGISTRY_ID_MAX        255
#define REGISTRY_LINE_MAX      4096
#define REGISTRY_FILE_MAX      (64 * 1024 * 1024)
#define REGISTRY_SECRET_MAX    1024 /* longer secrets never match */
#define REGISTRY_SCRYPT_MAXMEM (256 * 1024 * 1024)
/* Generated secrets: 24 random bytes in base64url, 32 characters. */
#define REGISTRY_SECRET_LEN   32
#define REGISTRY_SECRET_BUFSZ (REGISTRY_SECRET_LEN + 1)

/* Defaults of a struct registry_throttle. */
#define REGISTRY_THROTTLE_FAILURES       5
#define REGISTRY_THROTTLE_WINDOW_MS      60000
#define REGISTRY_THROTTLE_INFLIGHT       8
#define REGISTRY_THROTTLE_PEER_INFLIGHT  8
#define REGISTRY_THROTTLE_TOTAL_INFLIGHT 32
#define REGISTRY_THROTTLE_WAITING        1024 /* for a slot of the total */
#define REGISTRY_THROTTLE_ENTRIES        65536

struct registry;
struct registry_req;
struct registry_throttle;

/*
 * Runs on the loop thread with the outcome of registry_verify(): 0 (the
 * secret matches), -ENOENT (unknown device), -EACCES (wrong secret),
 * -EAGAIN (throttled after failures), -EBUSY (too many checks running for
 * this id or peer; not a failure), -ECANCELED (registry_cancel() was called),
 * or -ENOMEM / -EIO when the hash could not be computed.
 */
typedef void (*registry_verify_cb)(void *arg, int result);

/*
 * Reads and parses path into a new registry with one reference, and no
 * throttle attached.  On error, err (if errlen > 0) receives
 * "path:line: message" or "path: message".  Returns 0, -EINVAL (parse
 * error), -EFBIG (file too large), -ENOMEM, or the negated errno of
 * open/read (-ENOENT, -EACCES, ...).
 */
int registry_load(const char *path, struct registry **out, char *err,
                  size_t errlen);

/*
 * Parses a registry file image, data[0..len) (need not be NUL-terminated;
 * a NUL byte is an error), as registry_load() parses the file it reads.
 * name labels messages in place of the path.  Returns 0, -EINVAL (parse
 * error), -EFBIG (more than REGISTRY_FILE_MAX bytes), -ENOMEM or -EIO (no
 * random bytes for the dummy entry); *out is set only on success.
 */
int registry_parse(const char *name, const char *data, size_t len,
                   struct registry **out, char *err, size_t errlen);

/*
 * Drops the caller's reference.  The registry is destroyed once no verify
 * is in flight on it.  NULL is ignored.
 */
void registry_free(struct registry *reg);

/* Number of devices. */
size_t registry_count(const struct registry *reg);

/* Returns 1 if device_id is in the registry, else 0. */
int registry_has(const struct registry *reg, const char *device_id);

/*
 * Attaches thr (which may be NULL: no throttling) to reg, replacing any
 * previous one.  The registry takes a reference on thr, so the caller may
 * registry_throttle_free() its own at any time.
 */
void registry_set_throttle(struct registry *reg, struct registry_throttle *thr);

/*
 * Checks secret for device_id without blocking the loop: the scrypt runs
 * in the libuv threadpool.  peer_addr is the peer as "IP", "IP:PORT" or
 * "[IPv6]:PORT" (the port is ignored, and IPv6 peers are counted per /64,
 * since one host usually owns a whole /64), or NULL to skip per-peer
 * throttling.
 *
 * The secret is copied; the caller's buffer may be reused at once.  Unknown
 * devices run a dummy scrypt with the cost of the registry's first entry,
 * so that response times do not reveal which ids exist.  After a success,
 * an HMAC of the secret under a per-process random key is remembered, and
 * later verifies of that device with the same secret finish without
 * scrypt.  Secrets that are empty, longer than REGISTRY_SECRET_MAX or
 * hold a NUL byte, and ids that are not syntactically valid, fail without
 * scrypt.  (scrypt keys HMAC with the secret, and HMAC pads keys with
 * zeros, so "s" and "s\0" would otherwise match the same hash.)
 *
 * Throttling: failures count per (device id, peer) and per peer, never per
 * id alone, so that failures from elsewhere cannot lock a device out.  A
 * (device id, peer) pair with REGISTRY_THROTTLE_FAILURES failures in the
 * current window, or a peer with its own limit, gets -EAGAIN; checks still
 * in flight count as failures for this, and a verify that could be the one
 * failure too many while others run gets -EBUSY.  These come first, then
 * the cache of the last good secret, then the scrypt budget: a device id
 * with REGISTRY_THROTTLE_INFLIGHT checks waiting or running, or a peer
 * with REGISTRY_THROTTLE_PEER_INFLIGHT, gets -EBUSY, which is not counted
 * as a failure; neither runs scrypt.  At most
 * REGISTRY_THROTTLE_TOTAL_INFLIGHT checks are in the threadpool at once;
 * the next ones wait their turn, in order, up to REGISTRY_THROTTLE_WAITING
 * of them, and the rest get -EBUSY.  A
 * storm of devices thus gets through at the pace of the KDF, instead of
 * coming back (with new connections and handshakes) to find the slots
 * full again.  A success clears the failures of its (id, peer) pair but not the
 * peer's.  A verify that ran scrypt counts even if it was cancelled, so that
 * hanging up early does not dodge the throttle.
 *
 * Returns 0 and, if out is not NULL, sets *out to a handle valid until cb
 * starts; cb then runs exactly once, on a later loop iteration, never
 * inside this call.  Returns -EINVAL (a NULL argument, or a NULL secret
 * with len > 0) or -ENOMEM, and then cb never runs.
 */
int registry_verify(struct registry *reg, uv_loop_t *loop,
                    const char *device_id, const uint8_t *secret, size_t len,
                    const char *peer_addr, registry_verify_cb cb, void *arg,
                    struct registry_req **out);

/*
 * Resumption proofs, for a server that hands devices TLS session tickets
 * (docs/internals/registry.md).  registry_proof() computes into out
 * (REGISTRY_PROOF_LEN bytes) a MAC under key of the device id, the id's
 * current entry (its whole scrypt line) and secret; it does not check the
 * secret.  registry_accept_proof() recomputes it for the secret presented
 * now and, when it equals proof (compared in constant time), fills the
 * entry's cache of the last good secret, so that the registry_verify()
 * that follows needs no scrypt while every throttle still applies.  A new
 * secret, a re-keyed or removed entry, or another key gives another value.
 * Both return 0, -ENOENT (unknown or invalid id or secret), -EACCES (no
 * match) or -ENOMEM.
 */
#define REGISTRY_PROOF_LEN 32
int registry_proof(const struct registry *reg, const char *device_id,
                   const uint8_t *secret, size_t len, const uint8_t *key,
                   size_t keylen, uint8_t *out);
int registry_accept_proof(struct registry *reg, const char *device_id,
                          const uint8_t *secret, size_t len, const uint8_t *key,
                          size_t keylen, const uint8_t *proof);

/*
 * Detaches the caller from req: its callback still runs exactly once, with
 * -ECANCELED, on a later loop iteration; if the scrypt has already started
 * it first runs to the end (and still counts for throttling).  Must not be
 * called once the callback has started (req is freed when it returns).
 */
void registry_cancel(struct registry_req *req);

/*
 * A new, empty throttle with the REGISTRY_THROTTLE_* defaults, one
 * reference.  Returns 0 or -ENOMEM.
 */
int registry_throttle_new(struct registry_throttle **out);

/* Drops the caller's reference.  NULL is ignored. */
void registry_throttle_free(struct registry_throttle *thr);

/*
 * Sets the failures allowed per window for a (device id, peer) pair and for
 * a peer, the
 * window length, the verifies allowed to run scrypt at once per id (peers
 * keep REGISTRY_THROTTLE_PEER_INFLIGHT), and the most ids and peers tracked
 * (each); past that, the entry whose window started first is forgotten.
 * A zero keeps the current value.
 */
void registry_throttle_set_limits(struct registry_throttle *thr,
                                  unsigned dev_failures, unsigned peer_failures,
                                  uint64_t window_ms, unsigned inflight,
                                  size_t max_entries);

/*
 * Sets the scrypt checks allowed waiting or running at once per peer, in
 * the threadpool at once in all, and waiting for a place there.  A zero
 * keeps the current value.
 */
void registry_throttle_set_checks(struct registry_throttle *thr,
                                  unsigned peer_inflight,
                                  unsigned total_inflight, unsigned waiting);

/* Scrypt checks in the threadpool now (queued there or running). */
unsigned registry_throttle_inflight(const struct registry_throttle *thr);

/* Checks waiting for a threadpool slot now. */
unsigned registry_throttle_waiting(const struct registry_throttle *thr);

/*
 * Replaces the monotonic millisecond clock (default: uv_hrtime()), for
 * tests.  NULL restores the default.
 */
void registry_throttle_set_clock(struct registry_throttle *thr,
                                 uint64_t (*now_ms)(void *arg), void *arg);

/* Entries tracked (ids plus peers), for tests and statistics. */
size_t registry_throttle_count(const struct registry_throttle *thr);

/*
 * Makes a registry line (without newline) for device_id and the secret,
 * with a fresh random salt and the default cost (ln=14,r=8,p=1).  The
 * caller frees *line_out.  Returns 0, -EINVAL (bad id, or a secret that is
 * empty, longer than REGISTRY_SECRET_MAX or holds a NUL byte), -ENOMEM, or
 * -EIO (OpenSSL failed).
 */
int registry_hash_line(const char *device_id, const uint8_t *secret, size_t len,
                       char **line_out);

/*
 * Adds device_id to the registry file at path with a new random secret,
 * which is written to secret_out (REGISTRY_SECRET_BUFSZ bytes or more, NUL
 * terminated) only on success.  The secret uses only [A-Za-z0-9_-], so it
 * pastes into a device configuration unquoted.
 *
 * Edits of the file are serialised with flock() on "path.lock" (created
 * mode 0600 and left in place), and the new file is written beside the old
 * one, fsync()ed and renamed over it, mode 0600, so readers see the old or
 * the new file and never a mix.  A missing file is created.  Comments and
 * other lines are kept as they are.
 *
 * Returns 0, -EEXIST (id already present), -EINVAL (bad id, or the
 * existing file does not parse), -ENOBUFS (secret_out too small), -EFBIG,
 * -ENOMEM, -EIO, or the negated errno of a failed file operation.  err
 * receives a message that never contains a secret.
 */
int registry_add(const char *path, const char *device_id, char *secret_out,
                 size_t secret_out_len, char *err, size_t errlen);

/*
 * Writes a new random secret, as registry_add() makes, NUL terminated, to
 * out (REGISTRY_SECRET_BUFSZ bytes or more).  Returns 0, -ENOBUFS or -EIO.
 */
int registry_new_secret(char *out, size_t outlen);

/*
 * Removes device_id from the file at path, as registry_add() edits it.
 * Returns 0, -ENOENT (no such device, or no file), or the errors of
 * registry_add().
 */
int registry_remove(const char *path, const char *device_id, char *err,
                    size_t errlen);

/*
 * Adds device_id with the given secret, or replaces its line in place if
 * present, as registry_add() edits the file.  Returns 0 or the errors of
 * registry_add(), with -EINVAL also for a secret refused by
 * registry_hash_line().
 */
int registry_set(const char *path, const char *device_id, const uint8_t *secret,
                 size_t len, char *err, size_t errlen);

#endif
