/* vdisk serve SPEC: export a disk stack over NBD (include/vdisk/nbd.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "serve_iscsi.h"
#include "tool.h"
#include "vdisk/backend.h"
#include "vdisk/nbd.h"

static int serve_main(int argc, char **argv);

const struct vdisk_cmd vdisk_cmd_serve = {
    .name = "serve",
    .summary = "export a disk over NBD and/or iSCSI",
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
        "  --description TEXT      shown by clients (NBD_INFO_DESCRIPTION, NBD_OPT_LIST)\n"
        "  -r, --read-only         export read-only\n"
        "How:\n"
        "  --threads N             worker threads (default: one per CPU)\n"
        "  --max-connections N     at once; more are refused (default 100)\n"
        "  --max-payload SIZE      largest read or write (default 64M, at most 256M)\n"
        "  --handshake-timeout S   seconds a client has to negotiate (default 10; 0: no limit)\n"
        "  --pid-file PATH         write the server's pid here once it is ready\n"
        "  --foreground            stay in the foreground (the default; accepted for scripts)\n"
        "  -v, --verbose           log refused clients; twice: every connection\n"
        "Lifetime:\n"
        "  --once                  exit when the last client disconnects\n"
        "  --exit-with-parent      exit (cleanly) when the parent process exits\n"
        "TLS:\n"
        "  --tls=off|on|require    off: refuse STARTTLS; on: offer it; require: nothing\n"
        "                          without it (default: on if credentials are given)\n"
        "  --tls-cert FILE         PEM certificate (chain), with --tls-key FILE\n"
        "  --tls-certificates DIR  server-cert.pem, server-key.pem and ca-cert.pem in DIR\n"
        "                          (the layout of qemu and nbdkit)\n"
        "  --tls-verify-peer       clients must show a certificate signed by the CA:\n"
        "  --tls-ca FILE           PEM CA certificates (default: DIR/ca-cert.pem)\n"
        "  --tls-allow PATTERN     only clients whose certificate subject (RFC 2253,\n"
        "                          'CN=alice,O=Example') or PSK identity matches\n"
        "  --tls-psk FILE          pre-shared keys, lines 'identity:hexkey' (psktool format)\n"
        "iSCSI (see vdisk-iscsi(7)):\n"
        "  --iscsi HOST:PORT       serve SPEC as an iSCSI target too (alone unless an NBD\n"
        "                          listener is given with --unix, --tcp or --stdio)\n"
        "  --target-name IQN       the target's name\n"
        "  --iscsi-chap-file FILE  require CHAP with these secrets\n"
        "  --iscsi-pr-state FILE   keep persistent reservations across restarts\n"
        "  --iscsi-max-connections N, --iscsi-login-timeout S   limits for initiators\n\n"
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

/* The command line, parsed. */
struct serve_args {
	struct vdisk_nbd_config cfg;
	const char *spec;
	const char *unix_path, *pid_file;
	char *tcp;
	bool stdio, tls_given, exit_with_parent;
};

enum {
	OPT_UNIX = 256,
	OPT_TCP,
	OPT_STDIO,
	OPT_EXPORT,
	OPT_DESC,
	OPT_THREADS,
	OPT_MAXCONN,
	OPT_MAXPAYLOAD,
	OPT_HSTIMEOUT,
	OPT_PIDFILE,
	OPT_FOREGROUND,
	OPT_ONCE,
	OPT_EXIT_WITH_PARENT,
	OPT_TLS,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_CERTS,
	OPT_TLS_CA,
	OPT_TLS_VERIFY,
	OPT_TLS_ALLOW,
	OPT_TLS_PSK,
};

static const struct option serve_opts[] = {
    {"unix", required_argument, NULL, OPT_UNIX},
    {"tcp", required_argument, NULL, OPT_TCP},
    {"stdio", no_argument, NULL, OPT_STDIO},
    {"export-name", required_argument, NULL, OPT_EXPORT},
    {"description", required_argument, NULL, OPT_DESC},
    {"read-only", no_argument, NULL, 'r'},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"max-connections", required_argument, NULL, OPT_MAXCONN},
    {"max-payload", required_argument, NULL, OPT_MAXPAYLOAD},
    {"handshake-timeout", required_argument, NULL, OPT_HSTIMEOUT},
    {"pid-file", required_argument, NULL, OPT_PIDFILE},
    {"foreground", no_argument, NULL, OPT_FOREGROUND},
    {"once", no_argument, NULL, OPT_ONCE},
    {"exit-with-parent", no_argument, NULL, OPT_EXIT_WITH_PARENT},
    {"verbose", no_argument, NULL, 'v'},
    {"tls", required_argument, NULL, OPT_TLS},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-certificates", required_argument, NULL, OPT_TLS_CERTS},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY},
    {"tls-allow", required_argument, NULL, OPT_TLS_ALLOW},
    {"tls-psk", required_argument, NULL, OPT_TLS_PSK},
    {NULL, 0, NULL, 0},
};

