/* The inspect tree: every layer's type, metadata, configuration (secrets
 * redacted) and statistics, as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static json_t *disk_id_json(const struct vdisk *d)
{
	char hex[33];
	if (!d->meta.has_disk_id)
		return json_null();
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", d->meta.disk_id[i]);
	return json_string(hex);
}

static void add_meta(json_t *o, struct vdisk *d)
{
	json_object_set_new(o, "type", json_string(d->drv->name));
	json_object_set_new(o, "sector_count", json_integer((json_int_t)vd_sector_count(d)));
	json_object_set_new(o, "sector_size", json_integer(d->meta.sector_size));
	json_object_set_new(o, "physical_sector_size", json_integer(d->meta.physical_sector_size));
	json_object_set_new(o, "disk_id", disk_id_json(d));
	json_object_set_new(o, "fua", json_boolean(d->meta.fua));
	json_object_set_new(o, "read_only", json_boolean(d->meta.read_only));
	json_object_set_new(
	    o, "unmap_behavior",
	    json_string(vdisk_unmap_behavior_name((enum vdisk_unmap_behavior)d->meta.unmap)));
	json_object_set_new(o, "optimal_unmap_sectors",
	                    json_integer(d->meta.optimal_unmap_sectors));
	json_object_set_new(o, "persistent_reservations", json_boolean(d->meta.has_pr));
	json_t *caps = json_array();
	static const char *const capnames[] = {"write_zeroes", "fast_zero",    "extents",
	                                       "resize",       "shared_flush", "eject"};
	for (unsigned i = 0; i < sizeof capnames / sizeof *capnames; i++)
		if (d->meta.caps & (1u << i))
			json_array_append_new(caps, json_string(capnames[i]));
	json_object_set_new(o, "capabilities", caps);
}

static json_t *stats_json(struct vd_stats *s)
{
	json_t *o = json_object();
	double tpn = vd_ticks_per_ns();
	for (unsigned op = 0; op < VD_NOPS; op++) {
		uint64_t ops = atomic_load_explicit(&s->ops[op], memory_order_relaxed);
		if (!ops)
			continue;
		json_t *e = json_object();
		json_object_set_new(e, "ops", json_integer((json_int_t)ops));
		json_object_set_new(e, "bytes",
		                    json_integer((json_int_t)atomic_load(&s->bytes[op])));
		json_object_set_new(e, "errors",
		                    json_integer((json_int_t)atomic_load(&s->errors[op])));
		json_t *h = json_array();
		for (unsigned b = 0; b < VD_HIST_BUCKETS; b++) {
			uint64_t c = atomic_load_explicit(&s->hist[op][b], memory_order_relaxed);
			if (!c)
				continue;
			/* bucket b holds latencies below 2^b ticks */
			double upper = (double)(1ull << b) / tpn;
			json_array_append_new(
			    h, json_pack("[I,I]", (json_int_t)(upper + 0.5), (json_int_t)c));
		}
		json_object_set_new(e, "latency_log2_ns", h);
		json_object_set_new(o, vdisk_op_name((enum vdisk_op)op), e);
	}
	return o;
}

static void add_layers(json_t *arr, struct vdisk *d, unsigned depth, unsigned flags,
                       struct vd_stats *totals)
{
	json_t *o = json_object();
	json_object_set_new(o, "path", json_string(d->path));
	json_object_set_new(o, "depth", json_integer(depth));
	if (d->id)
		json_object_set_new(o, "id", json_string(d->id));
	add_meta(o, d);
	json_object_set_new(o, "config", json_deep_copy(d->config));
	if (d->drv->inspect)
		d->drv->inspect(d, o);
	if (totals)
		json_object_set_new(o, "stats", stats_json(&totals[d->index]));
	json_array_append_new(arr, o);
	for (unsigned i = 0; i < d->nchildren; i++)
		add_layers(arr, d->children[i], depth + 1, flags, totals);
}

VD_EXPORT char *vdisk_inspect(struct vdisk *d, unsigned flags)
{
	vd_clear_error();
	if (!d) {
		vdisk_set_error("vdisk_inspect: disk is NULL");
		return NULL;
	}
	struct vdisk *root = d->root;
	struct vd_stats *totals = NULL;
	if (flags & VDISK_INSPECT_STATS) {
		totals = aligned_alloc(64, ((root->nnodes * sizeof *totals) + 63) & ~(size_t)63);
		if (!totals) {
			vdisk_set_error("vdisk_inspect: out of memory");
			return NULL;
		}
		memset(totals, 0, root->nnodes * sizeof *totals);
		pthread_mutex_lock(&root->lock);
		for (unsigned i = 0; i < root->nnodes; i++) {
			vd_stats_add(&totals[i], &root->stats_done[i]);
			for (struct vdisk_queue *q = root->queues; q; q = q->next_live)
				vd_stats_add(&totals[i], &q->stats[i]);
		}
		pthread_mutex_unlock(&root->lock);
	}
	json_t *o = json_object();
	add_meta(o, d);
	json_t *layers = json_array();
	add_layers(layers, d, 0, flags, totals);
	json_object_set_new(o, "layers", layers);
	char *s = json_dumps(o, (flags & VDISK_INSPECT_PRETTY ? JSON_INDENT(2) : JSON_COMPACT) |
	                            JSON_PRESERVE_ORDER);
	json_decref(o);
	free(totals);
	if (!s)
		vdisk_set_error("vdisk_inspect: out of memory");
	return s;
}
