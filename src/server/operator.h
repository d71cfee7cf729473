/*
 * The operator API of ncgrpcd (proto/ncgrpc_operator.proto), served on the
 * local Unix socket: ListDevices, WatchDevices and Session; and part of it
 * on the inter-node port.
 */
#ifndef NCGRPC_OPERATOR_H
#define NCGRPC_OPERATOR_H

struct broker;
struct grpc_server;

/*
 * Adds the Operator methods to srv.  A Session for a device not connected
 * here is forwarded to the node forward_resolve() names, if any
 * (forward.h).  Returns 0 or a negative code.
 */
int operator_register(struct broker *b, struct grpc_server *srv);

/*
 * The inter-node port (docs/cluster.md): ListDevices and Session only, for
 * other nodes of the cluster, whose certificate the server verified.  A
 * Session's claims are those of the operator on the other node, its via
 * gets "node:NAME" (NAME from the certificate), its uid is unknown (-1),
 * and it is never forwarded again.  Returns 0 or a negative code.
 */
int operator_register_node(struct broker *b, struct grpc_server *srv);

#endif
