/* The registry of backend types: the built-in drivers (one per file in
 * src/backends, listed by the build in builtin_drivers.h) and drivers registered
 * at run time.
 *
 * A driver registered at run time may have been built against an older header,
 * whose table ends earlier: the registry copies the caller's table up to its
 * struct_size into a zeroed table of the current size, so every member the
 * caller's header did not have reads as NULL and the rest of the core never
 * looks at struct_size again.  Members of a newer header than the library's
 * are not known here and are ignored. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define X(n) extern const struct vdisk_driver vdisk_driver_##n;
#include "builtin_drivers.h"
#undef X

static const struct vdisk_driver *const builtin[] = {
#define X(n) &vdisk_driver_##n,
#include "builtin_drivers.h"
#undef X
};

#define MAX_RUNTIME 64

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vdisk_driver *runtime[MAX_RUNTIME];
static unsigned nruntime;

const struct vdisk_driver *vd_driver_find(const char *name)
{
	const struct vdisk_driver *found = NULL;
	for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
		if (strcmp(builtin[i]->name, name) == 0)
			return builtin[i];
	pthread_mutex_lock(&reg_lock);
	for (unsigned i = 0; i < nruntime && !found; i++)
		if (strcmp(runtime[i]->name, name) == 0)
			found = runtime[i];
	pthread_mutex_unlock(&reg_lock);
	return found;
}

void vd_driver_foreach(void (*fn)(const struct vdisk_driver *drv, void *arg), void *arg)
{
	for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
		fn(builtin[i], arg);
	pthread_mutex_lock(&reg_lock);
	unsigned n = nruntime;
	const struct vdisk_driver *copy[MAX_RUNTIME];
	memcpy(copy, runtime, n * sizeof *copy);
	pthread_mutex_unlock(&reg_lock);
	for (unsigned i = 0; i < n; i++)
		fn(copy[i], arg);
}

VD_EXPORT int vdisk_register_driver(const struct vdisk_driver *drv)
{
	int rc = -1;
	if (!drv || drv->struct_size < offsetof(struct vdisk_driver, read) + sizeof drv->read ||
	    !drv->name || !drv->open || !drv->read)
		return vdisk_set_error(
		    "vdisk_register_driver: a driver needs a name, open and read");
	if (vd_driver_find(drv->name))
		return vdisk_set_error("vdisk_register_driver: type '%s' already exists",
		                       drv->name);
	struct vdisk_driver *copy = calloc(1, sizeof *copy);
	if (!copy)
		return vdisk_set_error_errno(ENOMEM, "vdisk_register_driver");
	memcpy(copy, drv, drv->struct_size < sizeof *copy ? drv->struct_size : sizeof *copy);
	copy->struct_size = sizeof *copy;
	pthread_mutex_lock(&reg_lock);
	if (nruntime < MAX_RUNTIME) {
		runtime[nruntime++] = copy;
		copy = NULL;
		rc = 0;
	} else {
		vdisk_set_error("vdisk_register_driver: too many drivers");
	}
	pthread_mutex_unlock(&reg_lock);
	free(copy);
	return rc;
}

struct list_ctx {
	void (*fn)(const char *, const char *, void *);
	void *arg;
};
static void list_one(const struct vdisk_driver *drv, void *arg)
{
	struct list_ctx *c = arg;
	c->fn(drv->name, drv->description ? drv->description : "", c->arg);
}
VD_EXPORT void vdisk_list_types(void (*fn)(const char *name, const char *description, void *arg),
                                void *arg)
{
	struct list_ctx c = {fn, arg};
	vd_driver_foreach(list_one, &c);
}
