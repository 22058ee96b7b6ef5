/* A differential test of the layered disk: a program decoded from bytes builds a
 * random stack (1-4 layers of ram, sqlite and disk, random valid read-cache and
 * write-through flags, prefilled lower layers) and runs random operations at
 * any 64-bit sector against a flat in-memory model.  In range: success and
 * exactly the model's bytes; out of range: exactly illegal-block. */
#ifndef VDISK_FUZZ_LAYERED_MODEL_H
#define VDISK_FUZZ_LAYERED_MODEL_H

#include <stddef.h>
#include <stdint.h>

enum {
	LM_VERBOSE = 1u << 0, /* print the stack and every operation */
};

/* Run one program.  Returns 0 if the disk agreed with the model (or the input
 * decoded to nothing worth running), 1 on a disagreement (described on
 * stderr), 2 if the stack could not be set up (environment trouble). */
int lm_run(const uint8_t *data, size_t size, unsigned flags);

#endif
