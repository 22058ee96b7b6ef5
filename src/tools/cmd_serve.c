/* vdisk serve SPEC: export a disk stack over NBD (include/vdisk/nbd.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve_iscsi.h"
#include "tool.h"
#include "vdisk/nbd.h"

static int serve_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_serve = {
    .name = "serve",
    .summary = "export a disk over NBD",
    .usage =
        "Usage: vdisk serve SPEC [options]\n\n"
        "Serves SPEC to NBD clients (nbdinfo, nbdcopy, qemu, fio, nbdfuse) until SIGINT\n"
        "or SIGTERM; then stops accepting, finishes the requests clients have sent,\n"
        "flushes the disk and exits 0.  When the socket is ready it writes the pid file\n"
        "and prints one line: the NBD URI to connect to.\n\n"
        "Where:\n"
        "  --unix PATH             listen on a Unix socket\n"
        "  --tcp HOST:PORT         listen on TCP (default 127.0.0.1:10809; port 0 picks\n"
        "                          one); other hosts can connect only if HOST says so\n"
        "  --stdio                 serve one client on stdin/stdout, then exit\n"
        "                          (with none of these, a socket passed by systemd socket\n"
        "                          activation, LISTEN_FDS, is used if there is one)\n"
        "What:\n"
        "  --export-name NAME      the export's name (default: empty)\n"
        "  --description TEXT      shown by clients (NBD_INFO_DESCRIPTION)\n"
        "  -r, --read-only         export read-only\n"
        "How:\n"
        "  --threads N             worker threads (default: one per CPU)\n"
        "  --max-connections N     at once; more are refused (default 100)\n"
        "  --handshake-timeout S   seconds a client has to negotiate (default 10; 0: no limit)\n"
        "  --pid-file PATH         write the server's pid here once it is ready\n"
        "  --foreground            stay in the foreground (the default; accepted for scripts)\n"
        "  -v, --verbose           log refused clients; twice: every connection\n"
        "TLS:\n"
        "  --tls=off|on|require    off: refuse STARTTLS; on: offer it; require: nothing\n"
        "                          without it (default: on if credentials are given)\n"
        "  --tls-cert FILE         PEM certificate (chain), with --tls-key FILE\n"
        "  --tls-psk FILE          pre-shared keys, lines 'identity:hexkey' (psktool format)\n\n"
        "Exit status: 0 after a clean stop, 1 on failure, 2 on a usage error.\n",
    .main = serve_main,
};

/* Cleared before the server is freed: the handler stays installed to the end,
 * so a second SIGTERM during the clean stop cannot kill the process. */
static struct vdisk_nbd_server *volatile g_server;

static void on_signal(int sig)
{
	(void)sig;
	struct vdisk_nbd_server *s = g_server;
	if (s)
		vdisk_nbd_server_stop(s);
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

/* "HOST:PORT", "[V6]:PORT", "HOST", ":PORT" */
static int split_hostport(char *arg, char **host, char **port)
{
	*host = arg;
	*port = NULL;
	if (arg[0] == '[') {
		char *close = strchr(arg, ']');
		if (!close || (close[1] && close[1] != ':'))
			return -1;
		*close = '\0';
		*host = arg + 1;
		if (close[1] == ':')
			*port = close + 2;
		return 0;
	}
	char *colon = strrchr(arg, ':');
	if (colon) {
		if (strchr(arg, ':') != colon)
			return -1; /* a bare IPv6 address needs brackets */
		*colon = '\0';
		*port = colon + 1;
	}
	return 0;
}

static int write_pid_file(const char *path)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid()) >= (int)sizeof tmp)
		return -1;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

enum {
	OPT_UNIX = 256,
	OPT_TCP,
	OPT_STDIO,
	OPT_EXPORT,
	OPT_DESC,
	OPT_THREADS,
	OPT_MAXCONN,
	OPT_HSTIMEOUT,
	OPT_PIDFILE,
	OPT_FOREGROUND,
	OPT_TLS,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_PSK,
};

