#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include "filewatch.h"

static void
on_settled(uv_timer_t *t)
{
	struct filewatch *fw = t->data;

	fw->fw_cb(fw->fw_arg);
}

static void
on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct filewatch *fw = h->data;

	(void)events;
	if (status < 0 || filename == NULL ||
	    strcmp(filename, fw->fw_base) != 0)
		return;
	uv_timer_start(&fw->fw_timer, on_settled, fw->fw_delay_ms, 0);
}

int
filewatch_start(uv_loop_t *loop, struct filewatch *fw, const char *path,
                unsigned delay_ms, void (*cb)(void *arg), void *arg)
{
	char *dcopy, *bcopy;
	int rc;

	memset(fw, 0, sizeof(*fw));
	uv_fs_event_init(loop, &fw->fw_event);
	uv_timer_init(loop, &fw->fw_timer);
	fw->fw_event.data = fw;
	fw->fw_timer.data = fw;
	fw->fw_delay_ms = delay_ms;
	fw->fw_cb = cb;
	fw->fw_arg = arg;
	/* dirname() and basename() may modify their argument. */
	if ((dcopy = strdup(path)) == NULL || (bcopy = strdup(path)) == NULL) {
		free(dcopy);
		return -ENOMEM;
	}
	if ((fw->fw_base = strdup(basename(bcopy))) == NULL)
		rc = -ENOMEM;
	else
		rc = uv_fs_event_start(&fw->fw_event, on_event, dirname(dcopy),
		                       0);
	free(dcopy);
	free(bcopy);
	return rc;
}

void
filewatch_close(struct filewatch *fw)
{
	if (uv_is_closing((uv_handle_t *)&fw->fw_event))
		return;
	uv_close((uv_handle_t *)&fw->fw_event, NULL);
	uv_close((uv_handle_t *)&fw->fw_timer, NULL);
	free(fw->fw_base);
	fw->fw_base = NULL;
}
