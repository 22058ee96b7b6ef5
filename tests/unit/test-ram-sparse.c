/* A sparse RAM disk costs what was written, not its size: an extents sweep and
 * inspect over an empty 64 TiB disk, and reads of never-written sectors, grow
 * neither the resident memory nor the page tables by more than a bound; the
 * sweep finds exactly the ranges written; unmapping everything gives the
 * presence map back. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "vdisk/backend.h"

#define TIB (1ull << 40)
#define SIZE (64 * TIB)

/* a field of /proc/self/status, in KiB */
static long status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(field);
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, field, n) == 0 && line[n] == ':')
			v = strtol(line + n + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* the allocated_bytes inspect reports for the (only) layer */
static long long allocated(struct vdisk *d)
{
	char *js = vdisk_inspect(d, 0);
	assert_non_null(js);
	const char *p = strstr(js, "\"allocated_bytes\":");
	assert_non_null(p);
	long long v = strtoll(p + strlen("\"allocated_bytes\":"), NULL, 10);
	free(js);
	return v;
}

/* every extent of [0, SIZE) in sweeps of at most 1 TiB per request */
static unsigned sweep(struct vdisk_queue *q, uint64_t *data_bytes, uint64_t *first_data)
{
	struct vdisk_extent ext[64];
	unsigned total = 0;
	*data_bytes = 0;
	*first_data = UINT64_MAX;
	for (uint64_t s = 0; s < SIZE / 512;) {
		uint64_t count = TIB / 512;
		unsigned n = 0;
		assert_int_equal(tu_extents(q, s, count, ext, 64, &n).kind, VDISK_OK);
		assert_true(n > 0);
		for (unsigned i = 0; i < n; i++) {
			if (!(ext[i].flags & VDISK_EXTENT_HOLE)) {
				*data_bytes += ext[i].count * 512;
				if (*first_data == UINT64_MAX)
					*first_data = ext[i].sector * 512;
			}
			s = ext[i].sector + ext[i].count;
		}
		total += n;
	}
	return total;
}

static void test_sweep_costs_what_is_written(void **state)
{
	(void)state;
	struct vdisk *d = tu_open("ram:size=64T,huge-pages=off", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	long rss0 = status_kib("VmRSS"), pte0 = status_kib("VmPTE");
	uint64_t data, first;
	unsigned n = sweep(q, &data, &first);
	assert_int_equal(data, 0);
	assert_true(n <= 64); /* one hole per request */
	assert_int_equal(allocated(d), 0);
	/* reads of never-written sectors all over the disk */
	unsigned char *buf = tu_alloc(4096);
	for (unsigned i = 0; i < 4096; i++) {
		uint64_t sector = (uint64_t)i * (SIZE / 512 / 4096) + 8 * (i % 7);
		memset(buf, 0xEE, 4096);
		assert_int_equal(tu_read(q, sector, buf, 4096).kind, VDISK_OK);
		assert_true(vdisk_buf_is_zero(buf, 4096));
	}
	long rss1 = status_kib("VmRSS"), pte1 = status_kib("VmPTE");
	/* a scan of the 2 GiB page bitmap, or a fault of the zero page per read,
	 * would cost hundreds of MiB and 16+ MiB of page tables */
	assert_true(rss1 - rss0 < 32 * 1024);
	assert_true(pte1 - pte0 < 1024);

	/* written ranges are found exactly */
	memset(buf, 0xAB, 4096);
	assert_int_equal(tu_write(q, (40 * TIB) / 512, buf, 4096, 0).kind, VDISK_OK);
	assert_int_equal(tu_write(q, (3 * TIB + 8192) / 512, buf, 4096, 0).kind, VDISK_OK);
	n = sweep(q, &data, &first);
	assert_int_equal(data, 8192);
	assert_int_equal(first, 3 * TIB + 8192);
	assert_int_equal(allocated(d), 8192);
	assert_int_equal(tu_read(q, (40 * TIB) / 512, buf, 4096).kind, VDISK_OK);
	assert_int_equal(buf[4095], 0xAB);
	/* unmap of everything: back to nothing allocated */
	assert_int_equal(tu_unmap(q, 0, SIZE / 512).kind, VDISK_OK);
	n = sweep(q, &data, &first);
	assert_int_equal(data, 0);
	assert_int_equal(tu_read(q, (40 * TIB) / 512, buf, 4096).kind, VDISK_OK);
	assert_true(vdisk_buf_is_zero(buf, 4096));
	long rss2 = status_kib("VmRSS");
	assert_true(rss2 - rss0 < 32 * 1024);
	free(buf);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

static void test_partly_written_read(void **state)
{
	(void)state;
	/* a read across a written and an unwritten page returns both right */
	struct vdisk *d = tu_open("ram:size=1G", 0);
	struct vdisk_queue *q = vdisk_queue_create(d, NULL);
	unsigned char *buf = tu_alloc(8192);
	memset(buf, 0x11, 4096);
	assert_int_equal(tu_write(q, 8, buf, 4096, 0).kind, VDISK_OK);
	memset(buf, 0xEE, 8192);
	assert_int_equal(tu_read(q, 0, buf, 8192).kind, VDISK_OK);
	assert_true(vdisk_buf_is_zero(buf, 4096));
	assert_int_equal(buf[4096], 0x11);
	assert_int_equal(buf[8191], 0x11);
	free(buf);
	vdisk_queue_destroy(q);
	vdisk_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sweep_costs_what_is_written),
	    cmocka_unit_test(test_partly_written_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
