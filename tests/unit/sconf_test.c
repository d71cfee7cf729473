/*
 * Unit tests for the ncgrpcd configuration parser and validator.
 * sconf.c is included so its symbols come from this file.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nms/sconf.c"

static struct sconf *
parse_ok(const char *text)
{
	struct sconf *sc = NULL;
	char err[512];

	if (sconf_parse_string("t.conf", text, strlen(text), &sc, err,
	                       sizeof(err)) != 0)
		fail_msg("parse failed: %s", err);
	assert_string_equal(err, "");
	return sc;
}

/* Parses text, expecting failure with exactly msg. */
static void
parse_fails(const char *text, const char *msg)
{
	struct sconf *sc = (struct sconf *)(uintptr_t)1;
	char err[1024];

	if (sconf_parse_string("t.conf", text, strlen(text), &sc, err,
	                       sizeof(err)) != -EINVAL)
		fail_msg("'%s' did not fail with -EINVAL", text);
	assert_ptr_equal(sc, (struct sconf *)(uintptr_t)1);
	if (strcmp(err, msg) != 0)
		fail_msg("for '%s'\n got: '%s'\nwant: '%s'", text, err, msg);
}

/* Parses text (which must parse) and validates, expecting msg. */
static void
validate_fails(const char *text, const char *msg)
{
	struct sconf *sc = parse_ok(text);
	char err[512];

	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	if (strcmp(err, msg) != 0)
		fail_msg("for '%s'\n got: '%s'\nwant: '%s'", text, err, msg);
	sconf_free(sc);
}

static void
validate_ok(const char *text)
{
	struct sconf *sc = parse_ok(text);
	char err[512];

	if (sconf_validate(sc, err, sizeof(err)) != 0)
		fail_msg("for '%s': %s", text, err);
	sconf_free(sc);
}

static void
check_defaults(const struct sconf *sc)
{
	assert_int_equal(sc->sc_nlisten, 1);
	assert_string_equal(sc->sc_listen[0].li_host, "::");
	assert_int_equal(sc->sc_listen[0].li_port, 443);
	assert_string_equal(sc->sc_certificate, "/etc/ncgrpc/server.crt");
	assert_string_equal(sc->sc_key, "/etc/ncgrpc/server.key");
	assert_string_equal(sc->sc_devices, "/etc/ncgrpc/devices");
	assert_string_equal(sc->sc_operator_socket,
	                    "/run/ncgrpc/operator.sock");
	assert_int_equal(sc->sc_operator_socket_mode, 0660);
	assert_null(sc->sc_operator_socket_group);
	assert_string_equal(sc->sc_log_file, "-");
	assert_string_equal(sc->sc_audit_log, "/var/log/ncgrpc/audit.log");
	assert_int_equal(sc->sc_nnames, 0);
	assert_int_equal(sc->sc_session_limit, 32);
	assert_int_equal(sc->sc_session_wait, 10);
	assert_int_equal(sc->sc_max_streams, 100);
	assert_int_equal(sc->sc_keepalive_interval, 0);
	assert_int_equal(sc->sc_tcp_keepalive, 60);
	assert_int_equal(sc->sc_dead_peer_timeout, 30);
	assert_int_equal(sc->sc_handshake_timeout, 10);
}

static void
test_defaults(void **state)
{
	struct sconf *sc, st;
	char err[256];

	(void)state;
	/* An empty file, comments only, and sconf_new() agree. */
	sc = parse_ok("");
	check_defaults(sc);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);
	sc = parse_ok("# nothing\n\n   \t\n   # indented comment\n");
	check_defaults(sc);
	sconf_free(sc);
	sc = NULL;
	assert_int_equal(sconf_new(&sc), 0);
	check_defaults(sc);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);
	assert_int_equal(sconf_defaults(&st), 0);
	check_defaults(&st);
	sconf_clear(&st);
	sconf_clear(&st); /* cleared twice is harmless */
	sconf_free(NULL);
}

static const char full[] = "# /etc/ncgrpc/ncgrpcd.conf\n"
                           "listen [::]:8443                 # repeatable\n"
                           "listen 192.0.2.1:443\n"
                           "listen *:9443\n"
                           "listen nms.example.net:10443\n"
                           "certificate /etc/x/server.crt\n"
                           "key /etc/x/server.key\n"
                           "devices /etc/x/devices\n"
                           "operator-socket /run/x/op.sock\n"
                           "operator-socket-mode 0640\n"
                           "operator-socket-group ncgrpc\n"
                           "log-file /var/log/x/ncgrpcd.log\n"
                           "audit-log /var/log/x/audit.log\n"
                           "name nms.example.net\n"
                           "name 192.0.2.1\n"
                           "name 2001:db8::1\n"
                           "session-limit 8\n"
                           "session-wait 30\n"
                           "max-streams 200\n"
                           "keepalive-interval 600\n"
                           "tcp-keepalive 0\n"
                           "handshake-timeout 5\n";

