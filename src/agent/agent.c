/*
 * ncgrpc-agent: NETCONF and shell sessions over outbound HTTPS, device side.
 *
 * The agent reads a Junos-style outbound-https configuration, runs one
 * client (client.c) per "client" stanza, and reloads the configuration on
 * SIGHUP or when the file changes.  A reload restarts only the clients whose
 * connection settings changed; waittime and reconnect-strategy apply live,
 * and the sessions of other clients are never touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <uv.h>

#include "client.h"
#include "conf.h"
#include "err.h"
#include "filewatch.h"
#include "log.h"
#include "proc.h"
#include "session.h"
#include "xport.h"

#define AGENT_DEFAULT_CONF "/etc/ncgrpc/agent.conf"
#define AGENT_LOG_DIR      "/var/log"
#define AGENT_RELOAD_DELAY 300 /* ms: let an editor finish writing */

struct agent_client {
	struct client *ac_client;
	char *ac_name;
};

static struct {
	uv_loop_t *loop;
	const char *conf_path;
	const char *log_override; /* -L: wins over log-file */
	char *log_path;
	struct conf *conf;
	struct client_settings cs;
	struct agent_client *clients;
	size_t nclients;
	uv_signal_t sighup, sigint, sigterm;
	struct heaptrim trim;
	struct filewatch watch;
	int stopping;
	unsigned pending_stops;
	int log_fd;
} agent = {.conf_path = AGENT_DEFAULT_CONF, .log_fd = -1};

static const struct option main_longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static noreturn void
usage(int code)
{
	FILE *fp = code == 0 ? stdout : stderr;

	fprintf(
	    fp,
	    "usage: ncgrpc-agent [-dnV] [-f file] [-L logfile]\n"
	    "       ncgrpc-agent --help | --version\n"
	    "\n"
	    "Dials out over TLS (gRPC on HTTP/2) to the management servers "
	    "of an\n"
	    "outbound-https configuration, and runs the NETCONF and shell "
	    "sessions\n"
	    "they ask for (jnx.jet.netconf.Ncgrpc, as a Junos device does).\n"
	    "\n"
	    "  -f file     configuration file (default %s)\n"
	    "  -n          check the configuration, print the result, and "
	    "exit\n"
	    "  -L logfile  log here instead of the configured log-file; "
	    "\"-\" is stderr\n"
	    "  -d          debug logging\n"
	    "  -V, --version  print the version and exit\n"
	    "  -h, --help     print this help and exit\n"
	    "\n"
	    "Signals: SIGHUP reloads the configuration (so does saving the "
	    "file);\n"
	    "SIGINT and SIGTERM end all sessions and exit.\n"
	    "See ncgrpc-agent(8) and docs/configuration.md.\n",
	    AGENT_DEFAULT_CONF);
	exit(code);
}

/*
 * The file holds plaintext (or trivially decoded $9$) secrets: say so when
 * anyone but its owner may read it, or change it (and with it the
 * netconf-command the agent runs).
 */
static void
check_conf_mode(void)
{
	struct stat st;

	if (stat(agent.conf_path, &st) != 0 ||
	    (st.st_mode & (S_IRWXG | S_IRWXO)) == 0)
		return;
	log_warnx("configuration \"%s\" holds secrets but is %s by %s "
	          "(mode %04o); chmod 600 it",
	          agent.conf_path,
	          (st.st_mode & (S_IWGRP | S_IWOTH)) != 0 ? "writable"
	                                                  : "readable",
	          (st.st_mode & S_IRWXO) != 0 ? "others" : "its group",
	          (unsigned)(st.st_mode & 07777));
}

/*
 * Whether file[0..len) names a program a session could run: as the spawn
 * finds it (proc_path_resolve()), with the sessions' PATH.
 */
static int
program_found(const char *file, size_t len)
{
	const char *envp[] = {"PATH=" SESSION_DEFAULT_PATH, NULL};
	char *word, *path = NULL;
	int rc;

	if ((word = strndup(file, len)) == NULL)
		return 1; /* no word on it: out of memory is not the backend's
		           */
	rc = proc_path_resolve(word, envp, &path);
	free(word);
	free(path);
	return rc == 0 || rc == -ENOMEM;
}

