/* The peer for the ram backend: a loop that only copies random 4 KiB blocks
 * from a prefilled region (backed like the ram backend: anonymous memory with
 * transparent huge pages) into one hot 4 KiB buffer.  Prints ops/s. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	size_t size = argc > 1 ? strtoull(argv[1], NULL, 0) : (1ull << 30);
	double seconds = argc > 2 ? atof(argv[2]) : 5;
	size_t bs = 4096, blocks = size / bs;
	unsigned char *src =
	    mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return 1;
	madvise(src, size, MADV_HUGEPAGE);
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < size; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(src + i, &x, 8);
	}
	static unsigned char dst[4096] __attribute__((aligned(4096)));
	uint64_t ops = 0, t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9), t;
	do {
		for (int k = 0; k < 1024; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			memcpy(dst, src + (x % blocks) * bs, bs);
			__asm__ volatile("" : : "r"(dst) : "memory");
		}
		ops += 1024;
		t = now_ns();
	} while (t < end);
	printf("%.0f\n", (double)ops / ((double)(t - t0) / 1e9));
	return 0;
}
