/* The disk handle: building a stack from a spec, validating and caching each
 * layer's metadata, reference counting, resize and the control calls.
 *
 * Every layer of a stack is a struct vdisk.  The user holds the top one (the
 * root); a reference to any layer pins the whole stack, so counts live on the
 * root.  Children are owned by the core, not by their parent's driver: they are
 * closed after their parent. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local bool err_located; /* the message already names its layer */

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static char *child_path(const char *parent, const char *what)
{
	char *p;
	if (!parent || !*parent)
		return strdup(what);
	if (asprintf(&p, "%s.%s", parent, what) < 0)
		return NULL;
	return p;
}

static void free_node(struct vdisk *d)
{
	free(d->children);
	free(d->nodes);
	free(d->stats_done);
	free(d->id);
	free(d->path);
	json_decref(d->config);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static void sync_pool_drain(struct vdisk *d)
{
	for (;;) {
		pthread_mutex_lock(&d->lock);
		struct vdisk_queue *q = d->sync_idle;
		if (q)
			d->sync_idle = q->next_idle;
		pthread_mutex_unlock(&d->lock);
		if (!q)
			break;
		vdisk_queue_destroy(q);
	}
}

static void sync_pools_drain(struct vdisk *d)
{
	sync_pool_drain(d);
	for (unsigned i = 0; i < d->nchildren; i++)
		sync_pools_drain(d->children[i]);
}

/* Close d and everything below it: parent first, so a parent may still do I/O
 * on its children while it closes (never on itself). */
static void close_tree(struct vdisk *d)
{
	sync_pool_drain(d);
	if (d->open_done && d->drv->close)
		d->drv->close(d);
	for (unsigned i = 0; i < d->nchildren; i++)
		close_tree(d->children[i]);
	free_node(d);
}

/* A string that is not UTF-8 (a path can be any bytes) cannot be written as
 * JSON: show it with its odd bytes as \xNN. */
static json_t *printable(json_t *v)
{
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		json_t *ok = json_stringn(s, n);
		if (ok)
			return ok;
		char *e = malloc(4 * n + 1), *o = e;
		if (!e)
			return json_string("?");
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)s[i];
			if (c >= 0x20 && c < 0x7f)
				*o++ = (char)c;
			else
				o += sprintf(o, "\\x%02x", c);
		}
		*o = '\0';
		json_t *r = json_string(e);
		free(e);
		return r;
	}
	if (json_is_object(v)) {
		const char *k;
		json_t *x;
		json_object_foreach (v, k, x)
			json_object_set_new(v, k, printable(x));
	} else if (json_is_array(v)) {
		size_t i;
		json_t *x;
		json_array_foreach (v, i, x)
			json_array_set_new(v, i, printable(x));
	}
	return json_incref(v);
}

static void redact(json_t *cfg, const struct vdisk_driver *drv)
{
	for (size_t i = 0; drv->secret_keys && drv->secret_keys[i]; i++)
		if (json_object_get(cfg, drv->secret_keys[i]))
			json_object_set_new(cfg, drv->secret_keys[i], json_string("***"));
	json_decref(printable(cfg));
}

static int validate_meta(struct vdisk *d)
{
	struct vdisk_meta *m = &d->meta;
	if (!is_pow2(m->sector_size) || m->sector_size < 512)
		return vdisk_set_error("sector size %" PRIu32 " is not a power of two >= 512",
		                       m->sector_size);
	if (m->physical_sector_size == 0)
		m->physical_sector_size = m->sector_size;
	if (!is_pow2(m->physical_sector_size) || m->physical_sector_size < m->sector_size)
		return vdisk_set_error("physical sector size %" PRIu32
		                       " is not a power of two >= the sector size %" PRIu32,
		                       m->physical_sector_size, m->sector_size);
	d->shift = (unsigned)__builtin_ctz(m->sector_size);
	d->max_sector = (uint64_t)INT64_MAX >> d->shift;
	if (m->sector_count > d->max_sector)
		return vdisk_set_error("sector count %" PRIu64 " is too large for %" PRIu32
		                       "-byte sectors",
		                       m->sector_count, m->sector_size);
	if (m->optimal_unmap_sectors == 0)
		m->optimal_unmap_sectors = 1;
	if (m->unmap > VDISK_UNMAP_ZEROES)
		return vdisk_set_error("invalid unmap behaviour %u", m->unmap);
	if (!d->drv->write)
		m->read_only = true;
	if (d->ro_requested)
		m->read_only = true;
	if (d->drv->write_zeroes)
		m->caps |= VDISK_CAP_WRITE_ZEROES;
	if (d->drv->extents)
		m->caps |= VDISK_CAP_EXTENTS;
	/* declared, like resize: a decorator can eject when the disk below can */
	if (!d->drv->eject)
		m->caps &= ~(unsigned)VDISK_CAP_EJECT;
	/* write-zeroes on a disk that unmaps to zeroes is fast through unmap */
	if (m->unmap == VDISK_UNMAP_ZEROES)
		m->caps |= VDISK_CAP_FAST_ZERO;
	return 0;
}

