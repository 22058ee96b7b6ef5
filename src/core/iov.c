/* iovec helpers for drivers. */
#include <string.h>

#include "internal.h"

VD_EXPORT size_t vdisk_iov_length(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;
	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

/* Walk bytes [off, off+len) of iov, calling fn on each contiguous piece. */
#define IOV_WALK(iov, iovcnt, off, len, BODY)                                            \
	do {                                                                             \
		size_t skip_ = (off), left_ = (len), done_ = 0;                          \
		for (int i_ = 0; i_ < (iovcnt) && left_; i_++) {                         \
			size_t l_ = (iov)[i_].iov_len;                                   \
			if (skip_ >= l_) {                                               \
				skip_ -= l_;                                             \
				continue;                                                \
			}                                                                \
			unsigned char *p_ = (unsigned char *)(iov)[i_].iov_base + skip_; \
			size_t n_ = l_ - skip_;                                          \
			if (n_ > left_)                                                  \
				n_ = left_;                                              \
			skip_ = 0;                                                       \
			BODY;                                                            \
			done_ += n_;                                                     \
			left_ -= n_;                                                     \
		}                                                                        \
		(void)done_;                                                             \
	} while (0)

VD_EXPORT void vdisk_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off, void *buf,
                                size_t len)
{
	unsigned char *b = buf;
	IOV_WALK(iov, iovcnt, off, len, memcpy(b + done_, p_, n_));
}

VD_EXPORT void vdisk_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off, const void *buf,
                                  size_t len)
{
	const unsigned char *b = buf;
	IOV_WALK(iov, iovcnt, off, len, memcpy(p_, b + done_, n_));
}

VD_EXPORT void vdisk_iov_memset(const struct iovec *iov, int iovcnt, size_t off, int c, size_t len)
{
	IOV_WALK(iov, iovcnt, off, len, memset(p_, c, n_));
}

VD_EXPORT int vdisk_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len,
                              struct iovec *out, int max)
{
	int n = 0;
	bool overflow = false;
	IOV_WALK(iov, iovcnt, off, len, {
		if (n == max) {
			overflow = true;
			break;
		}
		out[n].iov_base = p_;
		out[n].iov_len = n_;
		n++;
	});
	return overflow ? -1 : n;
}

VD_EXPORT bool vdisk_iov_aligned(const struct iovec *iov, int iovcnt, size_t align)
{
	for (int i = 0; i < iovcnt; i++)
		if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1))
			return false;
	return true;
}

VD_EXPORT bool vdisk_buf_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	/* check 16 bytes, then compare the buffer against itself shifted */
	size_t head = len < 16 ? len : 16;
	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

VD_EXPORT bool vdisk_iov_is_zero(const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++)
		if (!vdisk_buf_is_zero(iov[i].iov_base, iov[i].iov_len))
			return false;
	return true;
}
