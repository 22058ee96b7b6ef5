/* `vdisk serve --iscsi HOST:PORT`: the iSCSI side of the serve command
 * (include/vdisk/iscsi.h).  cmd_serve.c calls in here at three points: to take
 * the iSCSI options out of argv, after the disk is opened (to serve iSCSI
 * alone, or start the target beside the NBD server), and at the end. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve_iscsi.h"
#include "vdisk/iscsi.h"

static struct {
	char *listen; /* HOST:PORT */
	const char *target_name;
	const char *chap_file;
	const char *pr_state_file;
	unsigned max_conns;
	int login_timeout_ms;
	struct vdisk_iscsi_target *t;
	pthread_t thread;
	bool thread_started;
	int rc;
} g;

static struct vdisk_iscsi_target *volatile g_only;

static void on_signal(int sig)
{
	(void)sig;
	struct vdisk_iscsi_target *t = g_only;
	if (t)
		vdisk_iscsi_target_stop(t);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

/* Take one option (with its value) out of argv; returns its value or NULL. */
static int take(int *argc, char **argv, int i, const char *name, const char **val)
{
	size_t n = strlen(name);
	if (strncmp(argv[i], name, n) != 0)
		return 0;
	if (argv[i][n] == '=') {
		*val = argv[i] + n + 1;
		memmove(argv + i, argv + i + 1, (size_t)(*argc - i) * sizeof *argv);
		(*argc)--;
		return 1;
	}
	if (argv[i][n] != '\0')
		return 0;
	if (i + 1 >= *argc)
		return -1;
	*val = argv[i + 1];
	memmove(argv + i, argv + i + 2, (size_t)(*argc - i - 1) * sizeof *argv);
	*argc -= 2;
	return 1;
}

int serve_iscsi_args(const struct vdisk_cmd *cmd, int *argc, char **argv)
{
	static const char *const names[] = {
	    "--iscsi",          "--target-name",           "--iscsi-chap-file",
	    "--iscsi-pr-state", "--iscsi-max-connections", "--iscsi-login-timeout"};
	for (int i = 1; i < *argc;) {
		if (strcmp(argv[i], "--") == 0)
			break;
		int which = -1, r = 0;
		const char *val = NULL;
		for (int k = 0; k < 6 && which < 0; k++) {
			r = take(argc, argv, i, names[k], &val);
			if (r)
				which = k;
		}
		if (which < 0) {
			i++;
			continue;
		}
		if (r < 0)
			return tool_usage(cmd, "%s needs a value", names[which]);
		unsigned long v;
		switch (which) {
		case 0:
			free(g.listen);
			g.listen = strdup(val);
			if (!g.listen)
				return tool_error("serve", EXIT_FAIL, "out of memory");
			break;
		case 1: g.target_name = val; break;
		case 2: g.chap_file = val; break;
		case 3: g.pr_state_file = val; break;
		case 4:
			if (parse_uint(val, 100000, &v) < 0 || v == 0)
				return tool_usage(
				    cmd, "--iscsi-max-connections: '%s' is not 1..100000", val);
			g.max_conns = (unsigned)v;
			break;
		case 5:
			if (parse_uint(val, 86400, &v) < 0)
				return tool_usage(
				    cmd, "--iscsi-login-timeout: '%s' is not 0..86400 seconds",
				    val);
			g.login_timeout_ms = v ? (int)(v * 1000) : -1;
			break;
		}
	}
	if (!g.listen &&
	    (g.target_name || g.chap_file || g.pr_state_file || g.max_conns || g.login_timeout_ms))
		return tool_usage(cmd, "iSCSI options need --iscsi HOST:PORT");
	return 0;
}

bool serve_iscsi_wanted(void)
{
	return g.listen != NULL;
}

static int setup(struct vdisk *d, bool read_only, int log_level)
{
	struct vdisk_iscsi_config cfg = {
	    .struct_size = sizeof cfg,
	    .target_name = g.target_name,
	    .read_only = read_only,
	    .max_connections = g.max_conns,
	    .login_timeout_ms = g.login_timeout_ms,
	    .chap_file = g.chap_file,
	    .pr_state_file = g.pr_state_file,
	    .log_level = log_level,
	};
	g.t = vdisk_iscsi_target_new(d, &cfg);
	if (!g.t)
		return tool_error("serve", -1, "%s", vdisk_errmsg());
	/* "HOST:PORT", "[V6]:PORT" */
	char *host = g.listen, *port = NULL;
	if (host[0] == '[') {
		char *close = strchr(host, ']');
		if (!close || (close[1] && close[1] != ':'))
			goto bad;
		*close = '\0';
		port = close[1] ? close + 2 : NULL;
		host++;
	} else {
		char *colon = strrchr(host, ':');
		if (colon) {
			if (strchr(host, ':') != colon)
				goto bad;
			*colon = '\0';
			port = colon + 1;
		}
	}
	if (vdisk_iscsi_target_listen_tcp(g.t, host, port, true) < 0) {
		tool_error("serve", -1, "%s", vdisk_errmsg());
		vdisk_iscsi_target_free(g.t);
		g.t = NULL;
		return -1;
	}
	char *uri = vdisk_iscsi_target_uri(g.t);
	printf("%s\n", uri ? uri : "");
	fflush(stdout);
	free(uri);
	return 0;
bad:
	tool_error("serve", -1, "--iscsi: '%s' is not HOST:PORT", g.listen);
	vdisk_iscsi_target_free(g.t);
	g.t = NULL;
	return -1;
}

static void *run_thread(void *arg)
{
	(void)arg;
	g.rc = vdisk_iscsi_target_run(g.t);
	if (g.rc < 0)
		tool_error("serve", EXIT_FAIL, "iscsi: %s", vdisk_errmsg());
	return NULL;
}

int serve_iscsi_start(struct vdisk *d, bool read_only, int log_level)
{
	if (setup(d, read_only, log_level) < 0)
		return -1;
	if (pthread_create(&g.thread, NULL, run_thread, NULL) != 0) {
		tool_error("serve", -1, "iscsi: cannot start a thread");
		vdisk_iscsi_target_free(g.t);
		g.t = NULL;
		return -1;
	}
	g.thread_started = true;
	return 0;
}

int serve_iscsi_stop(void)
{
	if (!g.t)
		return 0;
	vdisk_iscsi_target_stop(g.t);
	if (g.thread_started)
		pthread_join(g.thread, NULL);
	g.thread_started = false;
	vdisk_iscsi_target_free(g.t);
	g.t = NULL;
	free(g.listen);
	g.listen = NULL;
	return g.rc;
}

int serve_iscsi_only(struct vdisk *d, bool read_only, int log_level, const char *pid_file)
{
	if (setup(d, read_only, log_level) < 0)
		return EXIT_FAIL;
	g_only = g.t;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	int status = EXIT_OK;
	if (pid_file) {
		char tmp[PATH_MAX];
		FILE *f = NULL;
		if (snprintf(tmp, sizeof tmp, "%s.tmp%d", pid_file, (int)getpid()) <
		    (int)sizeof tmp)
			f = fopen(tmp, "w");
		if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 ||
		    rename(tmp, pid_file) < 0) {
			status = tool_error("serve", EXIT_FAIL, "--pid-file '%s': %s", pid_file,
			                    strerror(errno));
			g_only = NULL;
			serve_iscsi_stop();
			return status;
		}
	}
	if (vdisk_iscsi_target_run(g.t) < 0)
		status = tool_error("serve", EXIT_FAIL, "iscsi: %s", vdisk_errmsg());
	g_only = NULL;
	serve_iscsi_stop();
	if (pid_file)
		unlink(pid_file);
	return status;
}