static void
test_every_key(void **state)
{
	struct sconf *sc;
	char err[256];

	(void)state;
	sc = parse_ok(full);
	assert_string_equal(sc->sc_file, "t.conf");
	assert_int_equal(sc->sc_nlisten, 4);
	assert_string_equal(sc->sc_listen[0].li_host, "::");
	assert_int_equal(sc->sc_listen[0].li_port, 8443);
	assert_int_equal(sc->sc_listen[0].li_line, 2);
	assert_string_equal(sc->sc_listen[1].li_host, "192.0.2.1");
	assert_int_equal(sc->sc_listen[1].li_port, 443);
	assert_string_equal(sc->sc_listen[2].li_host, "*");
	assert_int_equal(sc->sc_listen[2].li_port, 9443);
	assert_string_equal(sc->sc_listen[3].li_host, "nms.example.net");
	assert_int_equal(sc->sc_listen[3].li_port, 10443);
	assert_string_equal(sc->sc_certificate, "/etc/x/server.crt");
	assert_string_equal(sc->sc_key, "/etc/x/server.key");
	assert_string_equal(sc->sc_devices, "/etc/x/devices");
	assert_string_equal(sc->sc_operator_socket, "/run/x/op.sock");
	assert_int_equal(sc->sc_operator_socket_mode, 0640);
	assert_string_equal(sc->sc_operator_socket_group, "ncgrpc");
	assert_string_equal(sc->sc_log_file, "/var/log/x/ncgrpcd.log");
	assert_string_equal(sc->sc_audit_log, "/var/log/x/audit.log");
	assert_int_equal(sc->sc_nnames, 3);
	assert_string_equal(sc->sc_names[0].nm_name, "nms.example.net");
	assert_string_equal(sc->sc_names[1].nm_name, "192.0.2.1");
	assert_string_equal(sc->sc_names[2].nm_name, "2001:db8::1");
	assert_int_equal(sc->sc_names[2].nm_line, 16);
	assert_int_equal(sc->sc_session_limit, 8);
	assert_int_equal(sc->sc_session_wait, 30);
	assert_int_equal(sc->sc_max_streams, 200);
	assert_int_equal(sc->sc_keepalive_interval, 600);
	assert_int_equal(sc->sc_tcp_keepalive, 0);
	assert_int_equal(sc->sc_handshake_timeout, 5);
	assert_int_equal(sc->sc_line[SCONF_K_HANDSHAKE_TIMEOUT], 22);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	sconf_free(sc);
}

static void
test_repeated(void **state)
{
	struct sconf *sc;

	(void)state;
	/* The repeatable keys accumulate, replacing the default list. */
	sc = parse_ok("listen 127.0.0.1:1\nlisten [::1]:2\n");
	assert_int_equal(sc->sc_nlisten, 2);
	assert_string_equal(sc->sc_listen[0].li_host, "127.0.0.1");
	assert_string_equal(sc->sc_listen[1].li_host, "::1");
	assert_int_equal(sc->sc_listen[1].li_port, 2);
	sconf_free(sc);
	sc = parse_ok("name a.example\nname b.example\nname a.example\n");
	assert_int_equal(sc->sc_nnames, 3);
	sconf_free(sc);

	/* Other keys may not repeat. */
	parse_fails("key /a\n\nkey /b\n",
	            "t.conf:3: 'key' given twice (first at line 1)");
	parse_fails("session-limit 1\nsession-limit 1\n",
	            "t.conf:2: 'session-limit' given twice (first at line 1)");
	parse_fails("operator-socket-mode 600\noperator-socket-mode 600\n",
	            "t.conf:2: 'operator-socket-mode' given twice (first at "
	            "line 1)");
}

static void
test_quoting_and_comments(void **state)
{
	struct sconf *sc;

	(void)state;
	sc = parse_ok("certificate \"/etc/my certs/server.crt\"  # spaces\n"
	              "key \"/etc/a#b\"\n"
	              "devices /etc/a#b\n"
	              "  audit-log\t\"/x/\\\"q\\\"\\\\\"\t\r\n"
	              "log-file \"-\"\n"
	              "operator-socket-group \"\"\n"
	              "\"name\" x.example\n");
	assert_string_equal(sc->sc_certificate, "/etc/my certs/server.crt");
	assert_string_equal(sc->sc_key, "/etc/a#b");
	assert_string_equal(sc->sc_devices, "/etc/a#b");
	assert_string_equal(sc->sc_audit_log, "/x/\"q\"\\");
	assert_string_equal(sc->sc_log_file, "-");
	assert_string_equal(sc->sc_operator_socket_group, "");
	assert_string_equal(sc->sc_names[0].nm_name, "x.example");
	sconf_free(sc);
}

/* "#" starts a comment only where a word would start. */
static void
test_hash_inside_word(void **state)
{
	struct sconf *sc;

	(void)state;
	parse_fails("session-limit 5#x\n",
	            "t.conf:1: session-limit: '5#x' is not a number");
	sc = parse_ok("session-limit 5 #x y z\n#\n\t#\n");
	assert_int_equal(sc->sc_session_limit, 5);
	sconf_free(sc);
}

