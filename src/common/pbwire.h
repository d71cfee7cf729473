/*
 * pbwire: checks on raw protobuf wire bytes that the decoded message can
 * no longer show, and the payload of one-field messages read in place.
 *
 * protobuf-c hands a string field back NUL-terminated, so a NUL byte inside
 * it ("r1\0x") silently truncates the value seen through strlen() ("r1").
 * A peer could use that to pass one identity on the wire and another in
 * our checks; pbwire_field_has_nul() finds such fields before decoding.
 */
#ifndef NCGRPC_PBWIRE_H
#define NCGRPC_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Scans msg[0..len) and returns 1 if any occurrence of the length-delimited
 * field number field holds a NUL byte, 0 if none does, or -EINVAL if msg is
 * not well-formed protobuf (the decoder would refuse it anyway).  Fields of
 * other numbers and wire types are skipped.
 */
int pbwire_field_has_nul(const uint8_t *msg, size_t len, uint32_t field);

/*
 * When msg[0..len) holds nothing but one or more occurrences of the
 * length-delimited field number field (1 to 15), each in the form an
 * encoder writes (the key in one byte, the length in the fewest bytes),
 * sets *data and *n to the bytes of the last one (the one a decoder
 * keeps), where they lie in msg, and returns 1.  Returns 0 for anything
 * else, well-formed or not, and for nothing at all: decode it then, and
 * the decoder decides.  For the session byte path: the payload of a
 * message with one bytes field, without a decoder's allocation and copy.
 */
/*
 * The payloads read that way, by field number (proto/; pbwire_test checks
 * them against the generated descriptors).
 */
#define PBWIRE_CMDGET_REQUEST_MESSAGE 1 /* ncgrpc_wire CommandGetRequest */
#define PBWIRE_SESSION_INPUT_DATA     2 /* ncgrpc_operator SessionInput */
#define PBWIRE_SESSION_OUTPUT_DATA    2 /* ncgrpc_operator SessionOutput */

int pbwire_only_bytes(const uint8_t *msg, size_t len, uint32_t field,
                      const uint8_t **data, size_t *n);

#endif
