/* libFuzzer target: random layered stacks and operations against a flat model
 * (the engine is fuzz_layered_model.c).  A disagreement aborts.  Set
 * VDISK_LM_VERBOSE=1 to see the stack and every operation of a replay. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_layered_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *v = getenv("VDISK_LM_VERBOSE");
	if (lm_run(data, size, v && *v == '1' ? LM_VERBOSE : 0) == 1)
		abort();
	return 0;
}