/* The TLS options; 0, or a usage error's status. */
static int parse_tls_option(struct serve_args *a, int c, const char *arg)
{
	const struct vdisk_cmd *cmd = &vdisk_cmd_serve;
	struct vdisk_nbd_config *cfg = &a->cfg;
	switch (c) {
	case OPT_TLS:
		a->tls_given = true;
		if (strcmp(arg, "off") == 0)
			cfg->tls = VDISK_NBD_TLS_OFF;
		else if (strcmp(arg, "on") == 0)
			cfg->tls = VDISK_NBD_TLS_ON;
		else if (strcmp(arg, "require") == 0)
			cfg->tls = VDISK_NBD_TLS_REQUIRE;
		else
			return tool_usage(cmd, "--tls: '%s' is not off, on or require", arg);
		return 0;
	case OPT_TLS_CERT: cfg->tls_cert = arg; return 0;
	case OPT_TLS_KEY: cfg->tls_key = arg; return 0;
	case OPT_TLS_CERTS: cfg->tls_cert_dir = arg; return 0;
	case OPT_TLS_CA: cfg->tls_ca = arg; return 0;
	case OPT_TLS_VERIFY: cfg->tls_verify_peer = true; return 0;
	case OPT_TLS_ALLOW: cfg->tls_allow = arg; return 0;
	case OPT_TLS_PSK: cfg->tls_psk_file = arg; return 0;
	default: return tool_usage(cmd, "unknown option");
	}
}

/* Every other option; 0, or a usage error's status. */
static int parse_option(struct serve_args *a, int c, const char *arg)
{
	const struct vdisk_cmd *cmd = &vdisk_cmd_serve;
	struct vdisk_nbd_config *cfg = &a->cfg;
	unsigned long v;
	uint64_t size;
	switch (c) {
	case OPT_UNIX: a->unix_path = arg; return 0;
	case OPT_TCP: a->tcp = (char *)arg; return 0;
	case OPT_STDIO: a->stdio = true; return 0;
	case OPT_EXPORT: cfg->export_name = arg; return 0;
	case OPT_DESC: cfg->description = arg; return 0;
	case 'r': cfg->read_only = true; return 0;
	case OPT_THREADS:
		if (parse_uint(arg, 256, &v) < 0 || v == 0)
			return tool_usage(cmd, "--threads: '%s' is not 1..256", arg);
		cfg->threads = (unsigned)v;
		return 0;
	case OPT_MAXCONN:
		if (parse_uint(arg, 1000000, &v) < 0 || v == 0)
			return tool_usage(cmd, "--max-connections: '%s' is not a positive number",
			                  arg);
		cfg->max_connections = (unsigned)v;
		return 0;
	case OPT_MAXPAYLOAD:
		if (vdisk_parse_size(arg, &size) < 0 || size == 0 || size > (256u << 20))
			return tool_usage(cmd, "--max-payload: '%s' is not a size up to 256M", arg);
		cfg->max_payload = (size_t)size;
		return 0;
	case OPT_HSTIMEOUT:
		if (parse_uint(arg, 86400, &v) < 0)
			return tool_usage(cmd, "--handshake-timeout: '%s' is not 0..86400 seconds",
			                  arg);
		cfg->handshake_timeout_ms = v ? (int)(v * 1000) : -1;
		return 0;
	case OPT_PIDFILE: a->pid_file = arg; return 0;
	case OPT_FOREGROUND: return 0;
	case OPT_ONCE: cfg->once = true; return 0;
	case OPT_EXIT_WITH_PARENT: a->exit_with_parent = true; return 0;
	case 'v': cfg->log_level++; return 0;
	default: return parse_tls_option(a, c, arg);
	}
}

static int parse_args(struct serve_args *a, int argc, char **argv)
{
	const struct vdisk_cmd *cmd = &vdisk_cmd_serve;
	memset(a, 0, sizeof *a);
	a->cfg.struct_size = sizeof a->cfg;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "rv", serve_opts, NULL)) != -1) {
		if (c == '?')
			return tool_usage(cmd, "unknown option");
		int rc = parse_option(a, c, optarg);
		if (rc)
			return rc;
	}
	if (optind != argc - 1)
		return tool_usage(cmd, "expected one SPEC");
	a->spec = argv[optind];
	if ((a->unix_path != NULL) + (a->tcp != NULL) + a->stdio > 1)
		return tool_usage(cmd, "give one of --unix, --tcp and --stdio");
	struct vdisk_nbd_config *cfg = &a->cfg;
	bool creds = cfg->tls_cert || cfg->tls_key || cfg->tls_psk_file || cfg->tls_cert_dir;
	if (!a->tls_given && creds)
		cfg->tls = VDISK_NBD_TLS_ON;
	if (cfg->tls == VDISK_NBD_TLS_OFF &&
	    (creds || cfg->tls_verify_peer || cfg->tls_ca || cfg->tls_allow))
		return tool_usage(cmd, "--tls=off with TLS options");
	if (cfg->tls_ca && !cfg->tls_verify_peer)
		return tool_usage(cmd, "--tls-ca is for --tls-verify-peer");
	if (cfg->log_level > VDISK_NBD_LOG_DEBUG)
		cfg->log_level = VDISK_NBD_LOG_DEBUG;
	return 0;
}