static void
test_malformed(void **state)
{
	char big[64];

	(void)state;
	parse_fails("\n\nlisten\n", "t.conf:3: 'listen' takes one value");
	parse_fails("listen a:1 b:2\n",
	            "t.conf:1: 'listen' takes one value (quote values with "
	            "spaces)");
	parse_fails("certificate /a b\n",
	            "t.conf:1: 'certificate' takes one value (quote values "
	            "with spaces)");
	parse_fails("listen 443\n", "t.conf:1: listen: '443' is not "
	                            "HOST:PORT, [IPV6]:PORT or *:PORT");
	parse_fails("listen ::1:443\n", "t.conf:1: listen: '::1:443' is not "
	                                "HOST:PORT, [IPV6]:PORT or *:PORT");
	parse_fails("listen [nms]:443\n",
	            "t.conf:1: listen: '[nms]:443' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	parse_fails("listen [::1]:65536\n",
	            "t.conf:1: listen: '[::1]:65536' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	parse_fails("listen *:x\n", "t.conf:1: listen: '*:x' is not "
	                            "HOST:PORT, [IPV6]:PORT or *:PORT");
	parse_fails("listen host:\n", "t.conf:1: listen: 'host:' is not "
	                              "HOST:PORT, [IPV6]:PORT or *:PORT");
	memset(big, 'h', sizeof(big));
	{
		char line[400];

		snprintf(line, sizeof(line),
		         "listen %.63s%.63s%.63s%.63s%.63s:1\n", big, big, big,
		         big, big);
		parse_fails(line, "t.conf:1: listen: host name too long");
	}
	parse_fails("session-wait ten\n",
	            "t.conf:1: session-wait: 'ten' is not a number");
	parse_fails("session-wait -1\n",
	            "t.conf:1: session-wait: '-1' is not a number");
	parse_fails("max-streams 99999999999999999999999\n",
	            "t.conf:1: max-streams: '99999999999999999999999' is too "
	            "large");
	parse_fails("tcp-keepalive 4294967296\n",
	            "t.conf:1: tcp-keepalive: '4294967296' is too large");
	parse_fails("keepalive-interval 1.5\n",
	            "t.conf:1: keepalive-interval: '1.5' is not a number");
	parse_fails("handshake-timeout \"\"\n",
	            "t.conf:1: handshake-timeout: '' is not a number");
	parse_fails("operator-socket-mode 0680\n",
	            "t.conf:1: operator-socket-mode: '0680' is not an octal "
	            "mode such as 0660");
	parse_fails("operator-socket-mode 00660\n",
	            "t.conf:1: operator-socket-mode: '00660' is not an octal "
	            "mode such as 0660");
	parse_fails("operator-socket-mode rw\n",
	            "t.conf:1: operator-socket-mode: 'rw' is not an octal "
	            "mode such as 0660");
	parse_fails("key \"/a\n", "t.conf:1: unterminated quoted string");
	parse_fails("key \"/a\\n\"\n",
	            "t.conf:1: only \\\" and \\\\ may follow a backslash");
	parse_fails("key \"/a\"b\n",
	            "t.conf:1: no space after a quoted string");
	parse_fails("key /a\"b\"\n", "t.conf:1: a quote inside a word");
	parse_fails("key /a\x01\n", "t.conf:1: control character 0x01");
	parse_fails("key \"/a\x1b\"\n", "t.conf:1: control character 0x1b");
	parse_fails("key /a\rb\n", "t.conf:1: control character 0x0d");
}

static void
test_nul(void **state)
{
	static const char text[] = "key /a\nkey\0/b\n";
	struct sconf *sc;
	char err[256];

	(void)state;
	assert_int_equal(sconf_parse_string("t.conf", text, sizeof(text) - 1,
	                                    &sc, err, sizeof(err)),
	                 -EINVAL);
	assert_string_equal(err, "t.conf:2: NUL byte");
}

static void
test_unknown_key(void **state)
{
	(void)state;
	/* A typo gets the keyword it is closest to, whatever the case. */
	parse_fails("# x\nListen [::]:443\n",
	            "t.conf:2: unknown keyword 'Listen' (did you mean "
	            "'listen'?)");
	parse_fails("auth-check-per-adress 3\n",
	            "t.conf:1: unknown keyword 'auth-check-per-adress' (did "
	            "you mean 'auth-checks-per-address'?)");
	parse_fails("sesion-limit 3\n", "t.conf:1: unknown keyword "
	                                "'sesion-limit' (did you mean "
	                                "'session-limit'?)");
	/*
	 * Else every keyword, whole, so that no buffer of the programs cuts
	 * it (ncgrpcd's and ncgrpc's did, at 512 bytes); a short word gets a
	 * suggestion only one edit away ("nope" is two from "name").
	 */
	parse_fails(
	    "# x\nlistening-address [::]:443\n",
	    "t.conf:2: unknown keyword 'listening-address' (valid: listen, "
	    "certificate, key, tls-ticket-key, devices, operator-socket, "
	    "operator-socket-mode, operator-socket-group, log-file, "
	    "audit-log, name, session-limit, session-wait, "
	    "max-streams, keepalive-interval, tcp-keepalive, "
	    "handshake-timeout, dead-peer-timeout, auth-timeout, "
	    "max-connections, "
	    "max-unauthenticated, max-unauthenticated-per-address, "
	    "preauth-streams, preauth-buffer, auth-failures, "
	    "auth-failures-per-address, auth-checks, "
	    "auth-checks-per-address, ssh-listen, ssh-host-key, "
	    "ssh-authorized-keys, ssh-log-file, ssh-login-grace-time, "
	    "ssh-max-startups, ssh-max-connections, "
	    "ssh-max-channels, metrics-listen, cluster-listen, cluster-ca, "
	    "cluster-cert, cluster-key, cluster-static-peer, cluster-etcd, "
	    "cluster-node, cluster-address, cluster-prefix, "
	    "cluster-lease-ttl, cluster-etcd-ca, cluster-etcd-cert, "
	    "cluster-etcd-key)");
}