struct vdisk *vd_open_spec_json(json_t *spec, const char *path, struct vdisk *parent,
                                bool read_only)
{
	struct vdisk *d = NULL;
	json_t *cfg = NULL;
	const char *type;
	const char *label = path && *path ? path : NULL;
	bool ro = read_only;
	char where[256];

	if (json_is_string(spec)) {
		cfg = vd_spec_parse(json_string_value(spec), path);
		if (!cfg)
			goto located;
	} else if (json_is_object(spec)) {
		cfg = json_deep_copy(spec);
	} else {
		vdisk_set_error("expected a spec: an object with a \"type\", or a string");
		goto fail;
	}
	if (!cfg) {
		vdisk_set_error_errno(ENOMEM, "spec");
		goto fail;
	}
	json_t *t = json_object_get(cfg, "type");
	if (!t || !json_is_string(t)) {
		vdisk_set_error("missing \"type\" (a string such as \"file\" or \"ram\")");
		goto fail;
	}
	type = json_string_value(t);

	if (vdisk_cfg_bool(cfg, "read-only", &ro) < 0)
		goto fail;
	ro = ro || read_only;
	json_object_del(cfg, "read-only");

	if (strcmp(type, "?probe") == 0) {
		const char *file = json_string_value(json_object_get(cfg, "path"));
		const char *probed;
		if (vd_probe_path(file, ro, &probed) < 0)
			goto fail;
		if (strcmp(probed, "file") != 0 && strcmp(probed, "blockdev") != 0) {
			if (!ro) {
				vdisk_set_error(
				    "'%s' looks like a %s image; to open it writable, give its "
				    "type (%s:path=... or, for raw data, file:path=...)",
				    file, probed, probed);
				goto fail;
			}
			if (!vd_driver_find(probed)) {
				vdisk_set_error(
				    "'%s' looks like a %s image, which this build cannot open; "
				    "give file:path=... to read it as raw data",
				    file, probed);
				goto fail;
			}
		}
		json_object_set_new(cfg, "type", json_string(probed));
		type = json_string_value(json_object_get(cfg, "type"));
	}

	const struct vdisk_driver *drv = vd_driver_find(type);
	if (!drv) {
		vdisk_set_error("unknown type '%s' (see `vdisk --help` for the list)", type);
		goto fail;
	}
	snprintf(where, sizeof where, "%s%s%s", label ? label : "", label ? " " : "", type);

	d = calloc(1, sizeof *d);
	if (!d) {
		vdisk_set_error_errno(ENOMEM, "%s", where);
		goto fail;
	}
	pthread_mutex_init(&d->lock, NULL);
	atomic_init(&d->refcnt, 1);
	d->drv = drv;
	d->parent = parent;
	d->root = d;
	d->ro_requested = ro;
	d->path = strdup(path ? path : "");
	json_t *idv = json_object_get(cfg, "id");
	if (idv) {
		if (!json_is_string(idv)) {
			vdisk_set_error("%s: id: expected a string", where);
			goto fail_node;
		}
		d->id = strdup(json_string_value(idv));
		json_object_del(cfg, "id");
	}
	json_object_del(cfg, "type");
	d->config = json_deep_copy(cfg);
	if (!d->path || !d->config || (idv && !d->id)) {
		vdisk_set_error_errno(ENOMEM, "%s", where);
		goto fail_node;
	}
	redact(d->config, drv);
	if (ro)
		json_object_set_new(d->config, "read-only", json_true());

	err_located = false;
	if (drv->open(d, cfg) < 0) {
		if (!err_located)
			vd_error_prefix(where);
		err_located = true;
		goto fail_node;
	}
	d->open_done = true;
	if (validate_meta(d) < 0) {
		vd_error_prefix(where);
		err_located = true;
		goto fail_node;
	}
	atomic_init(&d->sector_count, d->meta.sector_count);
	json_decref(cfg);
	return d;

fail_node:
	/* children opened before the failure are closed with the node */
	close_tree(d);
	json_decref(cfg);
	return NULL;
fail:
	if (!err_located && label)
		vd_error_prefix(label);
located:
	err_located = true;
	json_decref(cfg);
	return NULL;
}

