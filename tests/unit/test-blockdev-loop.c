/* The file backend over loop devices: geometry from the device, discard that
 * reads back zeros, write-zeroes, a resize of the backing file followed by
 * `losetup -c` seen by a vdisk_wait_resize() waiter (and by a second disk on
 * the same device, through the one listener of the process), a device without
 * persistent reservations or a tray reporting none, and the uevent and NVMe
 * report parsers.
 *
 * Loop devices are attached with LO_FLAGS_AUTOCLEAR: the kernel detaches them
 * when the last descriptor closes, so a test that dies leaves none behind.
 * Skipped (77) without /dev/loop-control or root. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/loop.h>

#include <cmocka.h>

#include "backends/blockdev/blockdev.h"
#include "testutil.h"

struct loopdev {
	char path[64];
	char backing[256];
	int fd; /* held for the test's life: autoclear detaches on the last close */
};

static int loop_attach(struct loopdev *l, const char *name, uint64_t size, unsigned block_size)
{
	snprintf(l->backing, sizeof l->backing, "%s/%s", tu_tmpdir(), name);
	int bfd = open(l->backing, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (bfd < 0 || ftruncate(bfd, (off_t)size) < 0)
		return -1;
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -1;
	for (int tries = 0; tries < 20; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			break;
		snprintf(l->path, sizeof l->path, "/dev/loop%d", n);
		l->fd = open(l->path, O_RDWR | O_CLOEXEC);
		if (l->fd < 0)
			continue;
		struct loop_config cfg = {.fd = (unsigned)bfd, .block_size = block_size};
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(l->fd, LOOP_CONFIGURE, &cfg) == 0) {
			close(ctl);
			close(bfd);
			return 0;
		}
		close(l->fd); /* taken meanwhile by someone else: try another */
	}
	close(ctl);
	close(bfd);
	return -1;
}

static void loop_detach(struct loopdev *l)
{
	close(l->fd);
}

static struct vdisk *open_dev(const struct loopdev *l, const char *extra)
{
	char spec[256];
	snprintf(spec, sizeof spec, "file:path=%s%s", l->path, extra ? extra : "");
	struct vdisk *d = vdisk_open(spec, 0);
	if (!d)
		fail_msg("open %s: %s", spec, vdisk_errmsg());
	return d;
}

static void test_geometry(void **state)
{
	(void)state;
	struct loopdev l;
	assert_int_equal(loop_attach(&l, "g.img", 8 << 20, 4096), 0);
	struct vdisk *d = open_dev(&l, NULL);
	assert_string_equal(vdisk_type(d), "file");
	assert_int_equal(vdisk_sector_size(d), 4096);
	assert_int_equal(vdisk_sector_count(d), (8 << 20) / 4096);
	assert_true(vdisk_fua_respected(d));
	/* loop devices discard (holes in the backing file), but a device in
	 * general promises nothing about discarded blocks */
	assert_int_equal(vdisk_unmap_behavior(d), VDISK_UNMAP_UNSPECIFIED);
	char *js = vdisk_inspect(d, 0);
	assert_true(strstr(js, "\"direct\":true") || strstr(js, "\"direct\": true"));
	free(js);
	vdisk_unref(d);

	/* a sector smaller than the device's logical block is refused, by name */
	char spec[256];
	snprintf(spec, sizeof spec, "file:path=%s,sector-size=512", l.path);
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), "sector-size"));
	assert_non_null(strstr(vdisk_errmsg(), "4096-byte logical blocks"));
	snprintf(spec, sizeof spec, "file:path=%s,create=8M", l.path);
	assert_null(vdisk_open(spec, 0));
	assert_non_null(strstr(vdisk_errmsg(), "is a block device"));
	loop_detach(&l);
}

static void fill(void *buf, size_t len, int c)
{
	memset(buf, c, len);
}