/* The pre-authentication limits: defaults, values, and their ranges. */
static void
test_preauth_keys(void **state)
{
	struct sconf *sc;
	char err[512];

	(void)state;
	sc = parse_ok("listen *:443\n");
	assert_int_equal(sc->sc_auth_timeout, SCONF_DEFAULT_AUTH_TIMEOUT);
	assert_int_equal(sc->sc_max_connections, 10000);
	assert_int_equal(sc->sc_max_unauth, 1024);
	assert_int_equal(sc->sc_max_unauth_per_addr, 32);
	assert_int_equal(sc->sc_preauth_streams, 4);
	assert_int_equal(sc->sc_preauth_buffer, 131072);
	assert_int_equal(sc->sc_auth_failures, 5);
	assert_int_equal(sc->sc_auth_failures_per_addr, 50);
	assert_int_equal(sc->sc_auth_checks, 32);
	assert_int_equal(sc->sc_auth_checks_per_addr, 8);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);
	sc = parse_ok("listen *:443\nauth-timeout 5\npreauth-streams 2\n"
	              "auth-checks-per-address 1\n");
	assert_int_equal(sc->sc_auth_timeout, 5);
	assert_int_equal(sc->sc_preauth_streams, 2);
	assert_int_equal(sc->sc_auth_checks_per_addr, 1);
	sconf_free(sc);
	/* One message needs room: Initialize may be 64 KiB. */
	validate_fails("listen *:443\npreauth-buffer 65536\n",
	               "t.conf:2: preauth-buffer: 65536 is out of range "
	               "(65600..16777216)");
	validate_fails("listen *:443\nauth-timeout 0\n",
	               "t.conf:2: auth-timeout: 0 is out of range (1..3600)");
}

static void
test_long_lines(void **state)
{
	char *text;
	struct sconf *sc;
	char err[256];
	size_t n;

	(void)state;
	/* Exactly SCONF_MAX_LINE bytes (plus CR LF) is fine... */
	text = malloc(SCONF_MAX_LINE + 64);
	assert_non_null(text);
	n = (size_t)snprintf(text, SCONF_MAX_LINE + 64, "devices /");
	memset(text + n, 'd', SCONF_MAX_LINE - n);
	memcpy(text + SCONF_MAX_LINE, "\r\n", 3);
	assert_int_equal(sconf_parse_string("t.conf", text, strlen(text), &sc,
	                                    err, sizeof(err)),
	                 0);
	assert_int_equal(strlen(sc->sc_devices), SCONF_MAX_LINE - 8);
	sconf_free(sc);
	/* ... one more is not, even as a comment. */
	text[0] = '#';
	memcpy(text + SCONF_MAX_LINE, "x\n", 3);
	assert_int_equal(sconf_parse_string("t.conf", text, strlen(text), &sc,
	                                    err, sizeof(err)),
	                 -EINVAL);
	assert_string_equal(err,
	                    "t.conf:1: line too long (more than 4096 bytes)");
	free(text);
}

