/*
 * Is the device asking for a secret?  A shell session in line mode has its
 * input cut into lines and written to the audit log; a line typed at a
 * prompt such as "Password:" or "[sudo] password for alice:" must not be.
 * The device's terminal, whose echo is off at such a prompt, is on the far
 * side of the wire protocol, so the prompt is recognised from the output:
 * the text after the last line end, held here, and read when a line goes.
 */
#ifndef NCGRPC_PROMPT_H
#define NCGRPC_PROMPT_H

#include <stddef.h>

#define PROMPT_TAIL 160 /* bytes of the last output line kept */

struct prompt_tail {
	char pt_buf[PROMPT_TAIL];
	size_t pt_len;
};

/* Takes more output: the tail is what follows its last CR or LF. */
void prompt_feed(struct prompt_tail *pt, const void *data, size_t len);

/* Forgets the tail (a line was typed: the next one needs a new prompt). */
void prompt_reset(struct prompt_tail *pt);

/*
 * Nonzero if the tail is a prompt for a secret: after its escape sequences
 * and trailing blanks, it ends with ':' and names a password, passphrase,
 * passcode, PIN, secret or verification code (ASCII, any case).
 */
int prompt_is_secret(const struct prompt_tail *pt);

#endif
