/* vdisk-conformance "[--no-data] SPEC": the conformance suite over one disk
 * stack.  Options may lead the argument, so that a spec list line stays one
 * argument. */
#include <stdio.h>
#include <string.h>

#include "conformance.h"

int main(int argc, char **argv)
{
	unsigned flags = 0;
	if (argc != 2) {
		fprintf(stderr, "usage: vdisk-conformance '[--no-data] SPEC'\n");
		return 2;
	}
	const char *spec = argv[1];
	while (strncmp(spec, "--", 2) == 0) {
		if (strncmp(spec, "--no-data ", 10) == 0) {
			flags |= CONFORMANCE_NO_DATA;
			spec += 10;
		} else {
			fprintf(stderr, "vdisk-conformance: unknown option in '%s'\n", spec);
			return 2;
		}
		while (*spec == ' ')
			spec++;
	}
	return vdisk_conformance(spec, flags);
}
