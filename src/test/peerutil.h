/*
 * What ncgrpc-testd and ncgrpc-testc share: their output lines, and
 * metadata in the sorted "K=V" form of docs/internals/testtools.md.
 */
#ifndef NCGRPC_PEERUTIL_H
#define NCGRPC_PEERUTIL_H

#include "grpc.h"

/* Prints one line on stdout and flushes it: tests read it at once. */
void peer_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Calls fn with "KEY=VALUE" for each entry of ml, sorted by key, "-bin"
 * values in base64.  The string is valid during the call.
 */
void peer_md_each(const struct grpc_mdlist *ml,
                  void (*fn)(const char *kv, void *arg), void *arg);

#endif
