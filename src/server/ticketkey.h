/*
 * The TLS session ticket key of ncgrpcd: 80 random bytes in a file of its
 * own (mode 0600), made on first start and kept across restarts, so that
 * devices resume their TLS sessions, and skip the scrypt check of their
 * secret, when the daemon comes back (docs/internals/server.md).
 */
#ifndef NCGRPC_TICKETKEY_H
#define NCGRPC_TICKETKEY_H

#include <stddef.h>
#include <stdint.h>

#define TICKETKEY_LEN       80 /* TLS_TICKET_KEY_LEN */
#define TICKETKEY_PROOF_LEN 32

/*
 * Reads the key in path into key, or makes the file when it does not
 * exist.  Refuses a file that is not a regular file of exactly
 * TICKETKEY_LEN bytes, or that group or others may read.  Returns 0 (and
 * *made says whether the file is new), or a negative errno with a
 * description in err.
 */
int ticketkey_load(const char *path, uint8_t *key, int *made, char *err,
                   size_t errlen);

/*
 * Derives from the ticket key the key of the resumption proofs
 * (registry_proof()), TICKETKEY_PROOF_LEN bytes, so that neither key
 * serves the other's purpose.  Returns 0 or -EIO.
 */
int ticketkey_proof_key(const uint8_t *key, uint8_t *out);

#endif