static void test_discard_reads_zeros(void **state)
{
	(void)state;
	struct loopdev l;
	assert_int_equal(loop_attach(&l, "u.img", 8 << 20, 512), 0);
	for (int direct = 0; direct < 2; direct++) {
		struct vdisk *d = open_dev(&l, direct ? NULL : ",direct=off");
		struct vdisk_queue *q = vdisk_queue_create(d, NULL);
		assert_non_null(q);
		size_t len = 64 * 1024;
		unsigned char *buf = tu_alloc(len), *back = tu_alloc(len);
		fill(buf, len, 0xcd);
		assert_true(vdisk_ok(tu_write(q, 1024, buf, len, 0)));
		assert_true(vdisk_ok(tu_flush(q)));
		/* discard the middle 32 KiB: it reads back as zeros on a loop device
		 * (a hole punched in the backing file); what is around stays */
		assert_true(vdisk_ok(tu_unmap(q, 1024 + 32, 64)));
		assert_true(vdisk_ok(tu_read(q, 1024, back, len)));
		assert_memory_equal(back, buf, 16 * 1024);
		assert_true(vdisk_buf_is_zero(back + 16 * 1024, 32 * 1024));
		assert_memory_equal(back + 48 * 1024, buf + 48 * 1024, 16 * 1024);

		/* write-zeroes, with and without may-unmap, and fast-only */
		assert_true(vdisk_ok(tu_write(q, 1024, buf, len, 0)));
		assert_true(vdisk_ok(tu_write_zeroes(q, 1024, 8, 0)));
		assert_true(vdisk_ok(tu_write_zeroes(q, 1024 + 8, 8, VDISK_ZERO_MAY_UNMAP)));
		assert_true(vdisk_ok(tu_write_zeroes(
		    q, 1024 + 16, 8, VDISK_ZERO_MAY_UNMAP | VDISK_ZERO_FAST_ONLY | VDISK_IO_FUA)));
		assert_true(vdisk_ok(tu_read(q, 1024, back, len)));
		assert_true(vdisk_buf_is_zero(back, 12 * 1024));
		assert_memory_equal(back + 12 * 1024, buf + 12 * 1024, len - 12 * 1024);

		/* out of range: refused by the core before the kernel sees it */
		uint64_t n = vdisk_sector_count(d);
		assert_int_equal(tu_unmap(q, n - 1, 2).kind, VDISK_ERR_ILLEGAL_BLOCK);
		assert_int_equal(tu_write(q, n, buf, 512, 0).kind, VDISK_ERR_ILLEGAL_BLOCK);
		assert_int_equal(tu_read(q, n - 1, back, 1024).kind, VDISK_ERR_ILLEGAL_BLOCK);
		free(buf);
		free(back);
		vdisk_queue_destroy(q);
		vdisk_unref(d);
	}
	loop_detach(&l);
}

/* Threads of this process named as the resize listener names its own. */
static unsigned listeners(void)
{
	unsigned n = 0;
	DIR *dir = opendir("/proc/self/task");
	assert_non_null(dir);
	struct dirent *e;
	while ((e = readdir(dir))) {
		char p[300], comm[32] = "";
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof comm, f) && strcmp(comm, "vdisk-uevent\n") == 0)
			n++;
		fclose(f);
	}
	closedir(dir);
	return n;
}

struct waiter {
	struct tu_flag flag;
	uint64_t count;
};

static void wait_done(struct vdisk_queue *q, struct tu_flag *f)
{
	/* a guard against a hang, not a timing assertion: a resize event takes
	 * microseconds */
	for (int i = 0; i < 300 && !f->calls; i++)
		vdisk_queue_wait(q, 100 * 1000 * 1000);
	assert_int_equal(f->calls, 1);
	assert_true(vdisk_ok(f->st));
}

static void losetup_c(const struct loopdev *l, uint64_t size)
{
	char cmd[512];
	assert_int_equal(truncate(l->backing, (off_t)size), 0);
	snprintf(cmd, sizeof cmd, "losetup -c %s", l->path);
	assert_int_equal(system(cmd), 0);
}

