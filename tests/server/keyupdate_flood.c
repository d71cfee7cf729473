/*
 * A hostile TLS 1.3 client for tests/server/test_preauth.py: it connects,
 * then sends KeyUpdate requests (each asks the server for a KeyUpdate of
 * its own) as fast as it can and never reads, with a small receive buffer.
 * It stops after SECONDS, or when its writes block for 2 s (the server
 * stopped reading), and prints the bytes it sent.
 *
 *	keyupdate_flood PORT SECONDS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	struct timeval tv = {2, 0};
	unsigned long updates = 0;
	double end;
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *wb;
	int fd, rcv = 4096;
	long sent;

	if (argc != 3) {
		fprintf(stderr, "usage: keyupdate_flood PORT SECONDS\n");
		return 64;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)atoi(argv[1]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		perror("connect");
		return 1;
	}
	ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1) {
		fprintf(stderr, "handshake failed\n");
		return 1;
	}
	/*
	 * From here on a write that blocks 2 s means the server stopped
	 * reading.  Records go to a memory BIO and then to the socket in
	 * large writes: one write per 27-byte record would be the bottleneck.
	 */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	wb = BIO_new(BIO_s_mem());
	SSL_set0_wbio(ssl, wb);
	end = now() + atof(argv[2]);
	sent = 0;
	while (now() < end) {
		char *p;
		long n;
		ssize_t w;
		int i;

		for (i = 0; i < 2048; i++) {
			if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) !=
			        1 ||
			    SSL_do_handshake(ssl) != 1)
				goto out;
			updates++;
		}
		n = BIO_get_mem_data(wb, &p);
		while (n > 0) {
			if ((w = send(fd, p, (size_t)n, 0)) <= 0)
				goto out;
			p += w;
			n -= w;
			sent += w;
		}
		(void)BIO_reset(wb);
	}
out:
	printf("%lu %ld\n", updates, sent);
	fflush(stdout);
	/* Stay connected without reading until the test kills us. */
	pause();
	return 0;
}
