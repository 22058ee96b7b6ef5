/* Image locking: open-file-description locks on the bytes qemu uses, so that
 * two writers of one image (two vdisk processes, vdisk and qemu) exclude each
 * other.
 *
 * qemu's file driver expresses each block permission with two one-byte locks:
 * holding permission bit i is a shared lock on byte 100 + i, refusing to share
 * it with others is a shared lock on byte 200 + i; an opener looks for the
 * other's conflicting byte with F_OFD_GETLK.  The bits are consistent-read (0)
 * and write (1).  vdisk takes what qemu takes for a writer, and for a reader
 * what qemu-io -r does (a reader that shares writing):
 *   reader: 100 (read)
 *   writer: 100, 101 (write), 201 (shares no write)
 * so there is at most one writer, readers come and go beside it, and a writer
 * is also refused while any opener that does not share writing (qemu-img
 * without force-share) has the file.  Locks are shared (F_RDLCK) and released
 * when the descriptor's open file description is closed. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>

#include "internal.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
#define PERM_READ 0
#define PERM_WRITE 1

static int ofd_lock(int fd, int type, off_t byte)
{
	struct flock fl = {
	    .l_type = (short)type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
	return fcntl(fd, F_OFD_SETLK, &fl);
}

/* 1 if an open file description other than fd's holds a lock on byte, 0 if not,
 * -1 with errno on failure. */
static int held_by_other(int fd, off_t byte)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -1;
	return fl.l_type != F_UNLCK;
}

VD_EXPORT int vdisk_lock_image(int fd, const char *path, bool writable)
{
	const off_t bytes[] = {LOCK_PERM_BASE + PERM_READ, LOCK_PERM_BASE + PERM_WRITE,
	                       LOCK_SHARED_BASE + PERM_WRITE};
	unsigned n = writable ? 3 : 1;
	for (unsigned i = 0; i < n; i++) {
		if (ofd_lock(fd, F_RDLCK, bytes[i]) == 0)
			continue;
		int e = errno;
		if (e != EAGAIN && e != EACCES)
			return vdisk_set_error_errno(e, "'%s': cannot take the image lock", path);
		break; /* someone holds it exclusively: reported below */
	}
	/* whoever reads must not meet an opener that refuses readers; whoever
	 * writes must meet no other writer and no opener that refuses writers */
	int noread = held_by_other(fd, LOCK_SHARED_BASE + PERM_READ);
	int writer = writable ? held_by_other(fd, LOCK_PERM_BASE + PERM_WRITE) : 0;
	int nowrite = writable ? held_by_other(fd, LOCK_SHARED_BASE + PERM_WRITE) : 0;
	if (noread < 0 || writer < 0 || nowrite < 0) {
		int e = errno;
		vd_unlock_image(fd);
		return vdisk_set_error_errno(e, "'%s': cannot test the image lock", path);
	}
	if (noread || writer || nowrite) {
		vd_unlock_image(fd);
		return vdisk_set_error(
		    "'%s' is in use: already open %s, by this or another process (a second %s "
		    "could corrupt it; locking=off skips this check at that risk)",
		    path,
		    writer    ? "for writing"
		    : nowrite ? "by a reader that does not let others write"
		              : "by a process that does not let others read",
		    writable ? "writer" : "reader");
	}
	return 0;
}

void vd_unlock_image(int fd)
{
	for (off_t b = LOCK_PERM_BASE; b <= LOCK_SHARED_BASE + PERM_WRITE;
	     b += LOCK_SHARED_BASE - LOCK_PERM_BASE) {
		ofd_lock(fd, F_UNLCK, b + PERM_READ);
		ofd_lock(fd, F_UNLCK, b + PERM_WRITE);
	}
}
