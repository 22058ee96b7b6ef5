/* The embedding API of the NBD server (include/vdisk/nbd.h): configuration
 * checks (max_payload's range, an older struct_size keeping later members at
 * their defaults, TLS file errors naming the file), listeners (a non-loopback address only when asked, a Unix socket in
 * use), URIs, serve_fds() over a socketpair with a client thread, and run()
 * ended by vdisk_nbd_server_stop() from another thread with a client still
 * connected. */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/nbd.h"

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void read_all(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
}

static void write_all(int fd, const void *buf, size_t len)
{
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
}

/* A minimal client: NBD_OPT_EXPORT_NAME, one write, one read, NBD_CMD_DISC. */
static void *client(void *arg)
{
	int fd = *(int *)arg;
	unsigned char b[4096 + 64];
	read_all(fd, b, 18);
	assert_int_equal(get64(b), UINT64_C(0x4e42444d41474943));
	put32(b, 3); /* fixed newstyle, no zeroes */
	put64(b + 4, UINT64_C(0x49484156454f5054));
	put32(b + 12, 1);
	put32(b + 16, 0);
	write_all(fd, b, 20);
	read_all(fd, b, 10);
	assert_int_equal(get64(b), 1 << 20);
	put32(b, 0x25609513);
	put32(b + 4, 1); /* flags 0, type WRITE */
	put64(b + 8, 42);
	put64(b + 16, 4096);
	put32(b + 24, 512);
	memset(b + 28, 0x5a, 512);
	write_all(fd, b, 28 + 512);
	read_all(fd, b, 16);
	assert_int_equal(get64(b + 8), 42);
	assert_int_equal(b[4] | b[5] | b[6] | b[7], 0);
	put32(b, 0x25609513);
	put32(b + 4, 0); /* READ */
	put64(b + 8, 43);
	put64(b + 16, 4096);
	put32(b + 24, 512);
	write_all(fd, b, 28);
	read_all(fd, b, 16 + 512);
	assert_int_equal(get64(b + 8), 43);
	assert_int_equal(b[16], 0x5a);
	put32(b, 0x25609513);
	put32(b + 4, 2); /* DISC */
	memset(b + 8, 0, 20);
	write_all(fd, b, 28);
	assert_int_equal(read(fd, b, 1), 0);
	return NULL;
}

static void test_config(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	assert_null(vdisk_nbd_server_new(NULL, NULL));
	struct vdisk_nbd_config cfg = {.struct_size = 4};
	assert_null(vdisk_nbd_server_new(d, &cfg));
	char name[4098];
	memset(name, 'x', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	cfg = (struct vdisk_nbd_config){.struct_size = sizeof cfg, .export_name = name};
	assert_null(vdisk_nbd_server_new(d, &cfg));
	assert_non_null(strstr(vdisk_errmsg(), "4096"));
	cfg = (struct vdisk_nbd_config){.struct_size = sizeof cfg, .tls = VDISK_NBD_TLS_ON};
	assert_null(vdisk_nbd_server_new(d, &cfg));
	assert_non_null(strstr(vdisk_errmsg(), "tls"));
	/* --max-payload: a multiple of the sector, up to 256 MiB */
	size_t bad[] = {1000, 256, (256u << 20) + 512};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cfg = (struct vdisk_nbd_config){.struct_size = sizeof cfg, .max_payload = bad[i]};
		assert_null(vdisk_nbd_server_new(d, &cfg));
		assert_non_null(strstr(vdisk_errmsg(), "max_payload"));
	}
	cfg = (struct vdisk_nbd_config){.struct_size = sizeof cfg, .max_payload = 1u << 20};
	struct vdisk_nbd_server *s = vdisk_nbd_server_new(d, &cfg);
	assert_non_null(s);
	vdisk_nbd_server_free(s);
	/* a caller built before the later members: they keep their defaults */
	cfg =
	    (struct vdisk_nbd_config){.struct_size = offsetof(struct vdisk_nbd_config, max_payload),
	                              .max_payload = 1000,
	                              .tls_verify_peer = true};
	s = vdisk_nbd_server_new(d, &cfg);
	assert_non_null(s);
	vdisk_nbd_server_free(s);
	/* client certificates need certificates and a CA */
	cfg = (struct vdisk_nbd_config){.struct_size = sizeof cfg,
	                                .tls = VDISK_NBD_TLS_ON,
	                                .tls_cert_dir = "/nonexistent-vdisk-dir",
	                                .tls_verify_peer = true};
	assert_null(vdisk_nbd_server_new(d, &cfg));
	assert_non_null(strstr(vdisk_errmsg(), "/nonexistent-vdisk-dir/server-cert.pem"));
	s = vdisk_nbd_server_new(d, NULL);
	assert_non_null(s);
	assert_null(vdisk_nbd_server_uri(s));
	assert_int_equal(vdisk_nbd_server_run(s), -1); /* no listener */
	vdisk_nbd_server_free(s);
	vdisk_unref(d);
}

