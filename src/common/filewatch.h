/*
 * Watching one configuration file for changes, for live reloads.
 *
 * The file's directory is watched, not the file: editors and tools such as
 * the registry writer replace a file by renaming a new one over it, which
 * a watch on the old inode would miss.  Events for other names in the
 * directory are ignored, and a burst of events (write, then rename) gives
 * one callback, delay_ms after the last event.
 */
#ifndef NCGRPC_FILEWATCH_H
#define NCGRPC_FILEWATCH_H

#include <uv.h>

struct filewatch {
	uv_fs_event_t fw_event;
	uv_timer_t fw_timer;
	char *fw_base; /* the watched file's name within its directory */
	unsigned fw_delay_ms;
	void (*fw_cb)(void *arg);
	void *fw_arg;
};

/*
 * Starts watching path; cb(arg) runs delay_ms after the last change.  fw is
 * the caller's and must stay valid until filewatch_close()'s handles are
 * closed.  The handles are initialised even on error, so filewatch_close()
 * is always called after this.  Returns 0, -ENOMEM, or the error of
 * uv_fs_event_start() (the directory cannot be watched: the caller falls
 * back to SIGHUP).
 */
int filewatch_start(uv_loop_t *loop, struct filewatch *fw, const char *path,
                    unsigned delay_ms, void (*cb)(void *arg), void *arg);

/* Stops the watch and closes its handles (no close callback). */
void filewatch_close(struct filewatch *fw);

#endif
