/* Payload buffers: page-aligned (the kernel copies to and from aligned user
 * memory 2-4x faster on these machines), in power-of-two classes, kept on a
 * per-worker free list up to NBD_BUF_CACHE_MAX bytes so the data path does not
 * call the allocator. */
#include <stdlib.h>

#include "nbd/server.h"

static unsigned class_of(size_t len)
{
	if (len <= (1u << NBD_BUF_MIN_SHIFT))
		return 0;
	unsigned bits = 64u - (unsigned)__builtin_clzll((unsigned long long)len - 1);
	return bits - NBD_BUF_MIN_SHIFT;
}

void *nbd_buf_get(struct nbd_bufpool *p, size_t len, uint8_t *cls)
{
	unsigned c = class_of(len);
	if (c >= NBD_BUF_CLASSES)
		return NULL;
	*cls = (uint8_t)c;
	size_t size = (size_t)1 << (c + NBD_BUF_MIN_SHIFT);
	void *b = p->free[c];
	if (b) {
		p->free[c] = *(void **)b;
		p->cached -= size;
		return b;
	}
	return aligned_alloc(4096, size);
}

void nbd_buf_put(struct nbd_bufpool *p, void *buf, uint8_t cls)
{
	if (!buf)
		return;
	size_t size = (size_t)1 << (cls + NBD_BUF_MIN_SHIFT);
	if (p->cached + size > NBD_BUF_CACHE_MAX) {
		free(buf);
		return;
	}
	*(void **)buf = p->free[cls];
	p->free[cls] = buf;
	p->cached += size;
}

void nbd_bufpool_fini(struct nbd_bufpool *p)
{
	for (unsigned c = 0; c < NBD_BUF_CLASSES; c++) {
		while (p->free[c]) {
			void *next = *(void **)p->free[c];
			free(p->free[c]);
			p->free[c] = next;
		}
	}
	p->cached = 0;
}