/* Number the layers of the tree rooted at root (pre-order) and make root the
 * root of each.  Layers that were roots of their own while their parent opened
 * give up their queue pools. */
static unsigned count_nodes(struct vdisk *d)
{
	unsigned n = 1;
	for (unsigned i = 0; i < d->nchildren; i++)
		n += count_nodes(d->children[i]);
	d->subtree = n;
	return n;
}

static void number_nodes(struct vdisk *root, struct vdisk *d, unsigned *next)
{
	if (d != root) {
		free(d->nodes);
		d->nodes = NULL;
		d->nnodes = 0;
		free(d->stats_done);
		d->stats_done = NULL;
	}
	d->root = root;
	d->index = (*next)++;
	root->nodes[d->index] = d;
	for (unsigned i = 0; i < d->nchildren; i++)
		number_nodes(root, d->children[i], next);
}

static int finalize_root(struct vdisk *root)
{
	unsigned n = count_nodes(root), next = 0;
	/* queues made on the layers while they were stacks of their own (the
	 * parent's open doing I/O) index the old numbering */
	for (unsigned i = 0; i < root->nchildren; i++)
		sync_pools_drain(root->children[i]);
	root->nodes = calloc(n, sizeof *root->nodes);
	root->stats_done = calloc(n, sizeof *root->stats_done);
	if (!root->nodes || !root->stats_done)
		return vdisk_set_error_errno(ENOMEM, "open");
	root->nnodes = n;
	number_nodes(root, root, &next);
	for (unsigned i = 0; i < n; i++)
		for (unsigned k = i + 1; root->nodes[i]->id && k < n; k++)
			if (root->nodes[k]->id &&
			    strcmp(root->nodes[i]->id, root->nodes[k]->id) == 0)
				return vdisk_set_error(
				    "id '%s' is given to two layers ('%s' and '%s')",
				    root->nodes[i]->id,
				    *root->nodes[i]->path ? root->nodes[i]->path : "top",
				    root->nodes[k]->path);
	return 0;
}

VD_EXPORT struct vdisk *vdisk_open(const char *spec, unsigned flags)
{
	vd_clear_error();
	err_located = false;
	if (!spec) {
		vdisk_set_error("vdisk_open: spec is NULL");
		return NULL;
	}
	json_t *s = json_string(spec);
	if (!s) {
		/* not UTF-8: still a path */
		s = json_stringn_nocheck(spec, strlen(spec));
	}
	struct vdisk *d = s ? vd_open_spec_json(s, "", NULL, flags & VDISK_OPEN_READ_ONLY) : NULL;
	json_decref(s);
	if (!d)
		return NULL;
	if (finalize_root(d) < 0) {
		close_tree(d);
		return NULL;
	}
	return d;
}

VD_EXPORT struct vdisk *vdisk_open_child(struct vdisk *d, json_t *spec, const char *what,
                                         bool read_only)
{
	char *path = child_path(d->path, what);
	if (!path) {
		vdisk_set_error_errno(ENOMEM, "%s", what);
		return NULL;
	}
	if (!spec) {
		vdisk_set_error("%s: missing (a spec is required)", path);
		err_located = true;
		free(path);
		return NULL;
	}
	struct vdisk *c = vd_open_spec_json(spec, path, d, read_only || d->ro_requested);
	free(path);
	if (!c)
		return NULL;
	/* usable on its own (e.g. synchronous I/O from the parent's open) until the
	 * whole stack is finalized */
	if (finalize_root(c) < 0) {
		close_tree(c);
		return NULL;
	}
	struct vdisk **nc = realloc(d->children, (d->nchildren + 1) * sizeof *nc);
	if (!nc) {
		close_tree(c);
		vdisk_set_error_errno(ENOMEM, "%s", what);
		return NULL;
	}
	d->children = nc;
	d->children[d->nchildren++] = c;
	c->parent = d;
	/* the child's spec shows as its own layer in inspect output */
	char key[64];
	size_t k = strcspn(what, "[.");
	if (k < sizeof key) {
		memcpy(key, what, k);
		key[k] = '\0';
		json_object_del(d->config, key);
	}
	return c;
}