static void
test_file(void **state)
{
	char dir[] = "/tmp/sconf_test.XXXXXX", path[128], err[512];
	struct sconf *sc = NULL;
	FILE *f;
	char *big;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ncgrpcd.conf", dir);

	/* Missing: -ENOENT, the caller's cue to use the defaults. */
	assert_int_equal(sconf_parse_file(path, &sc, err, sizeof(err)),
	                 -ENOENT);
	assert_null(sc);
	assert_non_null(strstr(err, "No such file or directory"));
	assert_int_equal(strncmp(err, path, strlen(path)), 0);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs(full, f);
	fputs("bogus 1\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(sconf_parse_file(path, &sc, err, sizeof(err)),
	                 -EINVAL);
	{
		char want[256];

		snprintf(want, sizeof(want), "%s:23: unknown keyword 'bogus'",
		         path);
		assert_int_equal(strncmp(err, want, strlen(want)), 0);
	}
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(full, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(sconf_parse_file(path, &sc, err, sizeof(err)), 0);
	assert_string_equal(sc->sc_file, path);
	assert_int_equal(sc->sc_nlisten, 4);
	sconf_free(sc);

	/* Empty file: the defaults. */
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(sconf_parse_file(path, &sc, err, sizeof(err)), 0);
	check_defaults(sc);
	sconf_free(sc);

	/* 1 MiB of comments is fine, one byte more is not. */
	big = malloc(SCONF_MAX_FILE + 1);
	assert_non_null(big);
	memset(big, '\n', SCONF_MAX_FILE + 1);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(big, 1, SCONF_MAX_FILE, f), SCONF_MAX_FILE);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(sconf_parse_file(path, &sc, err, sizeof(err)), 0);
	sconf_free(sc);
	f = fopen(path, "a");
	assert_non_null(f);
	assert_int_equal(fputc('\n', f), '\n');
	assert_int_equal(fclose(f), 0);
	sc = NULL;
	assert_int_equal(sconf_parse_file(path, &sc, err, sizeof(err)), -EFBIG);
	assert_null(sc);
	assert_non_null(strstr(err, "file too large"));
	assert_int_equal(sconf_parse_string("s", big, SCONF_MAX_FILE + 1, &sc,
	                                    err, sizeof(err)),
	                 -EFBIG);
	assert_string_equal(err, "s: file too large (more than 1048576 bytes)");
	free(big);

	/* A directory is not a configuration file. */
	assert_int_equal(sconf_parse_file(dir, &sc, err, sizeof(err)), -EINVAL);
	assert_null(sc);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void
test_validate(void **state)
{
	char name[300];

	(void)state;
	validate_fails("\n\nlisten [::]:0\n",
	               "t.conf:3: listen: port 0 is out of range (1..65535)");
	validate_fails("listen *:0\n",
	               "t.conf:1: listen: port 0 is out of range (1..65535)");
	validate_fails("listen bad_host:1\n",
	               "t.conf:1: listen: 'bad_host' is not an address or "
	               "host name");
	validate_fails("listen 1.2.3.256:1\n",
	               "t.conf:1: listen: '1.2.3.256' is not an address or "
	               "host name");
	validate_fails("certificate server.crt\n",
	               "t.conf:1: certificate: 'server.crt' is not an "
	               "absolute path");
	validate_fails("key ./k\n",
	               "t.conf:1: key: './k' is not an absolute path");
	validate_fails("devices \"\"\n",
	               "t.conf:1: devices: '' is not an absolute path");
	validate_fails("operator-socket op.sock\n",
	               "t.conf:1: operator-socket: 'op.sock' is not an "
	               "absolute path");
	validate_fails("log-file log\n",
	               "t.conf:1: log-file: 'log' is not an absolute path or "
	               "\"-\"");
	validate_fails("audit-log -\n",
	               "t.conf:1: audit-log: '-' is not an absolute path");
	validate_fails("operator-socket /"
	               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	               "aaaaaaa\n",
	               "t.conf:1: operator-socket: path longer than 107 bytes");
	validate_ok("operator-socket /"
	            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	            "aaaaaa\n");
	validate_fails(
	    "operator-socket-mode 1777\n",
	    "t.conf:1: operator-socket-mode: 1777 is more than 0777");
	validate_ok("operator-socket-mode 0\n");
	validate_ok("operator-socket-mode 777\n");
	validate_fails("operator-socket-group \"\"\n",
	               "t.conf:1: operator-socket-group: '' is not a group "
	               "name");
	validate_fails("operator-socket-group -x\n",
	               "t.conf:1: operator-socket-group: '-x' is not a group "
	               "name");
	validate_fails("operator-socket-group \"a b\"\n",
	               "t.conf:1: operator-socket-group: 'a b' is not a group "
	               "name");
	validate_ok("operator-socket-group _ncg-rpc.1\n");
	validate_fails("name ok.example\nname \"\"\n", "t.conf:2: name: empty");
	validate_fails("name -bad.example\n",
	               "t.conf:1: name: '-bad.example' is not a DNS name or IP "
	               "address");
	validate_fails("name \"a b\"\n",
	               "t.conf:1: name: 'a b' is not a DNS name or IP address");
	validate_fails("name 10.0.0.300\n",
	               "t.conf:1: name: '10.0.0.300' is not a DNS name or IP "
	               "address");
	validate_fails("name *.example.net\n",
	               "t.conf:1: name: '*.example.net' is not a DNS name or "
	               "IP address");
	validate_fails("name a..b\n",
	               "t.conf:1: name: 'a..b' is not a DNS name or IP "
	               "address");
	validate_fails("name a.b.\n",
	               "t.conf:1: name: 'a.b.' is not a DNS name or IP "
	               "address");
	validate_fails("name a-.b\n",
	               "t.conf:1: name: 'a-.b' is not a DNS name or IP "
	               "address");
	validate_ok("name localhost\nname 1x.example\nname ::1\nname a-b.c0\n");
	/* 63-byte labels are fine, 64 not; 253 bytes are fine, 254 not. */
	memset(name, 'a', sizeof(name));
	name[63] = '\0';
	assert_true(sconf_name_valid(name));
	name[63] = 'a';
	name[64] = '\0';
	assert_false(sconf_name_valid(name));
	memset(name, 'a', sizeof(name));
	name[50] = name[101] = name[152] = name[203] = '.';
	name[253] = '\0';
	assert_true(sconf_name_valid(name));
	name[253] = 'a';
	name[254] = '\0';
	assert_false(sconf_name_valid(name));

	validate_fails("session-limit 0\n", "t.conf:1: session-limit: 0 is out "
	                                    "of range (1..10000)");
	validate_fails("session-limit 10001\n",
	               "t.conf:1: session-limit: 10001 is out of range "
	               "(1..10000)");
	validate_ok("session-limit 10000\n");
	validate_fails("session-wait 0\n",
	               "t.conf:1: session-wait: 0 is out of range (1..3600)");
	validate_fails("max-streams 0\n",
	               "t.conf:1: max-streams: 0 is out of range (1..10000)");
	validate_fails("keepalive-interval 9\n",
	               "t.conf:1: keepalive-interval: 9 is out of range (0 or "
	               "10..86400)");
	validate_fails("keepalive-interval 86401\n",
	               "t.conf:1: keepalive-interval: 86401 is out of range (0 "
	               "or 10..86400)");
	validate_ok("keepalive-interval 10\n");
	validate_fails("tcp-keepalive 32768\n",
	               "t.conf:1: tcp-keepalive: 32768 is out of range (0 or "
	               "1..32767)");
	validate_fails("handshake-timeout 0\n",
	               "t.conf:1: handshake-timeout: 0 is out of range "
	               "(1..300)");
	validate_fails("handshake-timeout 301\n",
	               "t.conf:1: handshake-timeout: 301 is out of range "
	               "(1..300)");
}

static void
test_no_listen(void **state)
{
	struct sconf *sc = parse_ok("");
	char err[256];

	(void)state;
	listen_clear(sc);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.conf: no listen address");
	sconf_free(sc);
}

/* Command-line values override the file, and then replace its lists. */
static void
test_set(void **state)
{
	struct sconf *sc = parse_ok("listen [::1]:1\nlisten [::1]:2\n"
	                            "name a.example\nsession-limit 4\n");
	char err[512];

	(void)state;
	assert_int_equal(sconf_set(sc, "session-limit", "6", err, sizeof(err)),
	                 0);
	assert_int_equal(sc->sc_session_limit, 6);
	assert_int_equal(sc->sc_line[SCONF_K_SESSION_LIMIT], 0);
	assert_int_equal(sconf_set(sc, "session-limit", "7", err, sizeof(err)),
	                 0);
	assert_int_equal(sc->sc_session_limit, 7);
	assert_int_equal(sconf_set(sc, "listen", "*:8443", err, sizeof(err)),
	                 0);
	assert_int_equal(sconf_set(sc, "listen", "[::]:9443", err, sizeof(err)),
	                 0);
	assert_int_equal(sc->sc_nlisten, 2);
	assert_string_equal(sc->sc_listen[0].li_host, "*");
	assert_int_equal(sc->sc_listen[1].li_port, 9443);
	assert_int_equal(sconf_set(sc, "name", "b.example", err, sizeof(err)),
	                 0);
	assert_int_equal(sc->sc_nnames, 1);
	assert_string_equal(sc->sc_names[0].nm_name, "b.example");
	assert_int_equal(sconf_set(sc, "key", "/k", err, sizeof(err)), 0);
	assert_string_equal(sc->sc_key, "/k");

	assert_int_equal(sconf_set(sc, "session-limit", "x", err, sizeof(err)),
	                 -EINVAL);
	assert_string_equal(err,
	                    "command line: session-limit: 'x' is not a number");
	assert_int_equal(sc->sc_session_limit, 7);
	assert_int_equal(sconf_set(sc, "nope", "1", err, sizeof(err)), -EINVAL);
	assert_int_equal(strncmp(err,
	                         "command line: unknown keyword 'nope' "
	                         "(valid: listen, ",
	                         50),
	                 0);
	assert_int_equal(sconf_set(sc, "listen", "[::1]:0", err, sizeof(err)),
	                 0);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "command line: listen: port 0 is out of range "
	                         "(1..65535)");
	sconf_free(sc);
}