static void test_listeners(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_nbd_config cfg = {.struct_size = sizeof cfg, .export_name = "a b"};
	struct vdisk_nbd_server *s = vdisk_nbd_server_new(d, &cfg);
	assert_non_null(s);
	/* every address but loopback must be asked for */
	assert_int_equal(vdisk_nbd_server_listen_tcp(s, "0.0.0.0", "0", false), -1);
	assert_non_null(strstr(vdisk_errmsg(), "loopback"));
	assert_int_equal(vdisk_nbd_server_listen_tcp(s, "0.0.0.0", "0", true), 0);
	char *uri = vdisk_nbd_server_uri(s);
	assert_non_null(uri);
	assert_int_equal(strncmp(uri, "nbd://0.0.0.0:", 14), 0);
	assert_non_null(strstr(uri, "/a%20b"));
	free(uri);
	assert_int_equal(vdisk_nbd_server_listen_tcp(s, "127.0.0.1", "0", false), 0);
	char path[512];
	snprintf(path, sizeof path, "%s/s.sock", tu_tmpdir());
	assert_int_equal(vdisk_nbd_server_listen_unix(s, path), 0);
	/* a second server cannot take a socket that is in use */
	struct vdisk_nbd_server *s2 = vdisk_nbd_server_new(d, NULL);
	assert_int_equal(vdisk_nbd_server_listen_unix(s2, path), -1);
	assert_non_null(strstr(vdisk_errmsg(), "in use"));
	char longpath[200];
	memset(longpath, 'p', sizeof longpath - 1);
	longpath[sizeof longpath - 1] = '\0';
	assert_int_equal(vdisk_nbd_server_listen_unix(s2, longpath), -1);
	vdisk_nbd_server_free(s2);
	vdisk_nbd_server_free(s);
	/* freeing removed the socket file */
	assert_int_equal(access(path, F_OK), -1);
	vdisk_unref(d);
}

static void test_serve_fds(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_nbd_server *s = vdisk_nbd_server_new(d, NULL);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pthread_t t;
	pthread_create(&t, NULL, client, &sv[1]);
	assert_int_equal(vdisk_nbd_server_serve_fds(s, sv[0], sv[0]), 0);
	close(sv[0]); /* serve_fds leaves the descriptors to the caller */
	pthread_join(t, NULL);
	close(sv[1]);
	/* the same server serves another client afterwards */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pthread_create(&t, NULL, client, &sv[1]);
	assert_int_equal(vdisk_nbd_server_serve_fds(s, sv[0], sv[0]), 0);
	close(sv[0]);
	pthread_join(t, NULL);
	close(sv[1]);
	vdisk_nbd_server_free(s);
	vdisk_unref(d);
}

struct runner {
	struct vdisk_nbd_server *s;
	int rc;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;
	r->rc = vdisk_nbd_server_run(r->s);
	return NULL;
}

static void test_run_and_stop(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=1M", 0);
	struct vdisk_nbd_config cfg = {.struct_size = sizeof cfg, .threads = 3};
	struct runner r = {.s = vdisk_nbd_server_new(d, &cfg), .rc = -2};
	char path[512];
	snprintf(path, sizeof path, "%s/run.sock", tu_tmpdir());
	assert_int_equal(vdisk_nbd_server_listen_unix(r.s, path), 0);
	pthread_t t;
	pthread_create(&t, NULL, run_thread, &r);
	/* a client that connects and says nothing, and one that does it all */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	int idle = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(idle, (struct sockaddr *)&sa, sizeof sa), 0);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	client(&fd);
	close(fd);
	vdisk_nbd_server_stop(r.s);
	pthread_join(t, NULL);
	assert_int_equal(r.rc, 0);
	unsigned char b[64];
	ssize_t n;
	while ((n = read(idle, b, sizeof b)) > 0)
		; /* the greeting, then the server's close */
	assert_int_equal(n, 0);
	close(idle);
	vdisk_nbd_server_free(r.s);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_listeners),
	    cmocka_unit_test(test_serve_fds),
	    cmocka_unit_test(test_run_and_stop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
