/* rbd: a Ceph RADOS Block Device image as a disk, through librbd.
 *
 * One cluster connection and one image handle per disk, shared by every queue:
 * a second handle of the same image in one process would make the two fight
 * over the image's exclusive lock on every write.
 *
 * Completions.  librbd completes every request on a thread of its own (its
 * finisher), whatever way the application is told: the callback given to
 * rbd_aio_create_completion() runs there, and the image's event notification
 * (rbd_set_image_notification() + rbd_poll_io_events()) is only a second way
 * of learning of it, written to one descriptor per image.  Since the image is
 * shared by the queues, a queue watching that descriptor would also pull the
 * completions of other queues and have to pass them on under a lock.  So each
 * request is handed back to its own queue from the callback with
 * vdisk_req_complete_remote(): one lock-free push, and one wake-up for all the
 * completions that arrive while the queue is busy.  The same number of thread
 * crossings as the event descriptor, without the demultiplexing.
 *
 * librbd allocates its completion object per request (rbd_aio_create_completion);
 * nothing else is allocated on the data path.
 *
 * FUA is a write and a flush issued together: librbd completes a flush only
 * after every write submitted before it (its flush tracker), so the request
 * completes when both have.  Extents come from rbd_diff_iterate2() (blocking:
 * run on the worker pool).  A resize by another client reaches us through the
 * image's update watch, on librbd's thread, which reads the new size and wakes
 * vdisk_wait_resize(). */
/* Statics are vrbd_* rather than rbd_*: librbd owns that prefix. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "vdisk/backend.h"

struct vrbd {
	rados_t cluster;
	rados_ioctx_t io;
	rbd_image_t image;
	uint64_t watch_handle;
	bool watching;
	struct vdisk *d;
	unsigned shift;
	bool read_only;
	bool created;
	uint64_t timeout_ns;
	uint64_t object_size;
	uint64_t features;
	char *cluster_name, *pool, *nspace, *name, *snap, *conf, *user, *id;
	char fsid[40];
};

/* Per request: how many librbd completions are still out (2 for a FUA write)
 * and the first failure among them. */
struct vrbd_ctx {
	atomic_int pending;
	atomic_int err; /* first negative result, 0 if none */
	int64_t want;   /* bytes a read or write must report */
	unsigned next;  /* extents: entries filled */
	uint64_t pos;   /* extents: byte offset described so far */
	uint64_t end;
};

static struct vrbd_ctx *ctx_of(struct vdisk_req *r)
{
	return vdisk_req_ctx(r);
}

/* ------------------------------------------------------------------------- */
/* Data path                                                                   */
/* ------------------------------------------------------------------------- */

static vdisk_status vrbd_status(struct vdisk_req *r, int err)
{
	if (err == 0)
		return vdisk_status_ok();
	/* a request that the core let through but that now lies past the end
	 * raced with a shrink */
	if (err == -EINVAL || err == -ERANGE) {
		struct vrbd *b = vdisk_priv(r->disk);
		uint64_t size = 0;
		if (rbd_get_size(b->image, &size) == 0 &&
		    ((r->sector + r->count) << b->shift) > size)
			return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	}
	if (err == -EROFS)
		return vdisk_status_make(VDISK_ERR_READ_ONLY, 0);
	return vdisk_status_io(-err);
}

static void vrbd_cb(rbd_completion_t c, void *arg)
{
	struct vdisk_req *r = arg;
	struct vrbd_ctx *x = ctx_of(r);
	ssize_t ret = rbd_aio_get_return_value(c);
	rbd_aio_release(c);
	int err = 0;
	if (ret < 0)
		err = (int)ret;
	else if (x->want >= 0 && ret != x->want)
		err = -EIO; /* a short transfer is never success */
	if (err) {
		int zero = 0;
		atomic_compare_exchange_strong(&x->err, &zero, err);
	}
	if (atomic_fetch_sub_explicit(&x->pending, 1, memory_order_acq_rel) == 1)
		vdisk_req_complete_remote(r, vrbd_status(r, atomic_load(&x->err)));
}

/* Account for one librbd call that failed at submission (its completion will
 * never run). */