/* metrics-listen: off by default, one HOST:PORT, validated when given. */
static void
test_metrics_listen(void **state)
{
	struct sconf *sc;
	char err[512];

	(void)state;
	sc = parse_ok("");
	assert_null(sc->sc_metrics_listen_host);
	assert_int_equal(sc->sc_metrics_listen_port, 0);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);

	sc = parse_ok("metrics-listen 127.0.0.1:9464\n");
	assert_string_equal(sc->sc_metrics_listen_host, "127.0.0.1");
	assert_int_equal(sc->sc_metrics_listen_port, 9464);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	assert_int_equal(
	    sconf_set(sc, "metrics-listen", "[::1]:9", err, sizeof(err)), 0);
	assert_string_equal(sc->sc_metrics_listen_host, "::1");
	assert_int_equal(sc->sc_metrics_listen_port, 9);
	sconf_free(sc);

	sc = parse_ok("metrics-listen 127.0.0.1:0\n");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.conf:1: metrics-listen: '127.0.0.1' port 0 "
	                         "is not an address or host name and a port "
	                         "1..65535");
	sconf_free(sc);
	parse_fails("metrics-listen 9464\n",
	            "t.conf:1: metrics-listen: '9464' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	parse_fails("metrics-listen a:1\nmetrics-listen b:2\n",
	            "t.conf:2: 'metrics-listen' given twice (first at line 1)");
}

/* The cluster keys: off by default; a listener or a peer needs the PKI. */
static void
test_cluster_forward(void **state)
{
	struct sconf *sc;
	char err[512];

	(void)state;
	sc = parse_ok("");
	assert_null(sc->sc_cluster_listen_host);
	assert_null(sc->sc_cluster_static_peer_host);
	assert_null(sc->sc_cluster_ca);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);

	sc = parse_ok("cluster-listen *:7443\n"
	              "cluster-ca /c/ca.crt\n"
	              "cluster-cert /c/n.crt\n"
	              "cluster-key /c/n.key\n"
	              "cluster-static-peer [::1]:7444\n");
	assert_string_equal(sc->sc_cluster_listen_host, "*");
	assert_int_equal(sc->sc_cluster_listen_port, 7443);
	assert_string_equal(sc->sc_cluster_static_peer_host, "::1");
	assert_int_equal(sc->sc_cluster_static_peer_port, 7444);
	assert_string_equal(sc->sc_cluster_key, "/c/n.key");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);

	sc = parse_ok("cluster-listen 127.0.0.1:7443\ncluster-ca /c/ca\n");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.conf:1: cluster-listen needs cluster-cert");
	sconf_free(sc);

	sc = parse_ok("cluster-static-peer 127.0.0.1:7443\n");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err,
	                    "t.conf:1: cluster-static-peer needs cluster-ca");
	sconf_free(sc);

	sc = parse_ok("cluster-static-peer *:7443\ncluster-ca /a\n"
	              "cluster-cert /b\ncluster-key /c\n");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	sconf_free(sc);

	sc = parse_ok("cluster-listen 127.0.0.1:1\ncluster-ca ca.crt\n"
	              "cluster-cert /b\ncluster-key /c\n");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.conf:2: cluster-ca: 'ca.crt' is not an "
	                         "absolute path");
	sconf_free(sc);
	parse_fails("cluster-listen 7443\n",
	            "t.conf:1: cluster-listen: '7443' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
}