VD_EXPORT struct vdisk *vdisk_ref(struct vdisk *d)
{
	if (!d)
		return NULL;
	atomic_fetch_add_explicit(&d->root->refcnt, 1, memory_order_relaxed);
	return d;
}

VD_EXPORT void vdisk_unref(struct vdisk *d)
{
	if (!d)
		return;
	struct vdisk *root = d->root;
	if (atomic_fetch_sub_explicit(&root->refcnt, 1, memory_order_acq_rel) != 1)
		return;
	sync_pools_drain(root);
	pthread_mutex_lock(&root->lock);
	bool busy = root->queues != NULL;
	pthread_mutex_unlock(&root->lock);
	if (busy)
		vd_bug("vdisk_unref: last reference dropped while queues exist");
	close_tree(root);
}

/* ------------------------------------------------------------------------- */
/* Metadata                                                                    */
/* ------------------------------------------------------------------------- */

uint64_t vd_sector_count(const struct vdisk *d)
{
	if (d->size_root)
		d = d->size_root;
	return atomic_load_explicit(&d->sector_count, memory_order_acquire);
}

VD_EXPORT const char *vdisk_type(const struct vdisk *d)
{
	return d->drv->name;
}
VD_EXPORT uint64_t vdisk_sector_count(const struct vdisk *d)
{
	return vd_sector_count(d);
}
VD_EXPORT uint32_t vdisk_sector_size(const struct vdisk *d)
{
	return d->meta.sector_size;
}
VD_EXPORT uint32_t vdisk_physical_sector_size(const struct vdisk *d)
{
	return d->meta.physical_sector_size;
}
VD_EXPORT bool vdisk_disk_id(const struct vdisk *d, uint8_t id[16])
{
	if (d->meta.has_disk_id && id)
		memcpy(id, d->meta.disk_id, 16);
	return d->meta.has_disk_id;
}
VD_EXPORT bool vdisk_fua_respected(const struct vdisk *d)
{
	return d->meta.fua;
}
VD_EXPORT bool vdisk_read_only(const struct vdisk *d)
{
	return d->meta.read_only;
}
VD_EXPORT enum vdisk_unmap_behavior vdisk_unmap_behavior(const struct vdisk *d)
{
	return (enum vdisk_unmap_behavior)d->meta.unmap;
}
VD_EXPORT uint32_t vdisk_optimal_unmap_sectors(const struct vdisk *d)
{
	return d->meta.optimal_unmap_sectors;
}
VD_EXPORT bool vdisk_has_persistent_reservations(const struct vdisk *d)
{
	return d->meta.has_pr;
}
VD_EXPORT unsigned vdisk_caps(const struct vdisk *d)
{
	return d->meta.caps;
}

VD_EXPORT struct vdisk_meta *vdisk_meta(struct vdisk *d)
{
	return &d->meta;
}
VD_EXPORT void *vdisk_priv(const struct vdisk *d)
{
	return d->priv;
}
VD_EXPORT void vdisk_set_priv(struct vdisk *d, void *priv)
{
	d->priv = priv;
}
VD_EXPORT bool vdisk_read_only_requested(const struct vdisk *d)
{
	return d->ro_requested;
}

VD_EXPORT void vdisk_meta_inherit(struct vdisk *d, struct vdisk *inner)
{
	size_t ctx = d->meta.req_ctx_size;
	d->meta = inner->meta;
	d->meta.sector_count = vd_sector_count(inner);
	d->meta.req_ctx_size = ctx;
	/* the core re-derives these from the decorator's own driver table */
	d->meta.caps &= ~(unsigned)(VDISK_CAP_WRITE_ZEROES | VDISK_CAP_EXTENTS | VDISK_CAP_RESIZE |
	                            VDISK_CAP_EJECT | VDISK_CAP_FAST_ZERO);
	d->meta.caps |= inner->meta.caps & (VDISK_CAP_RESIZE | VDISK_CAP_EJECT);
	d->size_src = inner;
	d->size_root = inner->size_root ? inner->size_root : inner;
}