static void vrbd_submit_failed(struct vdisk_req *r, rbd_completion_t c, int err)
{
	rbd_aio_release(c);
	struct vrbd_ctx *x = ctx_of(r);
	int zero = 0;
	atomic_compare_exchange_strong(&x->err, &zero, err);
	if (atomic_fetch_sub_explicit(&x->pending, 1, memory_order_acq_rel) == 1)
		vdisk_req_complete_remote(r, vrbd_status(r, atomic_load(&x->err)));
}

enum vrbd_call { C_READ, C_WRITE, C_FLUSH, C_DISCARD, C_ZEROES };

static void vrbd_issue(struct vdisk_req *r, enum vrbd_call call)
{
	struct vrbd *b = vdisk_priv(r->disk);
	rbd_completion_t c;
	int ret = rbd_aio_create_completion(r, vrbd_cb, &c);
	if (ret < 0) {
		struct vrbd_ctx *x = ctx_of(r);
		int zero = 0;
		atomic_compare_exchange_strong(&x->err, &zero, ret);
		if (atomic_fetch_sub_explicit(&x->pending, 1, memory_order_acq_rel) == 1)
			vdisk_req_complete_remote(r, vrbd_status(r, atomic_load(&x->err)));
		return;
	}
	uint64_t off = r->sector << b->shift, len = r->count << b->shift;
	switch (call) {
	case C_READ: ret = rbd_aio_readv(b->image, r->iov, r->iovcnt, off, c); break;
	case C_WRITE: ret = rbd_aio_writev(b->image, r->iov, r->iovcnt, off, c); break;
	case C_FLUSH: ret = rbd_aio_flush(b->image, c); break;
	case C_DISCARD: ret = rbd_aio_discard(b->image, off, len, c); break;
	case C_ZEROES: ret = rbd_aio_write_zeroes(b->image, off, len, c, 0, 0); break;
	}
	if (ret < 0)
		vrbd_submit_failed(r, c, ret);
}

/* Start r with n librbd calls; from here on it completes from librbd's thread. */
static void vrbd_begin(struct vdisk_req *r, int n, int64_t want)
{
	struct vrbd_ctx *x = ctx_of(r);
	atomic_init(&x->pending, n);
	atomic_init(&x->err, 0);
	x->want = want;
	vdisk_req_remote_begin(r);
}

static int vrbd_read(struct vdisk_req *r)
{
	vrbd_begin(r, 1, (int64_t)r->len);
	vrbd_issue(r, C_READ);
	return 0;
}

static int vrbd_write(struct vdisk_req *r)
{
	bool fua = r->flags & VDISK_IO_FUA;
	/* librbd writes all or fail; what it returns on success is 0 or the
	 * length depending on the version */
	vrbd_begin(r, fua ? 2 : 1, -1);
	vrbd_issue(r, C_WRITE);
	if (fua)
		vrbd_issue(r, C_FLUSH);
	return 0;
}

static int vrbd_flush(struct vdisk_req *r)
{
	vrbd_begin(r, 1, -1);
	vrbd_issue(r, C_FLUSH);
	return 0;
}

static int vrbd_unmap(struct vdisk_req *r)
{
	vrbd_begin(r, 1, -1);
	vrbd_issue(r, C_DISCARD);
	return 0;
}

static int vrbd_write_zeroes(struct vdisk_req *r)
{
	bool fua = r->flags & VDISK_IO_FUA;
	vrbd_begin(r, fua ? 2 : 1, -1);
	vrbd_issue(r, C_ZEROES);
	if (fua)
		vrbd_issue(r, C_FLUSH);
	return 0;
}

/* Extents: diff_iterate reports the allocated runs in order; the gaps between
 * them read as zeros. */
static int vrbd_extent_add(struct vdisk_req *r, uint64_t off, uint64_t len, uint32_t flags)
{
	struct vrbd *b = vdisk_priv(r->disk);
	struct vrbd_ctx *x = ctx_of(r);
	uint64_t mask = (1ull << b->shift) - 1, s, e;
	/* a run that does not fall on sector boundaries: data widens to whole
	 * sectors, a hole narrows, so neighbours stay contiguous */
	if (flags) {
		s = (off + mask) >> b->shift;
		e = (off + len) >> b->shift;
	} else {
		s = off >> b->shift;
		e = (off + len + mask) >> b->shift;
	}
	uint64_t prev_end =
	    x->next ? r->ext[x->next - 1].sector + r->ext[x->next - 1].count : r->sector;
	if (s < prev_end)
		s = prev_end;
	x->pos = off + len;
	if (e <= s)
		return 0;
	if (x->next && r->ext[x->next - 1].flags == flags && prev_end == s) {
		r->ext[x->next - 1].count += e - s;
	} else {
		if (x->next == r->ext_max) {
			x->pos = off;
			return -ECANCELED;
		}
		r->ext[x->next++] = (struct vdisk_extent){s, e - s, flags, 0};
	}
	return 0;
}