/* Whether word is one the shell runs itself: a builtin or reserved word. */
static int
sh_own_word(const char *word, size_t len)
{
	static const char *const own[] = {
	    ".",        ":",      "[",      "!",       "{",        "alias",
	    "break",    "case",   "cd",     "command", "continue", "echo",
	    "eval",     "exit",   "export", "false",   "for",      "getopts",
	    "hash",     "if",     "kill",   "local",   "printf",   "read",
	    "readonly", "return", "set",    "shift",   "test",     "times",
	    "trap",     "true",   "type",   "ulimit",  "umask",    "unset",
	    "until",    "wait",   "while",
	};
	size_t i;

	for (i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strlen(own[i]) == len && strncmp(own[i], word, len) == 0)
			return 1;
	return 0;
}

/*
 * What would make every session fail although the configuration parses:
 * a user that does not exist, a shell or a NETCONF backend that is not
 * there.  Warnings only, at the start, at each reload and with -n: the
 * user or the program may appear later (a directory service, a package
 * installed after the agent), and sessions look them up each time.
 */
static void
check_backends(const struct conf *cf)
{
	const struct conf_agent *ag = &cf->cf_agent;
	const char *cmd = ag->ag_netconf_command, *eq;
	struct passwd *pw;
	size_t len;

	pw = ag->ag_user != NULL ? getpwnam(ag->ag_user) : getpwuid(geteuid());
	if (ag->ag_user != NULL && pw == NULL)
		log_warnx("user \"%s\": no such user; every session will "
		          "fail with \"unknown user\" until it exists",
		          ag->ag_user);
	/* A system account's login shell refuses logins: so would ours. */
	if (ag->ag_shell == NULL && pw != NULL && pw->pw_shell != NULL &&
	    (strstr(pw->pw_shell, "nologin") != NULL ||
	     strcmp(pw->pw_shell, "/bin/false") == 0 ||
	     strcmp(pw->pw_shell, "/usr/bin/false") == 0))
		log_warnx("user \"%s\": the login shell is %s, so shell "
		          "sessions end at once; give the agent a 'shell'",
		          pw->pw_name, pw->pw_shell);
	if (ag->ag_shell != NULL && access(ag->ag_shell, X_OK) != 0)
		log_warnx("shell \"%s\": %s; shell sessions will fail",
		          ag->ag_shell, strerror(errno));
	/*
	 * netconf-command runs under /bin/sh -c: its program is the first
	 * word after any VAR=value assignments and an "exec".  Only a plain
	 * word is checked: an absolute path, or a name looked up in PATH;
	 * not the shell's own words, quoting, expansions or a path relative
	 * to the user's home, where sessions start.
	 */
	for (;;) {
		cmd += strspn(cmd, " \t");
		len = strcspn(cmd, " \t");
		if ((eq = memchr(cmd, '=', len)) == NULL || eq == cmd)
			break;
		cmd += len;
	}
	if (len == 4 && strncmp(cmd, "exec", 4) == 0) {
		cmd += len;
		cmd += strspn(cmd, " \t");
		len = strcspn(cmd, " \t");
	}
	if (len == 0 || strcspn(cmd, "'\"\\$`;&|<>(){}~*?[=") < len ||
	    sh_own_word(cmd, len) ||
	    (cmd[0] != '/' && memchr(cmd, '/', len) != NULL))
		return;
	if (!program_found(cmd, len))
		log_warnx("netconf-command: \"%.*s\" is not an executable "
		          "program%s; NETCONF sessions will fail",
		          (int)len, cmd,
		          cmd[0] == '/' ? "" : " in the sessions' PATH");
}

static int
load_conf(struct conf **out, char *err, size_t errlen)
{
	struct conf *cf;
	int rc;

	if ((rc = conf_parse_file(agent.conf_path, &cf, err, errlen)) != 0)
		return rc;
	if ((rc = conf_validate(cf, err, errlen)) != 0) {
		conf_free(cf);
		return rc;
	}
	*out = cf;
	return 0;
}

/*
 * Logs to path (ours now), and gives NETCONF backends' stderr the same
 * file.  On failure the log stays where it was.
 */
