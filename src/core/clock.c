/* Time stamps for statistics: the TSC where it is invariant (cheap: no
 * syscall, no vDSO), else CLOCK_MONOTONIC.  Ticks are converted to nanoseconds
 * only when statistics are read. */
#include <cpuid.h>
#include <pthread.h>
#include <time.h>

#include "internal.h"

bool vd_use_tsc;
static double ticks_per_ns = 1.0;
static pthread_once_t calib_once = PTHREAD_ONCE_INIT;

__attribute__((constructor)) void vd_clock_init(void)
{
#if defined(__x86_64__)
	unsigned a, b, c, d;
	if (__get_cpuid(0x80000007, &a, &b, &c, &d) && (d & (1u << 8)))
		vd_use_tsc = true;
#endif
}

static void calibrate(void)
{
	if (!vd_use_tsc)
		return;
	uint64_t t0 = vdisk_now_ns(), c0 = vd_ticks();
	struct timespec ts = {0, 5 * 1000 * 1000};
	nanosleep(&ts, NULL);
	uint64_t t1 = vdisk_now_ns(), c1 = vd_ticks();
	if (t1 > t0 && c1 > c0)
		ticks_per_ns = (double)(c1 - c0) / (double)(t1 - t0);
}

double vd_ticks_per_ns(void)
{
	pthread_once(&calib_once, calibrate);
	return ticks_per_ns;
}

/* For tools in this tree that time things the same way (vdisk bench). */
VD_EXPORT uint64_t vdisk_ticks(void)
{
	return vd_ticks();
}
VD_EXPORT double vdisk_ticks_per_ns(void)
{
	return vd_ticks_per_ns();
}