/* The cluster keywords: off by default, checked only with cluster-etcd. */
static void
test_cluster(void **state)
{
	struct sconf *sc;

	(void)state;
	sc = parse_ok("");
	assert_null(sc->sc_cluster_etcd);
	assert_null(sc->sc_cluster_node);
	assert_null(sc->sc_cluster_addr_host);
	assert_string_equal(sc->sc_cluster_prefix, "/ncgrpc/");
	assert_int_equal(sc->sc_cluster_lease_ttl, 10);
	sconf_free(sc);

	sc = parse_ok("cluster-etcd \"10.0.0.1:2379, 10.0.0.2\"\n"
	              "cluster-node nms-1\n"
	              "cluster-address [2001:db8::1]:8443\n"
	              "cluster-prefix /prod/ncgrpc/\n"
	              "cluster-lease-ttl 15\n");
	assert_string_equal(sc->sc_cluster_etcd, "10.0.0.1:2379, 10.0.0.2");
	assert_string_equal(sc->sc_cluster_node, "nms-1");
	assert_string_equal(sc->sc_cluster_addr_host, "2001:db8::1");
	assert_int_equal(sc->sc_cluster_addr_port, 8443);
	assert_string_equal(sc->sc_cluster_prefix, "/prod/ncgrpc/");
	assert_int_equal(sc->sc_cluster_lease_ttl, 15);
	sconf_free(sc);
	validate_ok("cluster-etcd e1:2379\ncluster-address nms-1.example:9\n");
	/* Without cluster-etcd nothing else is looked at. */
	validate_ok("cluster-prefix nope\n");

	parse_fails("cluster-address *:9\n",
	            "t.conf:1: cluster-address: '*:9' is not HOST:PORT or "
	            "[IPV6]:PORT");
	parse_fails("cluster-address nms\n",
	            "t.conf:1: cluster-address: 'nms' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	validate_fails("cluster-etcd \" , \"\n",
	               "t.conf:1: cluster-etcd: no endpoint");
	validate_fails("cluster-etcd e1\ncluster-prefix ncgrpc/\n",
	               "t.conf:2: cluster-prefix: 'ncgrpc/' must start and "
	               "end with '/' and hold at most 128 printable bytes");
	validate_fails("cluster-etcd e1\ncluster-prefix \"/a b/\"\n",
	               "t.conf:2: cluster-prefix: '/a b/' must start and "
	               "end with '/' and hold at most 128 printable bytes");
	validate_fails("cluster-etcd e1\ncluster-node a/b\n",
	               "t.conf:2: cluster-node: 'a/b' is not 1 to 255 of "
	               "A-Z a-z 0-9 . _ : @ -");
	validate_fails("cluster-etcd e1\ncluster-address a:0\n",
	               "t.conf:2: cluster-address: 'a' port 0 is not an "
	               "address or host name and a port 1..65535");
	validate_fails("cluster-etcd e1\ncluster-lease-ttl 1\n",
	               "t.conf:2: cluster-lease-ttl: 1 is out of range "
	               "(2..300)");
	validate_fails("cluster-etcd e1\ncluster-etcd-cert /c\n",
	               "t.conf:2: cluster-etcd-cert and cluster-etcd-key go "
	               "together");
	validate_fails("cluster-etcd e1\ncluster-etcd-cert /c\n"
	               "cluster-etcd-key /k\n",
	               "t.conf:2: cluster-etcd-cert needs cluster-etcd-ca (a "
	               "client certificate is for TLS only)");
	validate_fails("cluster-etcd e1\ncluster-etcd-ca ca.pem\n",
	               "t.conf:2: cluster-etcd-ca: 'ca.pem' is not an "
	               "absolute path");
	validate_ok("cluster-etcd https://e1\ncluster-etcd-ca /ca\n"
	            "cluster-etcd-cert /c\ncluster-etcd-key /k\n");
}

static void
test_ticket_key(void **state)
{
	struct sconf *sc;
	char err[512];

	(void)state;
	/* Unset: ncgrpcd puts it beside the key. */
	sc = parse_ok("");
	assert_null(sc->sc_tls_ticket_key);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);
	sc = parse_ok("tls-ticket-key none\n");
	assert_string_equal(sc->sc_tls_ticket_key, "none");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);
	sc = parse_ok("tls-ticket-key /var/lib/ncgrpc/ticket\n");
	assert_string_equal(sc->sc_tls_ticket_key, "/var/lib/ncgrpc/ticket");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);
	sc = parse_ok("\ntls-ticket-key ticket\n");
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.conf:2: tls-ticket-key: 'ticket' is not "
	                         "an absolute path");
	sconf_free(sc);
	parse_fails("tls-ticket-key\n",
	            "t.conf:1: 'tls-ticket-key' takes one value");
}

