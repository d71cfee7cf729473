/*
 * The audit log of ncgrpcd and ncgrpc-sshd, which append to the same file
 * (O_APPEND, one write per line): one line per event, "TIME event=NAME k=v
 * ...". A value is quoted when it is empty or holds spaces, quotes,
 * backslashes, control bytes or bytes >= 0x7f; inside quotes, '"' and '\' are
 * escaped and control bytes are written \xNN.  Secrets never go here.
 */
#ifndef NCGRPC_AUDIT_H
#define NCGRPC_AUDIT_H

/* Opens (appends to) path, mode 0600; "-" means stderr.  0 or -errno. */
int audit_open(const char *path);
void audit_close(void);

/*
 * Writes one event.  The variadic part is pairs of (const char *key,
 * const char *value), ended by a NULL key; a NULL value is skipped.
 */
void audit_event(const char *event, ...);

#endif
