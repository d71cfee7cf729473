/*
 * The operator API of ncgrpcd (proto/ncgrpc_operator.proto), served on the
 * local Unix socket: ListDevices, WatchDevices and Session.
 */
#ifndef NCGRPC_OPERATOR_H
#define NCGRPC_OPERATOR_H

struct broker;
struct grpc_server;

/* Adds the Operator methods to srv.  Returns 0 or a negative code. */
int operator_register(struct broker *b, struct grpc_server *srv);

#endif
