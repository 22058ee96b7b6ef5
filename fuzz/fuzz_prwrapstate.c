/* Fuzz prwrap's state-file loader: the input is written as the state file of
 * a domain over RAM, which is opened, asked for its report, and registered
 * with (which saves the state again when it persists); then closed and opened
 * once more.  A file that does not load must give an error naming the file,
 * never a crash or a leak; a file that loaded, once rewritten by prwrap, must
 * load again with the registrations it had. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk/backend.h"

static char dir[64], path[128], spec[512];

static void cleanup(void)
{
	char tmp[160];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	unlink(path);
	unlink(tmp);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* tmpfs where there is one: the state is fsynced on every change */
	snprintf(dir, sizeof dir, "/dev/shm/vdisk-fuzz-XXXXXX");
	if (!mkdtemp(dir)) {
		snprintf(dir, sizeof dir, "/tmp/vdisk-fuzz-XXXXXX");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			exit(1);
		}
	}
	snprintf(path, sizeof path, "%s/state.json", dir);
	snprintf(spec, sizeof spec,
	         "{\"type\":\"prwrap\",\"domain\":\"fuzz\",\"state-file\":\"%s\","
	         "\"host-id\":\"0123456789abcdef\",\"inner\":\"ram:size=64k\"}",
	         path);
	atexit(cleanup);
	return 0;
}

/* The report of d: registrants (at most max) in regs; -1 if it failed. */
static int report(struct vdisk *d, struct vdisk_pr_report *rep, struct vdisk_pr_registrant *regs,
                  unsigned max)
{
	memset(rep, 0, sizeof *rep);
	return vdisk_ok(vdisk_pr_report(d, rep, regs, max)) ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		abort();
	struct vdisk *d = vdisk_open(spec, 0);
	if (!d) {
		/* refused: say why, naming the file */
		if (!strstr(vdisk_errmsg(), path)) {
			fprintf(stderr, "error without the file's name: %s\n", vdisk_errmsg());
			abort();
		}
		return 0;
	}
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant regs[8];
	if (report(d, &rep, regs, 8) < 0)
		abort();
	/* register this initiator (saved if the loaded state persists), then
	 * try to reserve: may conflict with the loaded reservation */
	vdisk_pr_register(d, 0, 0x5eed, VDISK_PR_IGNORE_EXISTING_KEY);
	vdisk_pr_reserve(d, 0x5eed, VDISK_PR_WRITE_EXCLUSIVE);
	struct vdisk_pr_report before;
	if (report(d, &before, regs, 8) < 0)
		abort();
	unsigned char buf[512];
	vdisk_pread(d, buf, sizeof buf, 0);
	vdisk_unref(d);

	/* what prwrap wrote (or left) loads again, with the same registrants
	 * when they persist */
	d = vdisk_open(spec, 0);
	if (!d) {
		fprintf(stderr, "a state file that loaded does not load again: %s\n",
		        vdisk_errmsg());
		abort();
	}
	struct vdisk_pr_report after;
	if (report(d, &after, regs, 8) < 0)
		abort();
	if (before.persist_through_power_loss &&
	    (after.nregistrants != before.nregistrants || after.type != before.type))
		abort();
	vdisk_unref(d);
	return 0;
}
