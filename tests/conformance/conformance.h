/* The conformance suite every disk and stack must pass. */
#ifndef VDISK_CONFORMANCE_H
#define VDISK_CONFORMANCE_H

/* Run every check over a disk opened from spec ("@TMP@" becomes a fresh
 * temporary directory).  Prints one line per check group; returns 0 when all
 * pass, 1 otherwise. */
enum {
	CONFORMANCE_NO_DATA = 1u << 0, /* the disk discards writes: skip read-back checks */
};
int vdisk_conformance(const char *spec, unsigned flags);

#endif
