/*
 * pbwire: checks on raw protobuf wire bytes that the decoded message can
 * no longer show.
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

#endif
