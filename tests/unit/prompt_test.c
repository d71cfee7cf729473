/*
 * Recognising a prompt for a secret in a device's output (prompt.c): the
 * prompts of su, sudo, passwd, ssh, Junos and others; output that is not
 * one; prompts split across reads, behind escape sequences and at the end
 * of lines longer than the tail; truncated and oversized input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/prompt.h"

static int
secret_after(const char *out)
{
	struct prompt_tail pt = {.pt_len = 0};

	prompt_feed(&pt, out, strlen(out));
	return prompt_is_secret(&pt);
}

static void
test_secret_prompts(void **state)
{
	static const char *const yes[] = {
	    "Password:",
	    "Password: ",
	    "$ su -\r\nPassword: ",
	    "[sudo] password for alice: ",
	    "alice@router's password: ",
	    "Enter new UNIX password: ",
	    "Retype new password:",
	    "New password:",
	    "Current password:",
	    "Enter passphrase for key '/root/.ssh/id_ed25519': ",
	    "Enter PIN for 'PIV Card Holder pin (PIV_II)': ",
	    "PIN:",
	    "Verification code: ",
	    "Enter passcode:",
	    "Enter secret:\t",
	    "OTP:",
	    "root@router> start shell user root\r\nPASSWORD:",
	    /* Colours and a title around it. */
	    "\033[1;31mPassword:\033[0m ",
	    "\033]0;login\aPassword: ",
	    "\033]0;login\033\\Password: ",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (!secret_after(yes[i]))
			fail_msg("not taken for a secret prompt: \"%s\"",
			         yes[i]);
}

static void
test_other_output(void **state)
{
	static const char *const no[] = {
	    "",
	    "$ ",
	    "root@router> ",
	    "alice@host:~$ ",
	    /* The word, but not a prompt (no colon at the end). */
	    "Password changed\r\n$ ",
	    "passwd: password updated successfully\r\n",
	    "Password: \r\n",
	    "password",
	    /* A colon, but no secret named. */
	    "Username:",
	    "login:",
	    "Continue? [y/n]:",
	    /* "pin" and "otp" only as words. */
	    "Ping statistics:",
	    "spinning:",
	    "hotplug:",
	    /* The prompt was answered: a new line came. */
	    "Password: \r\n\r\n$ ",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (secret_after(no[i]))
			fail_msg("taken for a secret prompt: \"%s\"", no[i]);
}

static void
test_split_and_reset(void **state)
{
	struct prompt_tail pt = {.pt_len = 0};

	(void)state;
	/* A prompt in pieces, one byte at a time. */
	for (const char *p = "ok\r\n[sudo] pass"; *p != '\0'; p++)
		prompt_feed(&pt, p, 1);
	assert_false(prompt_is_secret(&pt));
	prompt_feed(&pt, "word for bob: ", 14);
	assert_true(prompt_is_secret(&pt));
	/* A line was typed: the next one needs a new prompt. */
	prompt_reset(&pt);
	assert_false(prompt_is_secret(&pt));
	assert_int_equal(pt.pt_len, 0);
	/* Output after the prompt on the same line ends it being one. */
	prompt_feed(&pt, "Password:", 9);
	assert_true(prompt_is_secret(&pt));
	prompt_feed(&pt, " x", 2);
	assert_false(prompt_is_secret(&pt));
	/* Nothing fed: the tail is unchanged. */
	prompt_feed(&pt, "\n", 1);
	prompt_feed(&pt, "Password:", 9);
	prompt_feed(&pt, "", 0);
	assert_int_equal(pt.pt_len, 9);
	assert_true(prompt_is_secret(&pt));
}

static void
test_long_lines(void **state)
{
	struct prompt_tail pt = {.pt_len = 0};
	char big[4 * PROMPT_TAIL];
	size_t i;

	(void)state;
	/* Oversized: a line much longer than the tail keeps its end. */
	memset(big, 'x', sizeof(big));
	memcpy(big + sizeof(big) - 10, " Password:", 10);
	prompt_feed(&pt, big, sizeof(big));
	assert_int_equal(pt.pt_len, PROMPT_TAIL);
	assert_true(prompt_is_secret(&pt));
	/* The same in pieces that overflow the tail one by one. */
	prompt_reset(&pt);
	for (i = 0; i < sizeof(big); i += 7)
		prompt_feed(&pt, big + i,
		            sizeof(big) - i < 7 ? sizeof(big) - i : 7);
	assert_int_equal(pt.pt_len, PROMPT_TAIL);
	assert_memory_equal(pt.pt_buf, big + sizeof(big) - PROMPT_TAIL,
	                    PROMPT_TAIL);
	assert_true(prompt_is_secret(&pt));
	/* A prompt pushed out of the tail by later output on its line. */
	prompt_feed(&pt, big, PROMPT_TAIL);
	assert_false(prompt_is_secret(&pt));
	/* A line end just inside the last PROMPT_TAIL bytes starts the tail. */
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - PROMPT_TAIL] = '\n';
	memcpy(big + sizeof(big) - 10, " Password:", 10);
	prompt_feed(&pt, big, sizeof(big));
	assert_int_equal(pt.pt_len, PROMPT_TAIL - 1);
	assert_true(prompt_is_secret(&pt));
	/* One just before them: the tail is the last PROMPT_TAIL bytes. */
	big[sizeof(big) - PROMPT_TAIL] = 'x';
	big[sizeof(big) - PROMPT_TAIL - 1] = '\r';
	prompt_feed(&pt, big, sizeof(big));
	assert_int_equal(pt.pt_len, PROMPT_TAIL);
	assert_memory_equal(pt.pt_buf, big + sizeof(big) - PROMPT_TAIL,
	                    PROMPT_TAIL);
	/* A line end as the last byte empties it. */
	big[sizeof(big) - 1] = '\n';
	prompt_feed(&pt, big, sizeof(big));
	assert_int_equal(pt.pt_len, 0);
	/* Truncated escapes at the end do not read past the tail. */
	prompt_reset(&pt);
	prompt_feed(&pt, "Password:\033[", 11);
	assert_true(prompt_is_secret(&pt));
	prompt_reset(&pt);
	prompt_feed(&pt, "Password:\033]0;never ended", 24);
	assert_true(prompt_is_secret(&pt));
	prompt_reset(&pt);
	prompt_feed(&pt, "Password:\033", 10);
	assert_true(prompt_is_secret(&pt));
	/* NUL and other controls are skipped, as a terminal shows them. */
	prompt_reset(&pt);
	prompt_feed(&pt, "Pass\0word\a:", 11);
	assert_true(prompt_is_secret(&pt));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_secret_prompts),
	    cmocka_unit_test(test_other_output),
	    cmocka_unit_test(test_split_and_reset),
	    cmocka_unit_test(test_long_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
