/* Fuzz the iSCSI target: the input is everything an initiator sends on one
 * connection (login PDUs and their keys, SCSI commands with their CDBs and
 * data-out, NOP, text, task management, logout), played through
 * vdisk_iscsi_target_serve_fds() from a memory file to /dev/null against a
 * small RAM disk.  So the PDU framing, the login key parser and every CDB
 * parser see the bytes.  Any input must end in a clean close: no crash, no
 * leak, no hang.  Seeds: sessions recorded by tests/py/test-iscsi-pdus.py
 * --record. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdisk/iscsi.h"

static struct vdisk_iscsi_target *target;
static int devnull = -1;

static void quiet(void *opaque, int level, const char *msg)
{
	(void)opaque;
	(void)level;
	(void)msg;
}

static void fini(void)
{
	vdisk_iscsi_target_free(target);
	if (devnull >= 0)
		close(devnull);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	struct vdisk *d = vdisk_open("ram:size=1M,huge-pages=off", 0);
	if (!d)
		abort();
	struct vdisk_iscsi_config cfg = {
	    .struct_size = sizeof cfg,
	    .log = quiet,
	};
	target = vdisk_iscsi_target_new(d, &cfg);
	vdisk_unref(d);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (!target || devnull < 0) {
		fprintf(stderr, "fuzz_iscsi: %s\n", vdisk_errmsg());
		abort();
	}
	atexit(fini);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int in = memfd_create("iscsi-input", MFD_CLOEXEC);
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
	vdisk_iscsi_target_serve_fds(target, in, devnull);
	close(in);
	return 0;
}
