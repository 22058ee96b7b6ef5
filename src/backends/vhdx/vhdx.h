/* vhdx: the on-disk structures of Microsoft's VHDX format (all integers
 * little-endian, GUIDs in Microsoft byte order) and what the driver's files
 * share.
 *
 * Layout: the first MiB holds the file identifier ("vhdxfile") at 0, two
 * 4 KiB headers at 64 KiB and 128 KiB (CRC-32C; the valid one with the higher
 * sequence number is current) and two copies of the 64 KiB region table at
 * 192 KiB and 256 KiB, which place the BAT and the metadata region.  The
 * metadata region starts with a table of items (file parameters, virtual disk
 * size, sector sizes, the page-83 id, the parent locator).  The BAT has one
 * 64-bit entry per payload block (state in bits 0-2, file offset in MiB in bits
 * 20-63), and after every `chunk_ratio` payload entries one for the sector
 * bitmap block of that chunk (1 MiB, a bit per sector, used by differencing
 * images).  The log, a circular buffer of 4 KiB sectors, holds metadata
 * updates not yet known to be at their final place: a non-zero log GUID in the
 * current header means it must be replayed before the metadata is read. */
#ifndef VDISK_VHDX_H
#define VDISK_VHDX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../image/image.h"

#define VHDX_MiB (1ull << 20)
#define VHDX_HEADER_SIZE 4096u
#define VHDX_RT_SIZE (64u * 1024)
#define VHDX_MAX_ENTRIES 2047u
#define VHDX_MAX_SIZE (64ull << 40)
#define VHDX_MAX_BLOCK (256u << 20)
#define VHDX_LOG_MAX (32ull << 20) /* larger logs are refused (Hyper-V and qemu make 1 MiB) */
#define VHDX_CHAIN_MAX 256

enum vhdx_bat_state {
	VHDX_PAYLOAD_NOT_PRESENT = 0,
	VHDX_PAYLOAD_UNDEFINED = 1,
	VHDX_PAYLOAD_ZERO = 2,
	VHDX_PAYLOAD_UNMAPPED = 3,
	VHDX_PAYLOAD_FULLY_PRESENT = 6,
	VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
	VHDX_SB_NOT_PRESENT = 0,
	VHDX_SB_PRESENT = 6,
};

static inline uint16_t vhdx_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint64_t vhdx_le64(const void *p)
{
	return (uint64_t)img_le32((const uint8_t *)p + 4) << 32 | img_le32(p);
}

/* A write the log replay makes: len bytes at off, from data (NULL: zeros). */
struct vhdx_write {
	uint64_t off;
	uint32_t len;
	uint8_t *data;
};

/* The result of reading the log. */
struct vhdx_replay {
	struct vhdx_write *w; /* in the order they apply */
	size_t n;
	unsigned entries;       /* log entries in the active sequence */
	uint64_t head_seq;      /* its last entry's sequence number */
	uint64_t flushed_bytes; /* the file must be at least this long */
	uint64_t last_bytes;    /* and is this long after the replay */
};

/* Find the active sequence of the log (log_len bytes of it in `log`, read from
 * the file) whose entries carry log_guid, and list the writes that replaying
 * it makes.  A log with no valid sequence replays nothing.  Returns 0, or -1
 * after setting an error that names the entry and field (a write aimed at the
 * headers, a data sector whose sequence number does not match, ...). */
int vhdx_log_parse(const uint8_t *log, uint64_t log_len, const uint8_t log_guid[16],
                   struct vhdx_replay *out);
void vhdx_replay_free(struct vhdx_replay *rp);

#endif
