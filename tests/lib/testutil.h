/* Helpers shared by the C tests. */
#ifndef VDISK_TESTUTIL_H
#define VDISK_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vdisk/vdisk.h"

/* A fresh temporary directory, removed at exit. */
const char *tu_tmpdir(void);
/* spec with every "@TMP@" replaced by tu_tmpdir(); malloc'd. */
char *tu_spec(const char *spec);
/* Open a spec (after @TMP@ substitution); aborts the test with the message on failure. */
struct vdisk *tu_open(const char *spec, unsigned flags);

/* A completion that records how often it ran and its last status. */
struct tu_flag {
	int calls;
	vdisk_status st;
};
void tu_flag_cb(void *opaque, vdisk_status st); /* opaque: a struct tu_flag */
/* fd is readable right now (poll with no wait). */
bool tu_fd_readable(int fd);

/* TU_SANITIZED: built with AddressSanitizer or ThreadSanitizer, which reserve
 * terabytes of address space (tests that limit RLIMIT_AS skip then). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
/* This process's address space in bytes (VmSize), 0 if unknown. */
unsigned long long tu_vm_size(void);

/* {"type":"striped","chunk-size":CHUNK<extra>,"disks":[MEMBER x n]}, each
 * "%d" in member replaced by the member's index; malloc'd.  extra (may be
 * NULL) is inserted as is, e.g. ",\"sector-count\":8". */
char *tu_stripe_spec(unsigned n, const char *chunk, const char *member, const char *extra);
/* tu_open() of tu_stripe_spec(n, chunk, member, NULL). */
struct vdisk *tu_open_stripe(unsigned n, const char *chunk, const char *member);

/* Deterministic content for a sector: depends on seed and sector number. */
void tu_pattern(void *buf, size_t len, uint64_t first_sector, uint32_t sector_size, uint64_t seed);
/* Page-aligned, zeroed; free with free(). */
void *tu_alloc(size_t len);

/* Synchronous single operations on a queue (submit + wait), returning the status. */
vdisk_status tu_readv(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov, int n);
vdisk_status tu_writev(struct vdisk_queue *q, uint64_t sector, const struct iovec *iov, int n,
                       unsigned flags);
vdisk_status tu_read(struct vdisk_queue *q, uint64_t sector, void *buf, size_t len);
vdisk_status tu_write(struct vdisk_queue *q, uint64_t sector, const void *buf, size_t len,
                      unsigned flags);
vdisk_status tu_flush(struct vdisk_queue *q);
vdisk_status tu_unmap(struct vdisk_queue *q, uint64_t sector, uint64_t count);
vdisk_status tu_write_zeroes(struct vdisk_queue *q, uint64_t sector, uint64_t count,
                             unsigned flags);
vdisk_status tu_extents(struct vdisk_queue *q, uint64_t sector, uint64_t count,
                        struct vdisk_extent *ext, unsigned max, unsigned *n);
vdisk_status tu_eject(struct vdisk_queue *q);

/* "illegal-block" etc. for messages */
const char *tu_st(vdisk_status st);

#endif