static void
open_log(char *path)
{
	int rc, fd;

	if ((rc = log_open(path)) != 0) {
		log_warnx("cannot open log file \"%s\": %s", path,
		          strerror(-rc));
		free(path);
		return;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (agent.log_fd != -1)
		close(agent.log_fd);
	agent.log_fd = fd;
	agent.cs.cs_session.se_stderr_fd = fd;
	free(agent.log_path);
	agent.log_path = path;
}

/* Applies the agent { } block: logging, keepalive and session settings. */
static void
apply_agent(const struct conf *cf)
{
	const struct conf_agent *ag = &cf->cf_agent;
	char *path = NULL;

	agent.cs.cs_ping_interval_ms = ag->ag_keepalive_interval * 1000;
	agent.cs.cs_ping_timeout_ms = ag->ag_keepalive_timeout * 1000;
	agent.cs.cs_xport.xo_keepalive_idle = ag->ag_tcp_keepidle;
	agent.cs.cs_xport.xo_keepalive_intvl = ag->ag_tcp_keepintvl;
	agent.cs.cs_xport.xo_keepalive_cnt = ag->ag_tcp_keepcnt;
	agent.cs.cs_xport.xo_user_timeout_ms = 0;
	agent.cs.cs_xport.xo_connect_timeout_ms = 0;
	xport_opts_dead_peer(&agent.cs.cs_xport, ag->ag_dead_peer_timeout);
	agent.cs.cs_ping_interval_max_ms = ag->ag_keepalive_interval_max * 1000;
	agent.cs.cs_session_limit = ag->ag_session_limit;
	/* The strings live in cf, which stays until the next reload. */
	agent.cs.cs_session.se_user = ag->ag_user;
	agent.cs.cs_session.se_netconf_command = ag->ag_netconf_command;
	agent.cs.cs_session.se_shell = ag->ag_shell;

	if (agent.log_override != NULL)
		return;
	if (ag->ag_log_file[0] == '/')
		path = strdup(ag->ag_log_file);
	else if (asprintf(&path, "%s/%s", AGENT_LOG_DIR, ag->ag_log_file) < 0)
		path = NULL;
	if (path == NULL)
		fatalx("out of memory");
	/* The same file was opened again as the reload began (reload()). */
	if (agent.log_path != NULL && strcmp(path, agent.log_path) == 0) {
		free(path);
		return;
	}
	open_log(path);
}

static void
on_client_stopped(void *arg)
{
	(void)arg;
	agent.pending_stops--;
	if (agent.stopping && agent.pending_stops == 0) {
		uv_close((uv_handle_t *)&agent.sighup, NULL);
		uv_close((uv_handle_t *)&agent.sigint, NULL);
		uv_close((uv_handle_t *)&agent.sigterm, NULL);
		heaptrim_close(&agent.trim, NULL, NULL);
		agent.cs.cs_trim = NULL;
		filewatch_close(&agent.watch);
		proc_spawner_stop();
		proc_orphans_release();
	}
}

static void
stop_client(struct agent_client *ac, const char *why)
{
	agent.pending_stops++;
	client_stop(ac->ac_client, why, on_client_stopped, NULL);
	free(ac->ac_name);
	ac->ac_client = NULL;
	ac->ac_name = NULL;
}

static int
start_client(struct agent_client *ac, const struct conf_client *cc)
{
	int rc;

	if ((ac->ac_name = strdup(cc->cc_name)) == NULL)
		return -ENOMEM;
	if ((rc = client_start(agent.loop, cc, &agent.cs, &ac->ac_client)) !=
	    0) {
		free(ac->ac_name);
		ac->ac_name = NULL;
	}
	return rc;
}

static struct agent_client *
find_client(const char *name)
{
	for (size_t i = 0; i < agent.nclients; i++)
		if (agent.clients[i].ac_name != NULL &&
		    strcmp(agent.clients[i].ac_name, name) == 0)
			return &agent.clients[i];
	return NULL;
}

/*
 * Whether the agent block's connection settings differ.  The session
 * settings (user, shell, netconf-command, session-limit) apply to the next
 * session whatever happens, so they need no word.
 */
static int
conn_settings_changed(const struct conf_agent *a, const struct conf_agent *b)
{
	return a->ag_keepalive_interval != b->ag_keepalive_interval ||
	       a->ag_keepalive_timeout != b->ag_keepalive_timeout ||
	       a->ag_keepalive_interval_max != b->ag_keepalive_interval_max ||
	       a->ag_tcp_keepidle != b->ag_tcp_keepidle ||
	       a->ag_tcp_keepintvl != b->ag_tcp_keepintvl ||
	       a->ag_tcp_keepcnt != b->ag_tcp_keepcnt ||
	       a->ag_dead_peer_timeout != b->ag_dead_peer_timeout;
}

static void
reload(const char *trigger)
{
	struct agent_client *nc, *old;
	struct conf *cf;
	char err[512], *path;
	unsigned added = 0, removed = 0, restarted = 0, kept = 0;
	size_t i;
	int rc;

	if (agent.stopping)
		return;
	/*
	 * The log first, whatever the new file holds: logrotate's "create"
	 * renames it and sends SIGHUP (docs/configuration.md).
	 */
	if (agent.log_override == NULL && agent.log_path != NULL &&
	    (path = strdup(agent.log_path)) != NULL)
		open_log(path);
	if ((rc = load_conf(&cf, err, sizeof(err))) != 0) {
		log_warnx("configuration reload (%s) failed, keeping the "
		          "running configuration: %s",
		          trigger, err);
		return;
	}
	if ((nc = calloc(cf->cf_nclients, sizeof(*nc))) == NULL) {
		log_warnx("configuration reload (%s) failed: out of memory",
		          trigger);
		conf_free(cf);
		return;
	}
	if (conn_settings_changed(&agent.conf->cf_agent, &cf->cf_agent))
		log_info("configuration reload (%s): the new keepalive and "
		         "dead-peer settings apply to connections opened from "
		         "now on; waiting connections keep theirs until they "
		         "are replaced",
		         trigger);
	apply_agent(cf);
	check_conf_mode();
	check_backends(cf);
	for (i = 0; i < cf->cf_nclients; i++) {
		const struct conf_client *cc = &cf->cf_clients[i];
		const struct conf_client *prev =
		    conf_client_find(agent.conf, cc->cc_name);

		old = find_client(cc->cc_name);
		if (old != NULL && prev != NULL &&
		    conf_client_equal_conn(prev, cc)) {
			client_update(old->ac_client, cc);
			nc[i] = *old;
			old->ac_client = NULL;
			old->ac_name = NULL;
			kept++;
			continue;
		}
		if (old != NULL) {
			stop_client(old, "configuration changed");
			restarted++;
		} else
			added++;
		if (start_client(&nc[i], cc) != 0)
			log_warnx("client \"%s\": cannot start: out of memory",
			          cc->cc_name);
	}
	for (i = 0; i < agent.nclients; i++)
		if (agent.clients[i].ac_client != NULL) {
			stop_client(&agent.clients[i],
			            "removed from the configuration");
			removed++;
		}
	free(agent.clients);
	agent.clients = nc;
	agent.nclients = cf->cf_nclients;
	conf_free(agent.conf);
	agent.conf = cf;
	log_info("configuration reloaded (%s): %u added, %u removed, %u "
	         "restarted, %u unchanged",
	         trigger, added, removed, restarted, kept);
}

static void
on_conf_changed(void *arg)
{
	(void)arg;
	reload("file changed");
}

static void
shutdown_agent(const char *why)
{
	if (agent.stopping)
		return;
	agent.stopping = 1;
	log_info("shutting down: %s", why);
	agent.pending_stops++;
	for (size_t i = 0; i < agent.nclients; i++)
		if (agent.clients[i].ac_client != NULL)
			stop_client(&agent.clients[i], why);
	on_client_stopped(NULL);
}

static void
on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	if (signum == SIGHUP)
		reload("SIGHUP");
	else
		shutdown_agent(signum == SIGINT ? "SIGINT" : "SIGTERM");
}