static int serve_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"unix", required_argument, NULL, OPT_UNIX},
	    {"tcp", required_argument, NULL, OPT_TCP},
	    {"stdio", no_argument, NULL, OPT_STDIO},
	    {"export-name", required_argument, NULL, OPT_EXPORT},
	    {"description", required_argument, NULL, OPT_DESC},
	    {"read-only", no_argument, NULL, 'r'},
	    {"threads", required_argument, NULL, OPT_THREADS},
	    {"max-connections", required_argument, NULL, OPT_MAXCONN},
	    {"handshake-timeout", required_argument, NULL, OPT_HSTIMEOUT},
	    {"pid-file", required_argument, NULL, OPT_PIDFILE},
	    {"foreground", no_argument, NULL, OPT_FOREGROUND},
	    {"verbose", no_argument, NULL, 'v'},
	    {"tls", required_argument, NULL, OPT_TLS},
	    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
	    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
	    {"tls-psk", required_argument, NULL, OPT_TLS_PSK},
	    {NULL, 0, NULL, 0},
	};
	const struct vdisk_cmd *cmd = &vdisk_cmd_serve;
	struct vdisk_nbd_config cfg = {.struct_size = sizeof cfg};
	const char *unix_path = NULL, *pid_file = NULL;
	char *tcp = NULL;
	bool stdio = false, tls_given = false;
	unsigned long v;
	int c;
	optind = 1;
	int iscsi_status = serve_iscsi_args(cmd, &argc, argv);
	if (iscsi_status)
		return iscsi_status;
	while ((c = getopt_long(argc, argv, "rv", opts, NULL)) != -1) {
		switch (c) {
		case OPT_UNIX: unix_path = optarg; break;
		case OPT_TCP: tcp = optarg; break;
		case OPT_STDIO: stdio = true; break;
		case OPT_EXPORT: cfg.export_name = optarg; break;
		case OPT_DESC: cfg.description = optarg; break;
		case 'r': cfg.read_only = true; break;
		case OPT_THREADS:
			if (parse_uint(optarg, 256, &v) < 0 || v == 0)
				return tool_usage(cmd, "--threads: '%s' is not 1..256", optarg);
			cfg.threads = (unsigned)v;
			break;
		case OPT_MAXCONN:
			if (parse_uint(optarg, 1000000, &v) < 0 || v == 0)
				return tool_usage(
				    cmd, "--max-connections: '%s' is not a positive number",
				    optarg);
			cfg.max_connections = (unsigned)v;
			break;
		case OPT_HSTIMEOUT:
			if (parse_uint(optarg, 86400, &v) < 0)
				return tool_usage(
				    cmd, "--handshake-timeout: '%s' is not 0..86400 seconds",
				    optarg);
			cfg.handshake_timeout_ms = v ? (int)(v * 1000) : -1;
			break;
		case OPT_PIDFILE: pid_file = optarg; break;
		case OPT_FOREGROUND: break;
		case 'v': cfg.log_level++; break;
		case OPT_TLS:
			tls_given = true;
			if (strcmp(optarg, "off") == 0)
				cfg.tls = VDISK_NBD_TLS_OFF;
			else if (strcmp(optarg, "on") == 0)
				cfg.tls = VDISK_NBD_TLS_ON;
			else if (strcmp(optarg, "require") == 0)
				cfg.tls = VDISK_NBD_TLS_REQUIRE;
			else
				return tool_usage(cmd, "--tls: '%s' is not off, on or require",
				                  optarg);
			break;
		case OPT_TLS_CERT: cfg.tls_cert = optarg; break;
		case OPT_TLS_KEY: cfg.tls_key = optarg; break;
		case OPT_TLS_PSK: cfg.tls_psk_file = optarg; break;
		default: return tool_usage(cmd, "unknown option");
		}
	}
	if (optind != argc - 1)
		return tool_usage(cmd, "expected one SPEC");
	if ((unix_path != NULL) + (tcp != NULL) + stdio > 1)
		return tool_usage(cmd, "give one of --unix, --tcp and --stdio");
	bool creds = cfg.tls_cert || cfg.tls_key || cfg.tls_psk_file;
	if (!tls_given && creds)
		cfg.tls = VDISK_NBD_TLS_ON;
	if (cfg.tls == VDISK_NBD_TLS_OFF && creds)
		return tool_usage(cmd, "--tls=off with TLS credentials");
	if (cfg.log_level > VDISK_NBD_LOG_DEBUG)
		cfg.log_level = VDISK_NBD_LOG_DEBUG;

	const char *spec = argv[optind];
	struct vdisk *d = vdisk_open(spec, cfg.read_only ? VDISK_OPEN_READ_ONLY : 0);
	if (!d) {
		char why[1024];
		snprintf(why, sizeof why, "%s", vdisk_errmsg());
		/* the hint only where a read-only open would work */
		struct vdisk *ro = cfg.read_only ? NULL : vdisk_open(spec, VDISK_OPEN_READ_ONLY);
		if (ro)
			vdisk_unref(ro);
		return tool_error("serve", EXIT_FAIL, "%s%s", why,
		                  ro ? " (--read-only would serve it read-only)" : "");
	}
	if (serve_iscsi_wanted()) {
		int st = !unix_path && !tcp && !stdio
		             ? serve_iscsi_only(d, cfg.read_only, cfg.log_level, pid_file)
		         : serve_iscsi_start(d, cfg.read_only, cfg.log_level) < 0 ? EXIT_FAIL
		                                                                  : -1;
		if (st >= 0) {
			vdisk_unref(d);
			return st;
		}
	}
	struct vdisk_nbd_server *s = vdisk_nbd_server_new(d, &cfg);
	vdisk_unref(d);
	if (!s)
		return tool_error("serve", EXIT_FAIL, "%s", vdisk_errmsg());

	int rc = 0;
	const char *lpid = getenv("LISTEN_PID"), *lfds = getenv("LISTEN_FDS");
	bool activated = !unix_path && !tcp && !stdio && lpid && lfds &&
	                 strtol(lpid, NULL, 10) == (long)getpid() && strtol(lfds, NULL, 10) >= 1;
	if (activated) {
		/* systemd socket activation: the listening socket is fd 3 */
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		rc = vdisk_nbd_server_listen_fd(s, 3);
	} else if (unix_path) {
		rc = vdisk_nbd_server_listen_unix(s, unix_path);
	} else if (!stdio) {
		char *host = NULL, *port = NULL;
		char def[] = "127.0.0.1:10809";
		if (split_hostport(tcp ? tcp : def, &host, &port) < 0) {
			vdisk_nbd_server_free(s);
			return tool_usage(cmd, "--tcp: '%s' is not HOST:PORT", tcp);
		}
		/* an address given on the command line is the operator asking */
		rc = vdisk_nbd_server_listen_tcp(s, host, port, tcp != NULL);
	}
	if (rc < 0) {
		int status = tool_error("serve", EXIT_FAIL, "%s", vdisk_errmsg());
		vdisk_nbd_server_free(s);
		return status;
	}

	g_server = s;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (pid_file && write_pid_file(pid_file) < 0) {
		int status = tool_error("serve", EXIT_FAIL, "--pid-file '%s': %s", pid_file,
		                        strerror(errno));
		g_server = NULL;
		vdisk_nbd_server_free(s);
		return status;
	}
	if (stdio) {
		rc = vdisk_nbd_server_serve_fds(s, STDIN_FILENO, STDOUT_FILENO);
	} else if (activated) {
		rc = vdisk_nbd_server_run(s);
	} else {
		char *uri = vdisk_nbd_server_uri(s);
		printf("%s\n", uri ? uri : "");
		fflush(stdout);
		free(uri);
		rc = vdisk_nbd_server_run(s);
	}
	int status = rc < 0 ? tool_error("serve", EXIT_FAIL, "%s", vdisk_errmsg()) : EXIT_OK;
	if (serve_iscsi_stop() < 0)
		status = EXIT_FAIL;
	g_server = NULL;
	vdisk_nbd_server_free(s);
	if (pid_file)
		unlink(pid_file);
	return status;
}
