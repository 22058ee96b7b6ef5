/* Persistent reservations: the public calls, checked once here and passed to
 * the layer of the stack that implements them.
 *
 * A decorator that does not implement reservations but inherited has_pr from
 * its only child (crypt, delay, fault...) is transparent to them, so the walk
 * goes down through single-child layers while has_pr holds.  A layer with
 * several children (striped) does not inherit has_pr, which ends the walk. */
#include <errno.h>
#include <stddef.h>

#include "internal.h"

static const struct vdisk_pr_ops *layer_pr(const struct vdisk *d)
{
	return d->drv->pr; /* the registry gave every table the full size */
}

static struct vdisk *pr_layer(struct vdisk *d, const struct vdisk_pr_ops **ops)
{
	while (d && d->meta.has_pr) {
		const struct vdisk_pr_ops *o = layer_pr(d);
		if (o) {
			*ops = o;
			return d;
		}
		if (d->nchildren != 1)
			break;
		d = d->children[0];
	}
	return NULL;
}

static vdisk_status not_supported(void)
{
	return vdisk_status_make(VDISK_ERR_NOT_SUPPORTED, EOPNOTSUPP);
}

static vdisk_status invalid(void)
{
	return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL);
}

static bool type_ok(enum vdisk_pr_type t)
{
	return t >= VDISK_PR_WRITE_EXCLUSIVE && t <= VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

VD_EXPORT const char *vdisk_pr_type_name(enum vdisk_pr_type type)
{
	static const char *const names[] = {
	    [VDISK_PR_NONE] = "none",
	    [VDISK_PR_WRITE_EXCLUSIVE] = "write-exclusive",
	    [VDISK_PR_EXCLUSIVE_ACCESS] = "exclusive-access",
	    [VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY] = "write-exclusive-registrants-only",
	    [VDISK_PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY] = "exclusive-access-registrants-only",
	    [VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS] = "write-exclusive-all-registrants",
	    [VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS] = "exclusive-access-all-registrants",
	};
	if ((unsigned)type >= sizeof names / sizeof *names)
		return "unknown";
	return names[type];
}

VD_EXPORT vdisk_status vdisk_pr_capabilities(struct vdisk *d, struct vdisk_pr_capabilities *caps)
{
	const struct vdisk_pr_ops *ops = NULL;
	if (!d || !caps)
		return invalid();
	*caps = (struct vdisk_pr_capabilities){0};
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->capabilities)
		return not_supported();
	return ops->capabilities(l, caps);
}

VD_EXPORT vdisk_status vdisk_pr_report(struct vdisk *d, struct vdisk_pr_report *rep,
                                       struct vdisk_pr_registrant *regs, unsigned max)
{
	const struct vdisk_pr_ops *ops = NULL;
	if (!d || !rep || (max && !regs))
		return invalid();
	*rep = (struct vdisk_pr_report){0};
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->report)
		return not_supported();
	return ops->report(l, rep, regs, max);
}

VD_EXPORT vdisk_status vdisk_pr_register(struct vdisk *d, uint64_t current_key, uint64_t new_key,
                                         unsigned flags)
{
	const struct vdisk_pr_ops *ops = NULL;
	const unsigned known =
	    VDISK_PR_IGNORE_EXISTING_KEY | VDISK_PR_SET_PTPL | VDISK_PR_CLEAR_PTPL;
	if (!d || (flags & ~known) ||
	    (flags & (VDISK_PR_SET_PTPL | VDISK_PR_CLEAR_PTPL)) ==
	        (VDISK_PR_SET_PTPL | VDISK_PR_CLEAR_PTPL))
		return invalid();
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->register_key)
		return not_supported();
	return ops->register_key(l, current_key, new_key, flags);
}

VD_EXPORT vdisk_status vdisk_pr_reserve(struct vdisk *d, uint64_t key, enum vdisk_pr_type type)
{
	const struct vdisk_pr_ops *ops = NULL;
	if (!d || !type_ok(type))
		return invalid();
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->reserve)
		return not_supported();
	return ops->reserve(l, key, type);
}

VD_EXPORT vdisk_status vdisk_pr_release(struct vdisk *d, uint64_t key, enum vdisk_pr_type type)
{
	const struct vdisk_pr_ops *ops = NULL;
	if (!d || !type_ok(type))
		return invalid();
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->release)
		return not_supported();
	return ops->release(l, key, type);
}

VD_EXPORT vdisk_status vdisk_pr_clear(struct vdisk *d, uint64_t key)
{
	const struct vdisk_pr_ops *ops = NULL;
	if (!d)
		return invalid();
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->clear)
		return not_supported();
	return ops->clear(l, key);
}

VD_EXPORT vdisk_status vdisk_pr_preempt(struct vdisk *d, uint64_t key, uint64_t preempt_key,
                                        enum vdisk_pr_type type, bool abort)
{
	const struct vdisk_pr_ops *ops = NULL;
	if (!d || !type_ok(type))
		return invalid();
	struct vdisk *l = pr_layer(d, &ops);
	if (!l || !ops->preempt)
		return not_supported();
	return ops->preempt(l, key, preempt_key, type, abort);
}