static int vrbd_diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct vdisk_req *r = arg;
	struct vrbd_ctx *x = ctx_of(r);
	if (off + len <= x->pos)
		return 0;
	if (off < x->pos) {
		len -= x->pos - off;
		off = x->pos;
	}
	if (off > x->pos) {
		int ret =
		    vrbd_extent_add(r, x->pos, off - x->pos, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
		if (ret < 0)
			return ret;
	}
	return vrbd_extent_add(r, off, len, exists ? 0 : VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO);
}

static vdisk_status vrbd_extents_work(struct vdisk_req *r)
{
	struct vrbd *b = vdisk_priv(r->disk);
	struct vrbd_ctx *x = ctx_of(r);
	x->next = 0;
	x->pos = r->sector << b->shift;
	x->end = (r->sector + r->count) << b->shift;
	/* whole_object: with the fast-diff feature the object map answers without
	 * reading any object; runs are then object-sized, which is still exact
	 * about what is unallocated */
	int ret = rbd_diff_iterate2(b->image, NULL, x->pos, x->end - x->pos, 1,
	                            (b->features & RBD_FEATURE_FAST_DIFF) ? 1 : 0, vrbd_diff_cb, r);
	if (ret < 0 && ret != -ECANCELED)
		return vrbd_status(r, ret);
	if (ret != -ECANCELED && x->pos < x->end &&
	    vrbd_extent_add(r, x->pos, x->end - x->pos, VDISK_EXTENT_HOLE | VDISK_EXTENT_ZERO) < 0)
		ret = -ECANCELED;
	/* object-sized runs may reach past the range asked */
	if (x->next) {
		struct vdisk_extent *last = &r->ext[x->next - 1];
		if (last->sector + last->count > r->sector + r->count)
			last->count = r->sector + r->count - last->sector;
	}
	*r->ext_n = x->next;
	return vdisk_status_ok();
}

static int vrbd_extents(struct vdisk_req *r)
{
	*r->ext_n = 0;
	if (!r->count || !r->ext_max) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	return vdisk_offload(r, vrbd_extents_work);
}

/* ------------------------------------------------------------------------- */
/* Control path                                                                */
/* ------------------------------------------------------------------------- */

/* On librbd's watch thread when the image's header changed (another client
 * resized it, took a snapshot...): follow the size. */
static void vrbd_update_cb(void *arg)
{
	struct vrbd *b = arg;
	uint64_t size;
	if (rbd_get_size(b->image, &size) < 0)
		return;
	uint64_t count = size >> b->shift;
	if (count && count != vdisk_sector_count(b->d))
		vdisk_set_sector_count(b->d, count);
}

static int vrbd_resize_op(struct vdisk *d, uint64_t count)
{
	struct vrbd *b = vdisk_priv(d);
	int ret = rbd_resize(b->image, count << b->shift);
	if (ret < 0)
		return vdisk_set_error_errno(
		    -ret, "cluster '%s', pool '%s', image '%s': resize to %" PRIu64 " bytes failed",
		    b->cluster_name, b->pool, b->name, count << b->shift);
	vdisk_set_sector_count(d, count);
	return 0;
}

static int vrbd_inspect(struct vdisk *d, json_t *obj)
{
	struct vrbd *b = vdisk_priv(d);
	json_t *c = json_object();
	json_object_set_new(c, "name", json_string(b->cluster_name));
	json_object_set_new(c, "fsid", json_string(b->fsid));
	if (b->conf)
		json_object_set_new(c, "conf", json_string(b->conf));
	json_object_set_new(c, "user", json_string(b->user));
	json_object_set_new(obj, "cluster", c);
	json_object_set_new(obj, "pool", json_string(b->pool));
	if (b->nspace[0])
		json_object_set_new(obj, "namespace", json_string(b->nspace));
	json_object_set_new(obj, "image", json_string(b->name));
	json_object_set_new(obj, "image_id", json_string(b->id));
	if (b->snap)
		json_object_set_new(obj, "snapshot", json_string(b->snap));
	json_object_set_new(obj, "object_size", json_integer((json_int_t)b->object_size));
	json_object_set_new(obj, "features", json_integer((json_int_t)b->features));
	json_object_set_new(obj, "created", json_boolean(b->created));
	json_object_set_new(obj, "timeout_ns", json_integer((json_int_t)b->timeout_ns));
	return 0;
}