/* The keys of ncgrpc-sshd: defaults, values, malformed and out of range. */
static void
test_ssh_keys(void **state)
{
	struct sconf *sc;
	char err[512];

	(void)state;
	sc = parse_ok("");
	assert_string_equal(sc->sc_ssh_listen_host, "::");
	assert_int_equal(sc->sc_ssh_listen_port, 830);
	assert_string_equal(sc->sc_ssh_host_key,
	                    "/etc/ncgrpc/ssh_host_ed25519_key");
	assert_string_equal(sc->sc_ssh_authorized_keys,
	                    "/etc/ncgrpc/ssh_authorized_keys");
	assert_string_equal(sc->sc_ssh_log_file, "-");
	assert_int_equal(sc->sc_ssh_grace, 30);
	assert_int_equal(sc->sc_ssh_max_startups, 64);
	assert_int_equal(sc->sc_ssh_max_conns, 1000);
	assert_int_equal(sc->sc_ssh_max_channels, 10);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	sconf_free(sc);

	sc = parse_ok("ssh-listen 127.0.0.1:2830\n"
	              "ssh-host-key /k\n"
	              "ssh-authorized-keys /a\n"
	              "ssh-log-file /l\n"
	              "ssh-login-grace-time 5\n"
	              "ssh-max-startups 7\n"
	              "ssh-max-connections 9\n"
	              "ssh-max-channels 3\n");
	assert_string_equal(sc->sc_ssh_listen_host, "127.0.0.1");
	assert_int_equal(sc->sc_ssh_listen_port, 2830);
	assert_string_equal(sc->sc_ssh_host_key, "/k");
	assert_string_equal(sc->sc_ssh_authorized_keys, "/a");
	assert_string_equal(sc->sc_ssh_log_file, "/l");
	assert_int_equal(sc->sc_ssh_grace, 5);
	assert_int_equal(sc->sc_ssh_max_startups, 7);
	assert_int_equal(sc->sc_ssh_max_conns, 9);
	assert_int_equal(sc->sc_ssh_max_channels, 3);
	assert_int_equal(sconf_validate(sc, err, sizeof(err)), 0);
	/* The command line overrides the file. */
	assert_int_equal(
	    sconf_set(sc, "ssh-listen", "[::1]:22", err, sizeof(err)), 0);
	assert_string_equal(sc->sc_ssh_listen_host, "::1");
	assert_int_equal(sc->sc_ssh_listen_port, 22);
	assert_int_equal(
	    sconf_set(sc, "ssh-listen", "nonsense", err, sizeof(err)), -EINVAL);
	assert_string_equal(sc->sc_ssh_listen_host, "::1");
	sconf_free(sc);

	sc = parse_ok("ssh-listen *:830\n");
	assert_string_equal(sc->sc_ssh_listen_host, "*");
	sconf_free(sc);

	parse_fails("ssh-listen 830\n",
	            "t.conf:1: ssh-listen: '830' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	parse_fails("ssh-listen [nope]:830\n",
	            "t.conf:1: ssh-listen: '[nope]:830' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	parse_fails("ssh-listen host:99999\n",
	            "t.conf:1: ssh-listen: 'host:99999' is not HOST:PORT, "
	            "[IPV6]:PORT or *:PORT");
	parse_fails("ssh-listen a:1\nssh-listen b:2\n",
	            "t.conf:2: 'ssh-listen' given twice (first at line 1)");
	parse_fails("ssh-max-channels lots\n",
	            "t.conf:1: ssh-max-channels: 'lots' is not a number");
	parse_fails("ssh-login-grace-time 99999999999\n",
	            "t.conf:1: ssh-login-grace-time: '99999999999' is too "
	            "large");
	parse_fails("ssh-host-key\n",
	            "t.conf:1: 'ssh-host-key' takes one value");
	validate_fails("ssh-listen host:0\n",
	               "t.conf:1: ssh-listen: 'host' port 0 is not an address "
	               "or host name and a port 1..65535");
	validate_fails("ssh-listen bad_host!:830\n",
	               "t.conf:1: ssh-listen: 'bad_host!' port 830 is not an "
	               "address or host name and a port 1..65535");
	validate_fails("ssh-host-key relative\n",
	               "t.conf:1: ssh-host-key: 'relative' is not an absolute "
	               "path");
	validate_fails("ssh-log-file relative\n",
	               "t.conf:1: ssh-log-file: 'relative' is not an absolute "
	               "path or \"-\"");
	validate_fails("ssh-login-grace-time 0\n",
	               "t.conf:1: ssh-login-grace-time: 0 is out of range "
	               "(1..600)");
	validate_fails("ssh-max-startups 100001\n",
	               "t.conf:1: ssh-max-startups: 100001 is out of range "
	               "(1..100000)");
	validate_fails("ssh-max-connections 0\n",
	               "t.conf:1: ssh-max-connections: 0 is out of range "
	               "(1..100000)");
	validate_fails("ssh-max-channels 1001\n",
	               "t.conf:1: ssh-max-channels: 1001 is out of range "
	               "(1..1000)");
}

static void
test_small_err(void **state)
{
	struct sconf *sc;
	char err[8];

	(void)state;
	assert_int_equal(
	    sconf_parse_string("t.conf", "x 1\n", 4, &sc, err, sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "t.conf:");
	assert_int_equal(sconf_parse_string("t.conf", "x 1\n", 4, &sc, NULL, 0),
	                 -EINVAL);
	/* A last line without newline, and a NULL name. */
	assert_int_equal(sconf_parse_string(NULL, "key /k", 6, &sc, NULL, 0),
	                 0);
	assert_string_equal(sc->sc_key, "/k");
	assert_string_equal(sc->sc_file, "<config>");
	sconf_free(sc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_every_key),
	    cmocka_unit_test(test_repeated),
	    cmocka_unit_test(test_quoting_and_comments),
	    cmocka_unit_test(test_hash_inside_word),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_nul),
	    cmocka_unit_test(test_unknown_key),
	    cmocka_unit_test(test_preauth_keys),
	    cmocka_unit_test(test_long_lines),
	    cmocka_unit_test(test_file),
	    cmocka_unit_test(test_validate),
	    cmocka_unit_test(test_no_listen),
	    cmocka_unit_test(test_set),
	    cmocka_unit_test(test_small_err),
	    cmocka_unit_test(test_ticket_key),
	    cmocka_unit_test(test_ssh_keys),
	    cmocka_unit_test(test_metrics_listen),
	    cmocka_unit_test(test_cluster),
	    cmocka_unit_test(test_cluster_forward),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