/* ------------------------------------------------------------------------- */
/* Resize                                                                      */
/* ------------------------------------------------------------------------- */

void vd_wake_resize_waiters(struct vdisk *d)
{
	pthread_mutex_lock(&d->lock);
	/* read under the lock that waiters register under: read before it, a
	 * resize that completed meanwhile would leave this one a stale count to
	 * give to a waiter that registered with the newer one */
	uint64_t cur = vd_sector_count(d);
	struct vdisk_req **pp = &d->waiters;
	while (*pp) {
		struct vdisk_req *r = *pp;
		if (r->internal.resize_old != cur) {
			*pp = r->internal.next;
			r->internal.next = NULL;
			*r->internal.resize_out = cur;
			/* under d->lock, so the queue cannot be destroyed meanwhile */
			vd_complete_remote(r, vdisk_status_ok());
		} else {
			pp = &r->internal.next;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

VD_EXPORT void vdisk_set_sector_count(struct vdisk *d, uint64_t count)
{
	atomic_store_explicit(&d->sector_count, count, memory_order_release);
	/* wake d and every layer above whose size follows it */
	for (struct vdisk *c = d, *p = d; p; c = p, p = p->parent) {
		if (p != d && p->size_src != c)
			break;
		vd_wake_resize_waiters(p);
	}
}

VD_EXPORT int vdisk_resize(struct vdisk *d, uint64_t n)
{
	vd_clear_error();
	if (!d)
		return vdisk_set_error("vdisk_resize: disk is NULL");
	struct vdisk *t = d;
	while (!t->drv->resize && t->size_src)
		t = t->size_src;
	if (!t->drv->resize || !(d->meta.caps & VDISK_CAP_RESIZE))
		return vdisk_set_error("vdisk_resize: a %s disk cannot be resized", d->drv->name);
	if (n == 0 || n > t->max_sector)
		return vdisk_set_error("vdisk_resize: %" PRIu64 " sectors is not a valid size", n);
	if (t->drv->resize(t, n) < 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Control                                                                     */
/* ------------------------------------------------------------------------- */

VD_EXPORT struct vdisk *vdisk_find(struct vdisk *d, const char *id)
{
	vd_clear_error();
	if (!d) {
		vdisk_set_error("vdisk_find: disk is NULL");
		return NULL;
	}
	struct vdisk *root = d->root;
	for (unsigned i = 0; id && i < root->nnodes; i++) {
		struct vdisk *n = root->nodes[i];
		if (n->id && strcmp(n->id, id) == 0)
			return vdisk_ref(n);
	}
	vdisk_set_error("vdisk_find: no layer has id '%s'", id ? id : "(null)");
	return NULL;
}

VD_EXPORT int vdisk_ctl(struct vdisk *d, const char *op, const char *json_args, char **result)
{
	json_t *args = NULL, *res = NULL;
	int rc = -1;
	vd_clear_error();
	if (result)
		*result = NULL;
	if (!d || !op)
		return vdisk_set_error("vdisk_ctl: %s is NULL", d ? "op" : "disk");
	if (!d->drv->ctl)
		return vdisk_set_error("vdisk_ctl: a %s layer has no control operations",
		                       d->drv->name);
	if (json_args && *json_args) {
		json_error_t err;
		args = json_loads(json_args, JSON_DECODE_ANY, &err);
		if (!args)
			return vdisk_set_error("vdisk_ctl %s: invalid JSON arguments: %s", op,
			                       err.text);
	} else {
		args = json_object();
	}
	if (d->drv->ctl(d, op, args, &res) < 0) {
		char tmp[64];
		snprintf(tmp, sizeof tmp, "%s %s", d->drv->name, op);
		vd_error_prefix(tmp);
		goto out;
	}
	if (result && res)
		*result = json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY);
	rc = 0;
out:
	json_decref(args);
	json_decref(res);
	return rc;
}