/* Die with the parent: SIGTERM, a clean stop, when it exits.  The signal is
 * tied to the thread that forked us; a parent already gone (we are
 * reparented) is the same event, only earlier. */
static int exit_with_parent(void)
{
	pid_t parent = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
		return tool_error("serve", EXIT_FAIL, "--exit-with-parent: %s", strerror(errno));
	if (getppid() != parent || parent == 1)
		raise(SIGTERM);
	return 0;
}

static struct vdisk *open_disk(const struct serve_args *a)
{
	struct vdisk *d = vdisk_open(a->spec, a->cfg.read_only ? VDISK_OPEN_READ_ONLY : 0);
	if (!d) {
		char why[1024];
		snprintf(why, sizeof why, "%s", vdisk_errmsg());
		/* the hint only where a read-only open would work */
		struct vdisk *ro =
		    a->cfg.read_only ? NULL : vdisk_open(a->spec, VDISK_OPEN_READ_ONLY);
		if (ro)
			vdisk_unref(ro);
		tool_error("serve", EXIT_FAIL, "%s%s", why,
		           ro ? " (--read-only would serve it read-only)" : "");
	}
	return d;
}

/* Where clients come from.  0, EXIT_FAIL or EXIT_USAGE; *activated for a
 * socket from systemd. */
static int listen_on(struct vdisk_nbd_server *s, const struct serve_args *a, bool *activated)
{
	int rc = 0;
	const char *lpid = getenv("LISTEN_PID"), *lfds = getenv("LISTEN_FDS");
	*activated = !a->unix_path && !a->tcp && !a->stdio && lpid && lfds &&
	             strtol(lpid, NULL, 10) == (long)getpid() && strtol(lfds, NULL, 10) >= 1;
	if (*activated) {
		/* systemd socket activation: the listening socket is fd 3 */
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		rc = vdisk_nbd_server_listen_fd(s, 3);
	} else if (a->unix_path) {
		rc = vdisk_nbd_server_listen_unix(s, a->unix_path);
	} else if (!a->stdio) {
		char *host = NULL, *port = NULL;
		char def[] = "127.0.0.1:10809";
		if (split_hostport(a->tcp ? a->tcp : def, &host, &port) < 0)
			return tool_usage(&vdisk_cmd_serve, "--tcp: '%s' is not HOST:PORT", a->tcp);
		/* an address given on the command line is the operator asking */
		rc = vdisk_nbd_server_listen_tcp(s, host, port, a->tcp != NULL);
	}
	if (rc < 0)
		return tool_error("serve", EXIT_FAIL, "%s", vdisk_errmsg());
	return 0;
}

static int serve_main(int argc, char **argv)
{
	struct serve_args a;
	int status = serve_iscsi_args(&vdisk_cmd_serve, &argc, argv);
	if (status)
		return status;
	status = parse_args(&a, argc, argv);
	if (status)
		return status;
	struct vdisk *d = open_disk(&a);
	if (!d)
		return EXIT_FAIL;
	if (serve_iscsi_wanted()) {
		/* iSCSI alone unless an NBD listener was asked for too */
		int st = !a.unix_path && !a.tcp && !a.stdio
		             ? serve_iscsi_only(d, a.cfg.read_only, a.cfg.log_level, a.pid_file)
		         : serve_iscsi_start(d, a.cfg.read_only, a.cfg.log_level) < 0 ? EXIT_FAIL
		                                                                      : -1;
		if (st >= 0) {
			vdisk_unref(d);
			return st;
		}
	}
	struct vdisk_nbd_server *s = vdisk_nbd_server_new(d, &a.cfg);
	vdisk_unref(d);
	if (!s) {
		serve_iscsi_stop();
		return tool_error("serve", EXIT_FAIL, "%s", vdisk_errmsg());
	}
	bool activated = false;
	status = listen_on(s, &a, &activated);
	if (status) {
		vdisk_nbd_server_free(s);
		serve_iscsi_stop();
		return status;
	}

	g_server = s;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (a.exit_with_parent && (status = exit_with_parent()) != 0)
		goto out;

	if (a.pid_file && write_pid_file(a.pid_file) < 0) {
		status = tool_error("serve", EXIT_FAIL, "--pid-file '%s': %s", a.pid_file,
		                    strerror(errno));
		goto out;
	}
	int rc;
	if (a.stdio) {
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
	status = rc < 0 ? tool_error("serve", EXIT_FAIL, "%s", vdisk_errmsg()) : EXIT_OK;
	if (a.pid_file)
		unlink(a.pid_file);
out:
	g_server = NULL;
	vdisk_nbd_server_free(s);
	if (serve_iscsi_stop() < 0)
		status = EXIT_FAIL;
	return status;
}
