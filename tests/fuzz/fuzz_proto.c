/*
 * Fuzzes protobuf decoding of every message of the .proto files in proto/ (the
 * protobuf-c unpack of what devices, operators and servers send us).  A
 * message that decodes must pass protobuf_c_message_check() and pack
 * again, and what it packs to must decode to the same packed size.
 *
 * Input: one byte choosing the message type (modulo their number), then
 * the encoded message.
 *
 * For the messages whose payload the session byte path reads in place
 * (pbwire_only_bytes(): CommandGetRequest.message and SessionInput.data in
 * the relay, SessionOutput.data in the CLI and ncgrpc-sshd), the payload
 * it finds must be what the decoder finds, and the decoder must accept
 * every message it reads.
 */
#include <string.h>

#include "fuzz.h"
#include "pbwire.h"
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

/* The decoded payload is the one pbwire_only_bytes() found. */
static void
check_payload(const ProtobufCMessage *m, const uint8_t *p, size_t n)
{
	const ProtobufCBinaryData *b;

	if (m->descriptor == &ncgrpc__wire__command_get_request__descriptor) {
		b = &((const Ncgrpc__Wire__CommandGetRequest *)(const void *)m)
		         ->message;
	} else if (m->descriptor ==
	           &ncgrpc__operator__v1__session_output__descriptor) {
		const Ncgrpc__Operator__V1__SessionOutput *o = (const void *)m;

		FUZZ_CHECK(o->output_case ==
		           NCGRPC__OPERATOR__V1__SESSION_OUTPUT__OUTPUT_DATA);
		b = &o->data;
	} else {
		const Ncgrpc__Operator__V1__SessionInput *in = (const void *)m;

		FUZZ_CHECK(in->input_case ==
		           NCGRPC__OPERATOR__V1__SESSION_INPUT__INPUT_DATA);
		b = &in->data;
	}
	FUZZ_CHECK(b->len == n);
	FUZZ_CHECK(n == 0 || memcmp(b->data, p, n) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const ProtobufCMessageDescriptor *d;
	ProtobufCMessage *m, *m2;
	size_t len, len2, n = 0;
	uint8_t *buf;
	const uint8_t *p = NULL;
	uint32_t field = 0;
	int only = 0;

	if (size < 1)
		return 0;
	d = fz_types[data[0] % FZ_NTYPES];
	if (d == &ncgrpc__wire__command_get_request__descriptor)
		field = PBWIRE_CMDGET_REQUEST_MESSAGE;
	else if (d == &ncgrpc__operator__v1__session_output__descriptor)
		field = PBWIRE_SESSION_OUTPUT_DATA;
	else if (d == &ncgrpc__operator__v1__session_input__descriptor)
		field = PBWIRE_SESSION_INPUT_DATA;
	if (field != 0)
		only = pbwire_only_bytes(data + 1, size - 1, field, &p, &n);
	if ((m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1)) ==
	    NULL) {
		FUZZ_CHECK(only != 1);
		return 0;
	}
	if (only == 1)
		check_payload(m, p, n);
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