static void vrbd_free(struct vrbd *b)
{
	if (b->watching)
		rbd_update_unwatch(b->image, b->watch_handle);
	if (b->image)
		rbd_close(b->image);
	if (b->io)
		rados_ioctx_destroy(b->io);
	if (b->cluster)
		rados_shutdown(b->cluster);
	free(b->cluster_name);
	free(b->pool);
	free(b->nspace);
	free(b->name);
	free(b->snap);
	free(b->conf);
	free(b->user);
	free(b->id);
	free(b);
}

static void vrbd_close_op(struct vdisk *d)
{
	vrbd_free(vdisk_priv(d));
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* A name librados would take apart or refuse: reject it here, naming the key. */
static int vrbd_check_name(const char *key, const char *v, bool allow_empty)
{
	if (!allow_empty && !v[0])
		return vdisk_set_error("%s: must not be empty", key);
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == '@' || *p == '/')
			return vdisk_set_error(
			    "%s: '%s' contains '%c', which RBD names cannot hold", key, v,
			    *p < 0x20 ? '?' : *p);
	return 0;
}

static int vrbd_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"pool",   "image",   "namespace",   "snapshot",
	                                   "conf",   "user",    "keyring",     "cluster",
	                                   "create", "timeout", "sector-size", NULL};
	const char *pool = "rbd", *image = NULL, *nspace = "", *snap = NULL, *conf = NULL,
	           *user = "admin", *keyring = NULL, *cluster = "ceph";
	uint64_t create = 0, timeout = 30ull * 1000000000, ss = 512;
	int have_create;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "pool", &pool) < 0 ||
	    vdisk_cfg_string(cfg, "image", &image) < 0 ||
	    vdisk_cfg_string(cfg, "namespace", &nspace) < 0 ||
	    vdisk_cfg_string(cfg, "snapshot", &snap) < 0 ||
	    vdisk_cfg_string(cfg, "conf", &conf) < 0 || vdisk_cfg_string(cfg, "user", &user) < 0 ||
	    vdisk_cfg_string(cfg, "keyring", &keyring) < 0 ||
	    vdisk_cfg_string(cfg, "cluster", &cluster) < 0 ||
	    (have_create = vdisk_cfg_size(cfg, "create", &create)) < 0 ||
	    vdisk_cfg_duration(cfg, "timeout", &timeout) < 0 ||
	    vdisk_cfg_size(cfg, "sector-size", &ss) < 0)
		return -1;
	if (!image)
		return vdisk_set_error("image: missing (the name of the RBD image)");
	if (vrbd_check_name("pool", pool, false) < 0 ||
	    vrbd_check_name("image", image, false) < 0 ||
	    vrbd_check_name("namespace", nspace, true) < 0 ||
	    (snap && vrbd_check_name("snapshot", snap, false) < 0) ||
	    vrbd_check_name("user", user, false) < 0 ||
	    vrbd_check_name("cluster", cluster, false) < 0)
		return -1;
	if (ss != 512 && ss != 4096)
		return vdisk_set_error("sector-size: %" PRIu64 " is not 512 or 4096", ss);
	if (have_create && (create == 0 || create % ss))
		return vdisk_set_error("create: %" PRIu64 " is not a non-zero multiple of %" PRIu64,
		                       create, ss);
	if (have_create && snap)
		return vdisk_set_error("create: cannot be combined with snapshot '%s'", snap);

	bool ro = vdisk_read_only_requested(d) || snap;
	struct vrbd *b = calloc(1, sizeof(*b));
	if (!b)
		return vdisk_set_error_errno(ENOMEM, "out of memory");
	b->d = d;
	b->shift = (unsigned)__builtin_ctzll(ss);
	b->read_only = ro;
	b->timeout_ns = timeout;
	b->cluster_name = strdup(cluster);
	b->pool = strdup(pool);
	b->nspace = strdup(nspace);
	b->name = strdup(image);
	b->snap = dup_or_null(snap);
	b->conf = dup_or_null(conf);
	b->user = strdup(user);
	if (!b->cluster_name || !b->pool || !b->nspace || !b->name || (snap && !b->snap) ||
	    (conf && !b->conf) || !b->user) {
		vrbd_free(b);
		return vdisk_set_error_errno(ENOMEM, "out of memory");
	}

	/* every message names where the image was looked for */
	char where[512];
	snprintf(where, sizeof(where), "cluster '%s'%s%s%s, pool '%s'%s%s%s, image '%s'", cluster,
	         conf ? " (conf '" : "", conf ? conf : "", conf ? "')" : "", pool,
	         nspace[0] ? ", namespace '" : "", nspace, nspace[0] ? "'" : "", image);
	char client[256], tmo[32];
	snprintf(client, sizeof(client), "client.%s", user);
	int ret = rados_create2(&b->cluster, cluster, client, 0);
	if (ret < 0) {
		b->cluster = NULL;
		vdisk_set_error_errno(-ret, "%s: cannot set up a client as '%s'", where, client);
		goto fail;
	}
	/* conf: the file given, else librados's own search ($CEPH_CONF,
	 * /etc/ceph/$cluster.conf, ~/.ceph/...) */
	ret = rados_conf_read_file(b->cluster, conf);
	if (ret < 0 && conf) {
		vdisk_set_error_errno(-ret, "%s: cannot read the configuration file '%s'", where,
		                      conf);
		goto fail;
	}
	/* librados's own complaints would go to our stderr: the message set
	 * below says what failed */
	rados_conf_set(b->cluster, "log_to_stderr", "false");
	rados_conf_set(b->cluster, "err_to_stderr", "false");
	ret = 0;
	if (keyring)
		ret = rados_conf_set(b->cluster, "keyring", keyring);
	/* timeout bounds connecting and every monitor and OSD operation, so a
	 * cluster that is down fails the open (and, later, the I/O) instead of
	 * hanging it */
	snprintf(tmo, sizeof(tmo), "%" PRIu64, (timeout + 999999999) / 1000000000);
	if (ret == 0 && timeout) {
		if ((ret = rados_conf_set(b->cluster, "client_mount_timeout", tmo)) == 0 &&
		    (ret = rados_conf_set(b->cluster, "rados_mon_op_timeout", tmo)) == 0)
			ret = rados_conf_set(b->cluster, "rados_osd_op_timeout", tmo);
	}
	if (ret < 0) {
		vdisk_set_error_errno(-ret, "%s: cannot configure the client", where);
		goto fail;
	}
	ret = rados_connect(b->cluster);
	if (ret < 0) {
		char mon[256] = "";
		rados_conf_get(b->cluster, "mon_host", mon, sizeof(mon));
		const char *why = ret == -ETIMEDOUT ? "no monitor answered within the timeout"
		                  : ret == -EACCES || ret == -EPERM
		                      ? "authentication refused (check user and keyring)"
		                  : ret == -ENOENT ? "no monitor address or keyring found"
		                                   : "failed";
		vdisk_set_error_errno(
		    -ret, "%s: cannot connect to the cluster (monitors '%s', as %s): %s", where,
		    mon[0] ? mon : "none configured", client, why);
		goto fail;
	}
	rados_cluster_fsid(b->cluster, b->fsid, sizeof(b->fsid));
	ret = rados_ioctx_create(b->cluster, pool, &b->io);
	if (ret < 0) {
		b->io = NULL;
		vdisk_set_error_errno(-ret, "%s: %s", where,
		                      ret == -ENOENT ? "the pool does not exist"
		                                     : "cannot open the pool");
		goto fail;
	}
	rados_ioctx_set_namespace(b->io, nspace);

	if (have_create && !ro) {
		int order = 0;
		ret = rbd_create(b->io, image, create, &order);
		if (ret == 0)
			b->created = true;
		else if (ret != -EEXIST) {
			vdisk_set_error_errno(-ret, "%s: cannot create the image", where);
			goto fail;
		}
	}
	ret = ro ? rbd_open_read_only(b->io, image, &b->image, snap)
	         : rbd_open(b->io, image, &b->image, NULL);
	if (ret < 0) {
		b->image = NULL;
		vdisk_set_error_errno(
		    -ret, "%s%s%s%s: %s", where, snap ? ", snapshot '" : "", snap ? snap : "",
		    snap ? "'" : "",
		    ret == -ENOENT ? (snap          ? "the image or snapshot does not exist"
		                      : have_create ? "the image does not exist (and create= "
		                                      "cannot make one on a read-only open)"
		                                    : "the image does not exist")
		                   : "cannot open the image");
		goto fail;
	}
	uint64_t size = 0;
	rbd_image_info_t info;
	char id[128];
	if ((ret = rbd_get_size(b->image, &size)) < 0 ||
	    (ret = rbd_stat(b->image, &info, sizeof(info))) < 0 ||
	    (ret = rbd_get_features(b->image, &b->features)) < 0 ||
	    (ret = rbd_get_id(b->image, id, sizeof(id))) < 0) {
		vdisk_set_error_errno(-ret, "%s: cannot read the image's header", where);
		goto fail;
	}
	b->object_size = info.obj_size;
	b->id = strdup(id);
	if (!b->id) {
		vdisk_set_error_errno(ENOMEM, "out of memory");
		goto fail;
	}
	if (have_create && !b->created && size != create) {
		vdisk_set_error("%s: exists with %" PRIu64 " bytes, not the %" PRIu64
		                " bytes of create= (refusing to change it)",
		                where, size, create);
		goto fail;
	}
	if (size >> b->shift == 0) {
		vdisk_set_error("%s: the image holds %" PRIu64 " bytes, less than one %" PRIu64
		                "-byte sector",
		                where, size, ss);
		goto fail;
	}
	if (!snap) {
		ret = rbd_update_watch(b->image, &b->watch_handle, vrbd_update_cb, b);
		if (ret < 0) {
			vdisk_set_error_errno(-ret, "%s: cannot watch the image for resizes",
			                      where);
			goto fail;
		}
		b->watching = true;
	}

	struct vdisk_meta *m = vdisk_meta(d);
	m->sector_size = (uint32_t)ss;
	m->physical_sector_size = (uint32_t)ss;
	m->sector_count = size >> b->shift;
	m->read_only = ro;
	m->fua = true;
	/* a discard that does not cover whole objects may leave the data
	 * (rbd_skip_partial_discard) */
	m->unmap = VDISK_UNMAP_UNSPECIFIED;
	m->optimal_unmap_sectors = (uint32_t)(info.obj_size >> b->shift);
	m->caps = VDISK_CAP_SHARED_FLUSH | VDISK_CAP_WRITE_ZEROES | VDISK_CAP_FAST_ZERO |
	          VDISK_CAP_EXTENTS | (ro ? 0 : VDISK_CAP_RESIZE);
	m->req_ctx_size = sizeof(struct vrbd_ctx);
	/* a stable id for the image wherever it is opened: the cluster's fsid,
	 * the pool, the namespace and the image's own id, hashed */
	{
		char key[512];
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		int64_t pool_id = rados_ioctx_get_id(b->io);
		int n = snprintf(key, sizeof(key), "rbd/%s/%" PRId64 "/%s/%s", b->fsid, pool_id,
		                 nspace, id);
		if (EVP_Digest(key, (size_t)n, md, &mdlen, EVP_sha256(), NULL) && mdlen >= 16) {
			memcpy(m->disk_id, md, 16);
			m->has_disk_id = true;
		}
	}
	vdisk_set_priv(d, b);
	return 0;
fail:
	vrbd_free(b);
	return -1;
}

const struct vdisk_driver vdisk_driver_rbd = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "rbd",
    .description = "Ceph RBD image through librbd (pool, image, namespace, snapshot, conf, "
                   "user, keyring, cluster, create, timeout, sector-size)",
    .open = vrbd_open,
    .close = vrbd_close_op,
    .read = vrbd_read,
    .write = vrbd_write,
    .flush = vrbd_flush,
    .unmap = vrbd_unmap,
    .write_zeroes = vrbd_write_zeroes,
    .extents = vrbd_extents,
    .resize = vrbd_resize_op,
    .inspect = vrbd_inspect,
};
