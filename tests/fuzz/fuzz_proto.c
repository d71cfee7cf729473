/*
 * Fuzzes protobuf decoding of every message of the .proto files in proto/ (the
 * protobuf-c unpack of what devices, operators and servers send us).  A
 * message that decodes must pass protobuf_c_message_check() and pack
 * again, and what it packs to must decode to the same packed size.
 *
 * Input: one byte choosing the message type (modulo their number), then
 * the encoded message.
 */
#include <string.h>

#include "fuzz.h"
#include "ncgrpc.pb-c.h"
#include "ncgrpc_operator.pb-c.h"
#include "ncgrpc_wire.pb-c.h"

static const ProtobufCMessageDescriptor *const fz_types[] = {
    &jnx__jet__netconf__ncgrpc_server_status_get_request__descriptor,
    &jnx__jet__netconf__ncgrpc_server_status_get_response__descriptor,
    &jnx__jet__netconf__ncgrpc_initialize_request__descriptor,
    &jnx__jet__netconf__ncgrpc_initialize_response__descriptor,
    &jnx__jet__netconf__ncgrpc_command_get_request__descriptor,
    &jnx__jet__netconf__ncgrpc_command_get_response__descriptor,
    &ncgrpc__wire__command_get_request__descriptor,
    &ncgrpc__wire__command_get_response__descriptor,
    &ncgrpc__operator__v1__device__descriptor,
    &ncgrpc__operator__v1__list_devices_request__descriptor,
    &ncgrpc__operator__v1__list_devices_response__descriptor,
    &ncgrpc__operator__v1__watch_devices_request__descriptor,
    &ncgrpc__operator__v1__device_event__descriptor,
    &ncgrpc__operator__v1__session_open__descriptor,
    &ncgrpc__operator__v1__session_input__descriptor,
    &ncgrpc__operator__v1__session_started__descriptor,
    &ncgrpc__operator__v1__session_ended__descriptor,
    &ncgrpc__operator__v1__session_output__descriptor,
    &ncgrpc__wire__terminal_window__descriptor,
    &ncgrpc__operator__v1__window_size__descriptor,
};

#define FZ_NTYPES (sizeof(fz_types) / sizeof(fz_types[0]))

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const ProtobufCMessageDescriptor *d;
	ProtobufCMessage *m, *m2;
	size_t len, len2;
	uint8_t *buf;

	if (size < 1)
		return 0;
	d = fz_types[data[0] % FZ_NTYPES];
	if ((m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1)) ==
	    NULL)
		return 0;
	FUZZ_CHECK(protobuf_c_message_check(m));
	len = protobuf_c_message_get_packed_size(m);
	if ((buf = malloc(len + 1)) == NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		return 0;
	}
	FUZZ_CHECK(protobuf_c_message_pack(m, buf) == len);
	/*
	 * protobuf-c keeps unknown fields as it read them, even ones it
	 * refuses once repacked (a field number 0 spelled "80 00", in any
	 * nested message), so the repacked bytes may not decode.  When they
	 * do, they must hold the same message.
	 */
	if ((m2 = protobuf_c_message_unpack(d, NULL, len, buf)) != NULL) {
		len2 = protobuf_c_message_get_packed_size(m2);
		FUZZ_CHECK(len2 == len);
		protobuf_c_message_free_unpacked(m2, NULL);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	free(buf);
	return 0;
}
