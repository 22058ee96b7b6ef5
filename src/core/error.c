/* Errors: the data-path status strings and the thread-local control-path
 * message (in the manner of libnbd's lib/errors.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ERRMSG_MAX 1024

static _Thread_local char errmsg[ERRMSG_MAX];
static _Thread_local int errnum_tls;

VD_EXPORT const char *vdisk_errmsg(void)
{
	return errmsg;
}
VD_EXPORT int vdisk_errno(void)
{
	return errnum_tls;
}

void vd_clear_error(void)
{
	errmsg[0] = '\0';
	errnum_tls = 0;
}

static int set_error_v(int errnum, const char *fmt, va_list ap)
{
	char tmp[ERRMSG_MAX];
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	if (errnum)
		snprintf(errmsg, sizeof errmsg, "%s: %s", tmp, strerror(errnum));
	else
		snprintf(errmsg, sizeof errmsg, "%s", tmp);
	errnum_tls = errnum;
	return -1;
}

VD_EXPORT int vdisk_set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	set_error_v(0, fmt, ap);
	va_end(ap);
	return -1;
}

VD_EXPORT int vdisk_set_error_errno(int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	set_error_v(errnum, fmt, ap);
	va_end(ap);
	return -1;
}

/* Prepend "prefix: " to the current message (the stack builder names the layer). */
void vd_error_prefix(const char *prefix)
{
	char tmp[ERRMSG_MAX];
	if (!prefix || !*prefix)
		return;
	snprintf(tmp, sizeof tmp, "%s: %s", prefix, errmsg);
	memcpy(errmsg, tmp, sizeof errmsg);
}

_Noreturn void vd_bug(const char *fmt, ...)
{
	va_list ap;
	fputs("vdisk: internal error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	abort();
}

static const char *const error_names[VDISK_ERR__COUNT] = {
    [VDISK_OK] = "ok",
    [VDISK_ERR_ILLEGAL_BLOCK] = "illegal-block",
    [VDISK_ERR_INVALID_INPUT] = "invalid-input",
    [VDISK_ERR_IO] = "io-error",
    [VDISK_ERR_MEDIUM] = "medium-error",
    [VDISK_ERR_MEMORY_ACCESS] = "memory-access",
    [VDISK_ERR_READ_ONLY] = "read-only",
    [VDISK_ERR_RESERVATION_CONFLICT] = "reservation-conflict",
    [VDISK_ERR_ABORTED_PREEMPT] = "aborted-preempt",
    [VDISK_ERR_UNSUPPORTED_EJECT] = "unsupported-eject",
    [VDISK_ERR_NOT_SUPPORTED] = "not-supported",
};

static const char *const error_text[VDISK_ERR__COUNT] = {
    [VDISK_OK] = "success",
    [VDISK_ERR_ILLEGAL_BLOCK] = "sector out of range",
    [VDISK_ERR_INVALID_INPUT] = "invalid request",
    [VDISK_ERR_IO] = "I/O error",
    [VDISK_ERR_MEDIUM] = "medium error",
    [VDISK_ERR_MEMORY_ACCESS] = "guest memory not accessible",
    [VDISK_ERR_READ_ONLY] = "disk is read-only",
    [VDISK_ERR_RESERVATION_CONFLICT] = "reservation conflict",
    [VDISK_ERR_ABORTED_PREEMPT] = "aborted by preempt-and-abort",
    [VDISK_ERR_UNSUPPORTED_EJECT] = "eject not supported",
    [VDISK_ERR_NOT_SUPPORTED] = "operation not supported as asked",
};

static const char *const medium_names[] = {
    [VDISK_MEDIUM_NONE] = "",
    [VDISK_MEDIUM_APP_TAG_CHECK] = "application tag check failed",
    [VDISK_MEDIUM_GUARD_CHECK] = "guard check failed",
    [VDISK_MEDIUM_REF_TAG_CHECK] = "reference tag check failed",
    [VDISK_MEDIUM_UNRECOVERED_READ] = "unrecovered read error",
    [VDISK_MEDIUM_WRITE_FAULT] = "write fault",
};

VD_EXPORT const char *vdisk_error_name(enum vdisk_error kind)
{
	if ((unsigned)kind >= VDISK_ERR__COUNT)
		return "unknown";
	return error_names[kind];
}

VD_EXPORT char *vdisk_status_str(vdisk_status st, char *buf, size_t len)
{
	const char *text = st.kind < VDISK_ERR__COUNT ? error_text[st.kind] : "unknown error";
	const char *med = "";
	if (st.kind == VDISK_ERR_MEDIUM && st.medium < sizeof medium_names / sizeof *medium_names)
		med = medium_names[st.medium];
	if (!buf || !len)
		return buf;
	if (st.errnum > 0 && *med)
		snprintf(buf, len, "%s: %s: %s (%s)", text, med, strerror(st.errnum),
		         strerrorname_np(st.errnum) ? strerrorname_np(st.errnum) : "?");
	else if (st.errnum > 0)
		snprintf(buf, len, "%s: %s (%s)", text, strerror(st.errnum),
		         strerrorname_np(st.errnum) ? strerrorname_np(st.errnum) : "?");
	else if (*med)
		snprintf(buf, len, "%s: %s", text, med);
	else
		snprintf(buf, len, "%s", text);
	return buf;
}

VD_EXPORT int vdisk_status_errno(vdisk_status st)
{
	switch (st.kind) {
	case VDISK_OK: return 0;
	case VDISK_ERR_ILLEGAL_BLOCK: return ERANGE;
	case VDISK_ERR_INVALID_INPUT: return EINVAL;
	case VDISK_ERR_IO:
	case VDISK_ERR_MEDIUM: return st.errnum > 0 ? st.errnum : EIO;
	case VDISK_ERR_MEMORY_ACCESS: return EFAULT;
	case VDISK_ERR_READ_ONLY: return EROFS;
	case VDISK_ERR_RESERVATION_CONFLICT: return EBADE;
	case VDISK_ERR_ABORTED_PREEMPT: return ECANCELED;
	case VDISK_ERR_UNSUPPORTED_EJECT:
	case VDISK_ERR_NOT_SUPPORTED: return EOPNOTSUPP;
	default: return EIO;
	}
}

VD_EXPORT const char *vdisk_unmap_behavior_name(enum vdisk_unmap_behavior b)
{
	switch (b) {
	case VDISK_UNMAP_UNSPECIFIED: return "unspecified";
	case VDISK_UNMAP_IGNORED: return "ignored";
	case VDISK_UNMAP_ZEROES: return "zeroes";
	}
	return "unknown";
}

VD_EXPORT const char *vdisk_op_name(enum vdisk_op op)
{
	static const char *const names[VD_NOPS] = {
	    [VDISK_OP_READ] = "read",
	    [VDISK_OP_WRITE] = "write",
	    [VDISK_OP_FLUSH] = "flush",
	    [VDISK_OP_UNMAP] = "unmap",
	    [VDISK_OP_WRITE_ZEROES] = "write_zeroes",
	    [VDISK_OP_EXTENTS] = "extents",
	    [VDISK_OP_EJECT] = "eject",
	    [VD_OP_WAIT_RESIZE] = "wait_resize",
	};
	if ((unsigned)op >= VD_NOPS)
		return "unknown";
	return names[op];
}

VD_EXPORT const char *vdisk_version(void)
{
	return VDISK_VERSION_STRING;
}
