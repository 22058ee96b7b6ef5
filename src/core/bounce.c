/* Bounce buffers: page-aligned, per queue (no locks), in power-of-two size
 * classes, within a budget.  A queue that holds no bounce buffer always gets
 * one, however large, so a request bigger than the budget cannot wait forever
 * (the per-thread tracker of the reference can). */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define PAGE 4096u
#define CACHED_CLASSES 13 /* up to 16 MiB kept for reuse */

static unsigned size_class(size_t len)
{
	size_t pages = (len + PAGE - 1) / PAGE;
	if (pages <= 1)
		return 0;
	return 64u - (unsigned)__builtin_clzll(pages - 1);
}

VD_EXPORT void *vdisk_bounce_get(struct vdisk_queue *q, size_t len)
{
	unsigned c = size_class(len);
	size_t size = (size_t)PAGE << c;
	if (q->bounce_count && q->bounce_out + size > q->bounce_budget && !q->bounce_waive) {
		errno = EAGAIN;
		return NULL;
	}
	void *p = NULL;
	if (c < CACHED_CLASSES && q->bounce[c].free) {
		p = q->bounce[c].free;
		q->bounce[c].free = *(void **)p;
	} else {
		p = aligned_alloc(PAGE, size);
		if (!p) {
			errno = ENOMEM;
			return NULL;
		}
	}
	q->bounce_out += size;
	q->bounce_count++;
	return p;
}

VD_EXPORT void vdisk_bounce_put(struct vdisk_queue *q, void *buf, size_t len)
{
	if (!buf)
		return;
	unsigned c = size_class(len);
	size_t size = (size_t)PAGE << c;
	q->bounce_out -= size;
	q->bounce_count--;
	if (c < CACHED_CLASSES) {
		*(void **)buf = q->bounce[c].free;
		q->bounce[c].free = buf;
	} else {
		free(buf);
	}
	if (q->retry_head && !q->in_poll)
		vd_queue_kick(q);
}

void vd_bounce_fini(struct vdisk_queue *q)
{
	for (unsigned c = 0; c < CACHED_CLASSES; c++) {
		while (q->bounce[c].free) {
			void *next = *(void **)q->bounce[c].free;
			free(q->bounce[c].free);
			q->bounce[c].free = next;
		}
	}
}