int
main(int argc, char **argv)
{
	enum log_level level = LOG_LEVEL_INFO;
	char err[512];
	int ch, check = 0, rc;

	log_init("ncgrpc-agent", level);
	while ((ch = getopt_long(argc, argv, "df:hL:nV", main_longopts,
	                         NULL)) != -1) {
		switch (ch) {
		case 'd':
			level = LOG_LEVEL_DEBUG;
			break;
		case 'f':
			agent.conf_path = optarg;
			break;
		case 'L':
			agent.log_override = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'V':
			printf("ncgrpc-agent %s\n", NCGRPC_VERSION);
			return 0;
		case 'h':
			usage(0);
		default:
			usage(64);
		}
	}
	if (optind != argc)
		usage(64);
	log_set_level(level);
	if (load_conf(&agent.conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "ncgrpc-agent: %s\n", err);
		return 1;
	}
	if (check) {
		check_conf_mode();
		check_backends(agent.conf);
		printf("%s: configuration OK (%zu client%s)\n", agent.conf_path,
		       agent.conf->cf_nclients,
		       agent.conf->cf_nclients == 1 ? "" : "s");
		conf_free(agent.conf);
		return 0;
	}
	if (agent.log_override != NULL && strcmp(agent.log_override, "-") &&
	    (rc = log_open(agent.log_override)) != 0) {
		fprintf(stderr, "ncgrpc-agent: cannot open \"%s\": %s\n",
		        agent.log_override, strerror(-rc));
		return 1;
	}
	agent.cs.cs_session.se_stderr_fd = -1;
	apply_agent(agent.conf);
	if (RAND_bytes((unsigned char *)&agent.cs.cs_instance_id,
	               sizeof(agent.cs.cs_instance_id)) != 1)
		fatalx("no randomness for the instance id");

	signal(SIGPIPE, SIG_IGN);
	agent.loop = uv_default_loop();
	log_info("ncgrpc-agent %s starting: %zu client%s, instance id %llu",
	         NCGRPC_VERSION, agent.conf->cf_nclients,
	         agent.conf->cf_nclients == 1 ? "" : "s",
	         (unsigned long long)agent.cs.cs_instance_id);
	check_conf_mode();
	check_backends(agent.conf);
	if ((agent.clients = calloc(agent.conf->cf_nclients,
	                            sizeof(*agent.clients))) == NULL)
		fatalx("out of memory");
	agent.nclients = agent.conf->cf_nclients;
	heaptrim_init(&agent.trim, agent.loop, 0, 0);
	agent.cs.cs_trim = &agent.trim;
	/* What a session leaves behind is then found among our children. */
	if ((rc = proc_orphans_adopt(agent.loop)) != 0)
		log_debug("sessions' orphans stay with init (%s): their ends "
		          "scan /proc",
		          uv_strerror(rc));
	/* The loop goes on while a session's process starts. */
	if ((rc = proc_spawner_start(agent.loop)) != 0)
		log_warnx("no thread to start sessions' processes (%s): the "
		          "loop waits for each exec",
		          uv_strerror(rc));
	for (size_t i = 0; i < agent.nclients; i++)
		if (start_client(&agent.clients[i],
		                 &agent.conf->cf_clients[i]) != 0)
			fatalx("out of memory");
	uv_signal_init(agent.loop, &agent.sighup);
	uv_signal_init(agent.loop, &agent.sigint);
	uv_signal_init(agent.loop, &agent.sigterm);
	uv_signal_start(&agent.sighup, on_signal, SIGHUP);
	uv_signal_start(&agent.sigint, on_signal, SIGINT);
	uv_signal_start(&agent.sigterm, on_signal, SIGTERM);
	if ((rc = filewatch_start(agent.loop, &agent.watch, agent.conf_path,
	                          AGENT_RELOAD_DELAY, on_conf_changed, NULL)) !=
	    0)
		log_warnx("cannot watch \"%s\" for changes (%s); reload with "
		          "SIGHUP",
		          agent.conf_path, uv_strerror(rc));
	uv_run(agent.loop, UV_RUN_DEFAULT);

	for (size_t i = 0; i < agent.nclients; i++)
		free(agent.clients[i].ac_name);
	free(agent.clients);
	conf_free(agent.conf);
	free(agent.log_path);
	if (agent.log_fd != -1)
		close(agent.log_fd);
	rc = uv_loop_close(agent.loop);
	log_info("stopped");
	return rc == 0 ? 0 : 1;
}
