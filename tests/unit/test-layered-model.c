/* The layered disk against a flat model: random programs (stack and
 * operations, see fuzz/fuzz_layered_model.h) from a seeded generator, for a
 * bounded time.  A failing program is saved for replay with
 * fuzz-layered-replay FILE (VDISK_LM_VERBOSE=1 shows each step).
 *
 *   test-layered-model [--seed N] [--programs N] [--seconds S] [--verbose]
 *
 * CTest runs 1000 programs (about ten seconds); a soak is the same with
 * larger numbers, e.g. --seed 7 --programs 1000000 --seconds 3600.
 *
 * ctest-timeout: 300 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../fuzz/fuzz_layered_model.c"

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	uint64_t seed = 1;
	long programs = 1000;
	double seconds = 30;
	unsigned flags = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--programs") == 0 && i + 1 < argc)
			programs = strtol(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--verbose") == 0)
			flags |= LM_VERBOSE;
		else {
			fprintf(stderr,
			        "usage: %s [--seed N] [--programs N] [--seconds S] [--verbose]\n",
			        argv[0]);
			return 2;
		}
	}
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long ran = 0;
	for (long p = 0; p < programs; p++) {
		uint64_t s = (seed + (uint64_t)p) * 0x9E3779B97F4A7C15ull | 1;
		size_t len = 40 + rng(&s) % 1400;
		uint8_t *buf = malloc(len);
		if (!buf)
			return 1;
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(rng(&s) >> 24);
		int rc = lm_run(buf, len, flags);
		if (rc) {
			char path[64];
			snprintf(path, sizeof path, "/tmp/layered-model-%" PRIu64 "-%ld.bin", seed,
			         p);
			FILE *f = fopen(path, "wb");
			if (f) {
				fwrite(buf, 1, len, f);
				fclose(f);
			}
			fprintf(stderr, "program %ld (seed %" PRIu64 ") %s; input saved as %s\n", p,
			        seed, rc == 1 ? "disagreed with the model" : "could not run", path);
			free(buf);
			return 1;
		}
		free(buf);
		ran++;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >
		    seconds)
			break;
	}
	printf("%ld programs agreed with the model\n", ran);
	return 0;
}