static void test_resize_seen_by_waiters(void **state)
{
	(void)state;
	struct loopdev l;
	assert_int_equal(loop_attach(&l, "r.img", 4 << 20, 512), 0);
	assert_int_equal(listeners(), 0);
	struct vdisk *a = open_dev(&l, NULL);
	assert_int_equal(listeners(), 1);
	struct vdisk *b = open_dev(&l, ",direct=off,read-only=on"); /* a reader beside the writer */
	/* one listener for the process, whatever the number of devices */
	assert_int_equal(listeners(), 1);
	struct vdisk_queue *qa = vdisk_queue_create(a, NULL), *qb = vdisk_queue_create(b, NULL);
	uint64_t old = vdisk_sector_count(a);
	assert_int_equal(old, (4 << 20) / 512);

	struct waiter wa = {0}, wb = {0};
	assert_int_equal(vdisk_wait_resize(qa, old, &wa.count, tu_flag_cb, &wa.flag), 0);
	assert_int_equal(vdisk_wait_resize(qb, old, &wb.count, tu_flag_cb, &wb.flag), 0);
	vdisk_queue_poll(qa);
	assert_int_equal(wa.flag.calls, 0);

	losetup_c(&l, 6 << 20);
	wait_done(qa, &wa.flag);
	wait_done(qb, &wb.flag);
	assert_int_equal(wa.count, (6 << 20) / 512);
	assert_int_equal(wb.count, (6 << 20) / 512);
	assert_int_equal(vdisk_sector_count(a), (6 << 20) / 512);

	/* the grown part is usable at once, through both disks */
	unsigned char *buf = tu_alloc(4096), *back = tu_alloc(4096);
	fill(buf, 4096, 0x5a);
	assert_true(vdisk_ok(tu_write(qa, old + 8, buf, 4096, VDISK_IO_FUA)));
	assert_true(vdisk_ok(tu_read(qb, old + 8, back, 4096)));
	assert_memory_equal(buf, back, 4096);

	/* shrink: the waiter sees it, and the lost part is out of range */
	struct waiter ws = {0};
	assert_int_equal(
	    vdisk_wait_resize(qa, vdisk_sector_count(a), &ws.count, tu_flag_cb, &ws.flag), 0);
	losetup_c(&l, 2 << 20);
	wait_done(qa, &ws.flag);
	assert_int_equal(ws.count, (2 << 20) / 512);
	assert_int_equal(tu_read(qa, old, back, 4096).kind, VDISK_ERR_ILLEGAL_BLOCK);
	assert_true(vdisk_ok(tu_read(qa, ws.count - 8, back, 4096)));

	/* vdisk check agrees with the device */
	assert_int_equal(vdisk_check(a, 0, NULL), 0);
	free(buf);
	free(back);
	vdisk_queue_destroy(qa);
	vdisk_queue_destroy(qb);
	vdisk_unref(a);
	vdisk_unref(b);
	/* the listener stops with the last device */
	assert_int_equal(listeners(), 0);
	loop_detach(&l);
}

/* Lost events degrade into a re-read: with this process stopped, a child
 * floods the uevent socket with synthetic "change" events until it overflows,
 * then resizes the device, whose RESIZE=1 event finds the socket full and is
 * dropped.  Once the process runs again, the listener reads ENOBUFS and
 * re-reads every device, so the waiter still sees the new size. */
static void test_lost_events_requery(void **state)
{
	(void)state;
	struct loopdev l;
	assert_int_equal(loop_attach(&l, "o.img", 4 << 20, 512), 0);
	struct vdisk *d = open_dev(&l, NULL);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	uint64_t old = vdisk_sector_count(d);
	struct waiter w = {0};
	assert_int_equal(vdisk_wait_resize(q, old, &w.count, tu_flag_cb, &w.flag), 0);

	char uevent[128];
	snprintf(uevent, sizeof uevent, "/sys/block/%s/uevent", l.path + 5);
	pid_t parent = getpid();
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* only system calls here: the parent has threads */
		int rc = 0;
		kill(parent, SIGSTOP);
		for (int i = 0; i < 20000 && rc == 0; i++) {
			int fd = open(uevent, O_WRONLY);
			if (fd < 0 || write(fd, "change", 6) != 6)
				rc = 1;
			if (fd >= 0)
				close(fd);
		}
		if (truncate(l.backing, 6 << 20) < 0 || ioctl(l.fd, LOOP_SET_CAPACITY, 0) < 0)
			rc = 1;
		kill(parent, SIGCONT);
		_exit(rc);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	wait_done(q, &w.flag);
	assert_int_equal(w.count, (6 << 20) / 512);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	loop_detach(&l);
}

