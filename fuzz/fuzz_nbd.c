/* Fuzz the NBD server: the input is everything a client sends on one
 * connection (client flags, options, requests, payloads), played through
 * vdisk_nbd_server_serve_fds() exactly as `vdisk serve --stdio` would, from a
 * memory file to /dev/null, against a small RAM disk.  TLS is offered (with a
 * throwaway pre-shared key) so STARTTLS and the handshake parser are reached.
 * Clients that ask for no block sizes reach the read-modify-write and range
 * lock paths with unaligned requests; reads of 64 KiB or more the sparse
 * read path.
 * Any input must end in a clean disconnect: no crash, no leak, no hang. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdisk/nbd.h"

static struct vdisk_nbd_server *server;
static int devnull = -1;

static void quiet(void *opaque, int level, const char *msg)
{
	(void)opaque;
	(void)level;
	(void)msg;
}

static void fini(void)
{
	vdisk_nbd_server_free(server);
	if (devnull >= 0)
		close(devnull);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char psk[] = "/tmp/vdisk-fuzz-nbd-psk.XXXXXX";
	int fd = mkstemp(psk);
	if (fd < 0 || write(fd, "fuzz:0123456789abcdef0123456789abcdef\n", 38) != 38)
		abort();
	close(fd);
	struct vdisk *d = vdisk_open("ram:size=1M,huge-pages=off", 0);
	if (!d)
		abort();
	struct vdisk_nbd_config cfg = {
	    .struct_size = sizeof cfg,
	    .threads = 1,
	    .tls = VDISK_NBD_TLS_ON,
	    .tls_psk_file = psk,
	    .log = quiet,
	    /* small, so that a length field costs the fuzzer no 64 MiB buffer */
	    .max_payload = 1u << 20,
	};
	server = vdisk_nbd_server_new(d, &cfg);
	unlink(psk);
	vdisk_unref(d);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (!server || devnull < 0) {
		fprintf(stderr, "fuzz_nbd: %s\n", vdisk_errmsg());
		abort();
	}
	atexit(fini);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int in = memfd_create("nbd-input", MFD_CLOEXEC);
	if (in < 0)
		abort();
	size_t off = 0;
	while (off < size) {
		ssize_t n = write(in, data + off, size - off);
		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	lseek(in, 0, SEEK_SET);
	if (vdisk_nbd_server_serve_fds(server, in, devnull) < 0)
		abort(); /* only a failed flush of the RAM disk would get here */
	close(in);
	return 0;
}
