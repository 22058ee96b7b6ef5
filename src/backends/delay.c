/* delay: adds latency to each operation of the disk below.
 *
 * A delayed request waits on a timer of its own queue and is forwarded when the
 * timer fires, so no thread sleeps: thousands of delayed requests can be in
 * flight on one queue, and each completes when its own delay is over (a short
 * request submitted after a long one overtakes it).  The delays are read at
 * submission from atomics, so vdisk_ctl(d, "set", ...) changes them while I/O
 * runs; a delay of 0 forwards at once, with nothing but an atomic load added.
 *
 * Write-zeroes takes the write delay; extents and eject are not delayed. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

enum { D_READ, D_WRITE, D_FLUSH, D_UNMAP, D_COUNT };

static const char *const delay_keys[D_COUNT] = {"read", "write", "flush", "unmap"};

struct delay {
	struct vdisk *inner;
	_Atomic uint64_t ns[D_COUNT];
};

struct delay_ctx {
	struct vdisk_timer timer;
};

static int delay_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner", "read", "write", "flush", "unmap", NULL};
	uint64_t ns[D_COUNT] = {0};
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	for (int i = 0; i < D_COUNT; i++)
		if (vdisk_cfg_duration(cfg, delay_keys[i], &ns[i]) < 0)
			return -1;
	struct delay *dl = calloc(1, sizeof *dl);
	if (!dl)
		return vdisk_set_error_errno(ENOMEM, "delay");
	for (int i = 0; i < D_COUNT; i++)
		atomic_init(&dl->ns[i], ns[i]);
	dl->inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!dl->inner) {
		free(dl);
		return -1;
	}
	vdisk_set_priv(d, dl);
	vdisk_meta(d)->req_ctx_size = sizeof(struct delay_ctx);
	vdisk_meta_inherit(d, dl->inner);
	return 0;
}

static void delay_close(struct vdisk *d)
{
	free(vdisk_priv(d));
}

static void delay_fire(struct vdisk_timer *t)
{
	struct delay_ctx *c = (struct delay_ctx *)((char *)t - offsetof(struct delay_ctx, timer));
	struct vdisk_req *r = vdisk_req_from_ctx(c);
	struct delay *dl = vdisk_priv(r->disk);
	int rc = vdisk_req_forward(r, dl->inner);
	if (rc < 0)
		vdisk_req_complete(r, vdisk_status_io(-rc));
}

static inline int delay_submit(struct vdisk_req *r, int which)
{
	struct delay *dl = vdisk_priv(r->disk);
	uint64_t ns = atomic_load_explicit(&dl->ns[which], memory_order_relaxed);
	if (ns == 0)
		return vdisk_req_forward(r, dl->inner);
	struct delay_ctx *c = vdisk_req_ctx(r);
	uint64_t now = vdisk_now_ns();
	vdisk_timer_start(r->q, &c->timer, ns > UINT64_MAX - now ? UINT64_MAX : now + ns,
	                  delay_fire);
	return 0;
}

static int delay_read(struct vdisk_req *r)
{
	return delay_submit(r, D_READ);
}
static int delay_write(struct vdisk_req *r)
{
	return delay_submit(r, D_WRITE);
}
static int delay_flush(struct vdisk_req *r)
{
	return delay_submit(r, D_FLUSH);
}
static int delay_unmap(struct vdisk_req *r)
{
	return delay_submit(r, D_UNMAP);
}

static int delay_forward(struct vdisk_req *r)
{
	struct delay *dl = vdisk_priv(r->disk);
	return vdisk_req_forward(r, dl->inner);
}

/* "2ms" rather than 2000000, so that the answer reads back as a spec value. */
static json_t *duration_json(uint64_t ns)
{
	char buf[32];
	if (ns == 0)
		snprintf(buf, sizeof buf, "0");
	else if (ns % 1000000000u == 0)
		snprintf(buf, sizeof buf, "%" PRIu64 "s", ns / 1000000000u);
	else if (ns % 1000000u == 0)
		snprintf(buf, sizeof buf, "%" PRIu64 "ms", ns / 1000000u);
	else if (ns % 1000u == 0)
		snprintf(buf, sizeof buf, "%" PRIu64 "us", ns / 1000u);
	else
		snprintf(buf, sizeof buf, "%" PRIu64 "ns", ns);
	return json_string(buf);
}

static json_t *delays_json(struct delay *dl)
{
	json_t *o = json_object();
	for (int i = 0; i < D_COUNT; i++)
		json_object_set_new(o, delay_keys[i], duration_json(atomic_load(&dl->ns[i])));
	return o;
}

/* set {"read":"5ms",...}: every key is checked before any delay changes. */
static int delay_ctl(struct vdisk *d, const char *op, json_t *args, json_t **result)
{
	struct delay *dl = vdisk_priv(d);
	if (strcmp(op, "get") == 0) {
		*result = delays_json(dl);
		return 0;
	}
	if (strcmp(op, "set") != 0)
		return vdisk_set_error("unknown operation (known: set, get)");
	static const char *const keys[] = {"read", "write", "flush", "unmap", NULL};
	uint64_t ns[D_COUNT];
	int have[D_COUNT];
	if (!json_is_object(args))
		return vdisk_set_error("expected an object such as {\"read\":\"5ms\"}");
	if (vdisk_cfg_check(args, keys) < 0)
		return -1;
	for (int i = 0; i < D_COUNT; i++)
		if ((have[i] = vdisk_cfg_duration(args, delay_keys[i], &ns[i])) < 0)
			return -1;
	for (int i = 0; i < D_COUNT; i++)
		if (have[i])
			atomic_store(&dl->ns[i], ns[i]);
	*result = delays_json(dl);
	return 0;
}

static int delay_inspect(struct vdisk *d, json_t *obj)
{
	json_object_set_new(obj, "delays", delays_json(vdisk_priv(d)));
	return 0;
}

const struct vdisk_driver vdisk_driver_delay = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "delay",
    .description = "adds latency per operation, changeable while running (inner, read, write, "
                   "flush, unmap)",
    .open = delay_open,
    .close = delay_close,
    .read = delay_read,
    .write = delay_write,
    .flush = delay_flush,
    .unmap = delay_unmap,
    .write_zeroes = delay_write,
    .extents = delay_forward,
    .eject = delay_forward,
    .inspect = delay_inspect,
    .ctl = delay_ctl,
};