static void test_no_reservations_no_tray(void **state)
{
	(void)state;
	struct loopdev l;
	assert_int_equal(loop_attach(&l, "p.img", 1 << 20, 512), 0);
	struct vdisk *d = open_dev(&l, NULL);
	assert_false(vdisk_has_persistent_reservations(d));
	struct vdisk_pr_capabilities caps;
	struct vdisk_pr_report rep;
	assert_int_equal(vdisk_pr_capabilities(d, &caps).kind, VDISK_ERR_NOT_SUPPORTED);
	assert_int_equal(vdisk_pr_report(d, &rep, NULL, 0).kind, VDISK_ERR_NOT_SUPPORTED);
	assert_int_equal(vdisk_pr_register(d, 0, 0x1234, 0).kind, VDISK_ERR_NOT_SUPPORTED);
	assert_false(vdisk_caps(d) & VDISK_CAP_EJECT);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	assert_int_equal(tu_eject(q).kind, VDISK_ERR_UNSUPPORTED_EJECT);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
	loop_detach(&l);
}

static size_t msg(char *buf, const char *const *parts)
{
	size_t n = 0;
	for (; *parts; parts++) {
		strcpy(buf + n, *parts);
		n += strlen(*parts) + 1;
	}
	return n;
}

static void test_uevent_parse(void **state)
{
	(void)state;
	char buf[512];
	dev_t dev = 0;
	const char *resize[] = {"change@/devices/virtual/block/loop3",
	                        "ACTION=change",
	                        "DEVPATH=/devices/virtual/block/loop3",
	                        "SUBSYSTEM=block",
	                        "RESIZE=1",
	                        "MAJOR=7",
	                        "MINOR=3",
	                        "DEVNAME=loop3",
	                        NULL};
	size_t n = msg(buf, resize);
	assert_int_equal(blk_uevent_parse(buf, n, &dev), 1);
	assert_int_equal(major(dev), 7);
	assert_int_equal(minor(dev), 3);
	/* the last field cut off before its NUL: not trusted */
	assert_int_equal(blk_uevent_parse(buf, n - 1, &dev), 1);
	const char *cut[] = {"change@/x", "ACTION=change", "SUBSYSTEM=block",
	                     "RESIZE=1",  "MAJOR=7",       "MINOR=3",
	                     NULL};
	n = msg(buf, cut);
	assert_int_equal(blk_uevent_parse(buf, n - 1, &dev), 0);
	const char *add[] = {"add@/x",  "ACTION=add", "SUBSYSTEM=block", "RESIZE=1", "MAJOR=7",
	                     "MINOR=3", NULL};
	assert_int_equal(blk_uevent_parse(buf, msg(buf, add), &dev), 0);
	const char *noresize[] = {"change@/x", "ACTION=change", "SUBSYSTEM=block",
	                          "MAJOR=7",   "MINOR=3",       NULL};
	assert_int_equal(blk_uevent_parse(buf, msg(buf, noresize), &dev), 0);
	const char *net[] = {
	    "change@/x", "ACTION=change", "SUBSYSTEM=net", "RESIZE=1", "MAJOR=7", "MINOR=3", NULL};
	assert_int_equal(blk_uevent_parse(buf, msg(buf, net), &dev), 0);
	const char *badnum[] = {"change@/x", "ACTION=change", "SUBSYSTEM=block",
	                        "RESIZE=1",  "MAJOR=7x",      "MINOR=3",
	                        NULL};
	assert_int_equal(blk_uevent_parse(buf, msg(buf, badnum), &dev), 0);
	const char *empty[] = {
	    "change@/x", "ACTION=change", "SUBSYSTEM=block", "RESIZE=1", "MAJOR=", "MINOR=3", NULL};
	assert_int_equal(blk_uevent_parse(buf, msg(buf, empty), &dev), 0);
	assert_int_equal(blk_uevent_parse(buf, 0, &dev), 0);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* The extended layout: key at byte 8, 128-bit host id at byte 16 of each
 * 64-byte entry (the 24-byte layout has the host id at 8 and the key at 16). */
static void test_nvme_report_parse(void **state)
{
	(void)state;
	uint8_t buf[64 + 3 * 64] = {0};
	buf[0] = 0x78; /* generation 0x12345678 */
	buf[1] = 0x56;
	buf[2] = 0x34;
	buf[3] = 0x12;
	buf[4] = 3; /* write exclusive, registrants only */
	put16(buf + 5, 3);
	buf[9] = 1;
	for (int i = 0; i < 3; i++) {
		uint8_t *e = buf + 64 + 64 * i;
		put16(e, (uint16_t)(0x100 + i));
		e[2] = i == 1;
		for (int b = 0; b < 8; b++) /* key 0x8877665544332211 + i */
			e[8 + b] = (uint8_t)((0x8877665544332211ull + (uint64_t)i) >> (8 * b));
		for (int b = 0; b < 16; b++)
			e[16 + b] = (uint8_t)(i * 16 + b);
	}
	struct vdisk_pr_report rep;
	struct vdisk_pr_registrant regs[2];
	assert_int_equal(blk_pr_parse_report(buf, sizeof buf, &rep, regs, 2), 3);
	assert_int_equal(rep.generation, 0x12345678);
	assert_int_equal(rep.type, VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
	assert_true(rep.persist_through_power_loss);
	assert_int_equal(rep.nregistrants, 3);
	assert_int_equal(regs[0].controller_id, 0x100);
	assert_false(regs[0].holds_reservation);
	assert_true(regs[1].holds_reservation);
	assert_int_equal(regs[1].key, 0x8877665544332212ull);
	assert_int_equal(regs[1].host_id_len, 16);
	assert_int_equal(regs[1].host_id[0], 16);
	assert_int_equal(regs[1].host_id[15], 31);
	/* fewer bytes than the header announces: only the entries present */
	memset(regs, 0xee, sizeof regs);
	assert_int_equal(blk_pr_parse_report(buf, 64 + 64, &rep, regs, 2), 3);
	assert_int_equal(regs[0].controller_id, 0x100);
	assert_int_equal(regs[1].controller_id, 0xeeee);
	/* an unknown reservation type is reported as none, a short header as
	 * nothing */
	buf[4] = 9;
	blk_pr_parse_report(buf, sizeof buf, &rep, regs, 0);
	assert_int_equal(rep.type, VDISK_PR_NONE);
	assert_int_equal(blk_pr_parse_report(buf, 63, &rep, regs, 2), 0);
}

int main(void)
{
	const struct CMUnitTest parsers[] = {
	    cmocka_unit_test(test_uevent_parse),
	    cmocka_unit_test(test_nvme_report_parse),
	};
	const struct CMUnitTest loops[] = {
	    cmocka_unit_test(test_geometry),
	    cmocka_unit_test(test_discard_reads_zeros),
	    cmocka_unit_test(test_resize_seen_by_waiters),
	    cmocka_unit_test(test_lost_events_requery),
	    cmocka_unit_test(test_no_reservations_no_tray),
	};
	int rc = cmocka_run_group_tests(parsers, NULL, NULL);
	if (access("/dev/loop-control", R_OK | W_OK) != 0) {
		fprintf(stderr,
		        "SKIP: loop device tests: /dev/loop-control: %s (needs root and "
		        "the loop driver)\n",
		        strerror(errno));
		return rc ? rc : 77;
	}
	return rc | cmocka_run_group_tests(loops, NULL, NULL);
}
