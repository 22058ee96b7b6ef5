/* fault: error injection over the disk below, for showing that errors are
 * never swallowed by the layers above.
 *
 * A rule names an operation, a trigger and an effect:
 *   op       read | write | fua-write | flush | unmap | write-zeroes | any
 *            ("write" is every write, "fua-write" only those with FUA)
 *   trigger  nth (the Nth matching request), every (each Nth), after-flushes
 *            (only once N flushes went through this layer), probability with
 *            seed, offset/length (a byte range the request must overlap); all
 *            that are given must hold; none means every matching request
 *   effect   "error" (default): fail with error (kind) + errno (+ medium
 *            detail), without passing the request down, or after passing it
 *            down with "performed": true; "short": pass down only the first
 *            short-sectors sectors (default half), poison the rest of a read
 *            buffer, and fail; "lost": acknowledge without doing it
 *   once     disarm after firing; sticky: once fired, fail every later
 *            matching request whatever the trigger (a dead sector)
 * Extents and eject pass down untouched by rules.  Rules are armed,
 * disarmed, added, removed and listed at run time with vdisk_ctl.  Every rule counts each request it matches; the first rule that
 * fires decides the request's fate.
 *
 * With no armed rule a request costs one atomic load and a forward; rules are
 * evaluated under a mutex (their counters are shared by every queue). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk/backend.h"

#define FAULT_IOV 16

enum { F_READ, F_WRITE, F_FUA_WRITE, F_FLUSH, F_UNMAP, F_WRITE_ZEROES, F_ANY, F_NOPS };
static const char *const op_names[F_NOPS] = {"read",  "write",        "fua-write", "flush",
                                             "unmap", "write-zeroes", "any"};

enum { E_ERROR, E_SHORT, E_LOST };
static const char *const effect_names[] = {"error", "short", "lost"};

struct rule {
	char *id;
	json_t *spec; /* as given, for "list" */
	uint8_t op;
	uint8_t effect;
	bool armed, sticky, once, performed;
	bool has_range, has_prob, has_short;
	uint64_t nth, every, after_flushes;
	double probability;
	uint64_t seed, rng;
	uint64_t offset, length; /* bytes; length UINT64_MAX = to the end */
	uint64_t short_sectors;
	vdisk_status st;
	bool st_medium_default; /* medium detail chosen per request */
	/* state, reset when armed */
	uint64_t seen, hits, flush_base;
	bool fired;
};

struct fault {
	struct vdisk *inner;
	unsigned shift;
	pthread_mutex_t lock;
	struct rule *rules;
	unsigned n, cap;
	atomic_uint narmed;
	_Atomic uint64_t flushes;
};

enum { M_PASS, M_PERFORMED, M_SHORT };

struct fault_ctx {
	vdisk_status st;
	uint8_t mode;
	struct iovec iov[FAULT_IOV];
};

/* ------------------------------------------------------------------------- */
/* Rules                                                                       */
/* ------------------------------------------------------------------------- */

static const struct {
	const char *name;
	enum vdisk_error kind;
} error_kinds[] = {
    {"io", VDISK_ERR_IO},
    {"medium", VDISK_ERR_MEDIUM},
    {"illegal-block", VDISK_ERR_ILLEGAL_BLOCK},
    {"invalid-input", VDISK_ERR_INVALID_INPUT},
    {"memory-access", VDISK_ERR_MEMORY_ACCESS},
    {"read-only", VDISK_ERR_READ_ONLY},
    {"reservation-conflict", VDISK_ERR_RESERVATION_CONFLICT},
    {"aborted-preempt", VDISK_ERR_ABORTED_PREEMPT},
    {"not-supported", VDISK_ERR_NOT_SUPPORTED},
};

static const struct {
	const char *name;
	enum vdisk_medium m;
} medium_kinds[] = {
    {"unrecovered-read", VDISK_MEDIUM_UNRECOVERED_READ},
    {"write-fault", VDISK_MEDIUM_WRITE_FAULT},
    {"guard-check", VDISK_MEDIUM_GUARD_CHECK},
    {"app-tag-check", VDISK_MEDIUM_APP_TAG_CHECK},
    {"ref-tag-check", VDISK_MEDIUM_REF_TAG_CHECK},
};

static int lookup(const char *const *names, int n, const char *s)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

/* errno from a number or a name ("EIO", "ENOSPC"). */
static int parse_errno(json_t *v, const char *where, int *out)
{
	if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < 4096) {
		*out = (int)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		for (int e = 1; e < 4096; e++) {
			const char *n = strerrorname_np(e);
			if (n && strcmp(n, s) == 0) {
				*out = e;
				return 0;
			}
		}
	}
	return vdisk_set_error("%s.errno: expected an errno number or name such as \"EIO\"", where);
}

static void rule_free(struct rule *r)
{
	free(r->id);
	json_decref(r->spec);
}

static void rule_reset(struct rule *r, uint64_t flushes)
{
	r->seen = 0;
	r->fired = false;
	r->flush_base = flushes;
	r->rng = r->seed ? r->seed : 0x9E3779B97F4A7C15ull;
}

static int parse_rule(json_t *o, const char *where, struct rule *r)
{
	static const char *const keys[] = {
	    "id",          "op",        "nth",           "every",  "after-flushes",
	    "probability", "seed",      "offset",        "length", "armed",
	    "effect",      "error",     "errno",         "medium", "sticky",
	    "once",        "performed", "short-sectors", NULL};
	const char *s;
	int rc;
	memset(r, 0, sizeof *r);
	if (!json_is_object(o))
		return vdisk_set_error(
		    "%s: expected an object such as {\"op\":\"write\",\"nth\":3}", where);
	if (vdisk_cfg_check(o, keys) < 0)
		goto located;
	if ((rc = vdisk_cfg_string(o, "id", &s)) < 0)
		goto located;
	if (rc && !(r->id = strdup(s)))
		return vdisk_set_error_errno(ENOMEM, "%s", where);

	if ((rc = vdisk_cfg_string(o, "op", &s)) < 0)
		goto located;
	if (!rc) {
		vdisk_set_error(
		    "op: required (read, write, fua-write, flush, unmap, write-zeroes, any)");
		goto located;
	}
	int op = lookup(op_names, F_NOPS, s);
	if (op < 0) {
		vdisk_set_error("op: '%s' is not one of read, write, fua-write, flush, unmap, "
		                "write-zeroes, any",
		                s);
		goto located;
	}
	r->op = (uint8_t)op;

	if (vdisk_cfg_uint(o, "nth", &r->nth) < 0 || vdisk_cfg_uint(o, "every", &r->every) < 0 ||
	    vdisk_cfg_uint(o, "after-flushes", &r->after_flushes) < 0 ||
	    vdisk_cfg_uint(o, "seed", &r->seed) < 0)
		goto located;
	json_t *p = json_object_get(o, "probability");
	if (p) {
		if (!json_is_number(p) ||
		    !(json_number_value(p) >= 0.0 && json_number_value(p) <= 1.0)) {
			vdisk_set_error("probability: expected a number from 0 to 1");
			goto located;
		}
		r->has_prob = true;
		r->probability = json_number_value(p);
	} else if (json_object_get(o, "seed")) {
		vdisk_set_error("seed: only meaningful with probability");
		goto located;
	}
	int ho = vdisk_cfg_size(o, "offset", &r->offset);
	int hl = ho < 0 ? -1 : vdisk_cfg_size(o, "length", &r->length);
	if (ho < 0 || hl < 0)
		goto located;
	if (hl && r->length == 0) {
		vdisk_set_error("length: must not be 0");
		goto located;
	}
	r->has_range = ho || hl;
	if (!hl)
		r->length = UINT64_MAX;

	r->armed = true;
	if (vdisk_cfg_bool(o, "armed", &r->armed) < 0 ||
	    vdisk_cfg_bool(o, "sticky", &r->sticky) < 0 ||
	    vdisk_cfg_bool(o, "once", &r->once) < 0 ||
	    vdisk_cfg_bool(o, "performed", &r->performed) < 0)
		goto located;
	if (r->sticky && r->once) {
		vdisk_set_error("sticky, once: a rule is one or the other");
		goto located;
	}

	r->effect = E_ERROR;
	if ((rc = vdisk_cfg_string(o, "effect", &s)) < 0)
		goto located;
	if (rc) {
		int e = lookup(effect_names, 3, s);
		if (e < 0) {
			vdisk_set_error("effect: '%s' is not one of error, short, lost", s);
			goto located;
		}
		r->effect = (uint8_t)e;
	}
	if (r->effect == E_LOST && r->op == F_READ) {
		vdisk_set_error("effect: a read cannot be lost (lost applies to writes, "
		                "write-zeroes, unmap and flush)");
		goto located;
	}
	if (r->effect == E_SHORT && r->op != F_READ && r->op != F_WRITE && r->op != F_FUA_WRITE &&
	    r->op != F_ANY) {
		vdisk_set_error("effect: a short transfer applies to reads and writes only");
		goto located;
	}
	if ((rc = vdisk_cfg_uint(o, "short-sectors", &r->short_sectors)) < 0)
		goto located;
	r->has_short = rc;
	if (rc && r->effect != E_SHORT) {
		vdisk_set_error("short-sectors: only meaningful with \"effect\":\"short\"");
		goto located;
	}
	if (r->performed && r->effect != E_ERROR) {
		vdisk_set_error("performed: only meaningful with \"effect\":\"error\"");
		goto located;
	}

	enum vdisk_error kind = VDISK_ERR_IO;
	if ((rc = vdisk_cfg_string(o, "error", &s)) < 0)
		goto located;
	if (rc) {
		size_t i;
		for (i = 0; i < sizeof error_kinds / sizeof *error_kinds; i++)
			if (strcmp(error_kinds[i].name, s) == 0)
				break;
		if (i == sizeof error_kinds / sizeof *error_kinds) {
			vdisk_set_error(
			    "error: '%s' is not one of io, medium, illegal-block, "
			    "invalid-input, memory-access, read-only, reservation-conflict, "
			    "aborted-preempt, not-supported",
			    s);
			goto located;
		}
		kind = error_kinds[i].kind;
	}
	if (r->effect == E_LOST && json_object_get(o, "error")) {
		vdisk_set_error("error: a lost write reports success");
		goto located;
	}
	int errnum = kind == VDISK_ERR_IO || kind == VDISK_ERR_MEDIUM ? EIO : 0;
	json_t *ev = json_object_get(o, "errno");
	if (ev && parse_errno(ev, where, &errnum) < 0) {
		free(r->id);
		r->id = NULL;
		return -1;
	}
	enum vdisk_medium med = VDISK_MEDIUM_NONE;
	if ((rc = vdisk_cfg_string(o, "medium", &s)) < 0)
		goto located;
	if (rc) {
		size_t i;
		if (kind != VDISK_ERR_MEDIUM) {
			vdisk_set_error("medium: only meaningful with \"error\":\"medium\"");
			goto located;
		}
		for (i = 0; i < sizeof medium_kinds / sizeof *medium_kinds; i++)
			if (strcmp(medium_kinds[i].name, s) == 0)
				break;
		if (i == sizeof medium_kinds / sizeof *medium_kinds) {
			vdisk_set_error("medium: '%s' is not one of unrecovered-read, write-fault, "
			                "guard-check, app-tag-check, ref-tag-check",
			                s);
			goto located;
		}
		med = medium_kinds[i].m;
	}
	r->st = vdisk_status_make(kind, errnum);
	r->st.medium = (uint8_t)med;
	r->st_medium_default = kind == VDISK_ERR_MEDIUM && med == VDISK_MEDIUM_NONE;
	r->spec = json_deep_copy(o);
	if (!r->spec)
		return vdisk_set_error_errno(ENOMEM, "%s", where);
	return 0;

located:;
	/* prefix the rule's place: "rules[2].op: ..." */
	char msg[1024];
	snprintf(msg, sizeof msg, "%s", vdisk_errmsg());
	free(r->id);
	r->id = NULL;
	return vdisk_set_error("%s.%s", where, msg);
}

static int rules_append(struct fault *f, struct rule *r)
{
	if (f->n == f->cap) {
		unsigned cap = f->cap ? f->cap * 2 : 4;
		struct rule *nr = realloc(f->rules, cap * sizeof *nr);
		if (!nr)
			return vdisk_set_error_errno(ENOMEM, "rules");
		f->rules = nr;
		f->cap = cap;
	}
	rule_reset(r, atomic_load(&f->flushes));
	f->rules[f->n++] = *r;
	if (r->armed)
		atomic_fetch_add(&f->narmed, 1);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Open, close                                                                 */
/* ------------------------------------------------------------------------- */

static void fault_free(struct fault *f)
{
	for (unsigned i = 0; i < f->n; i++)
		rule_free(&f->rules[i]);
	free(f->rules);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static int fault_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner", "rules", NULL};
	if (vdisk_cfg_check(cfg, keys) < 0)
		return -1;
	json_t *rules = json_object_get(cfg, "rules");
	if (rules && !json_is_array(rules))
		return vdisk_set_error("rules: expected an array of rule objects");
	struct fault *f = calloc(1, sizeof *f);
	if (!f)
		return vdisk_set_error_errno(ENOMEM, "fault");
	pthread_mutex_init(&f->lock, NULL);
	size_t i;
	json_t *o;
	json_array_foreach (rules, i, o) {
		char where[32];
		struct rule r;
		snprintf(where, sizeof where, "rules[%zu]", i);
		if (parse_rule(o, where, &r) < 0)
			goto fail;
		if (rules_append(f, &r) < 0) {
			rule_free(&r);
			goto fail;
		}
	}
	f->inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!f->inner)
		goto fail;
	vdisk_set_priv(d, f);
	vdisk_meta(d)->req_ctx_size = sizeof(struct fault_ctx);
	vdisk_meta_inherit(d, f->inner);
	f->shift = (unsigned)__builtin_ctz(vdisk_meta(d)->sector_size);
	return 0;
fail:
	fault_free(f);
	return -1;
}

static void fault_close(struct vdisk *d)
{
	fault_free(vdisk_priv(d));
}

/* ------------------------------------------------------------------------- */
/* The data path                                                               */
/* ------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic per rule, good enough for a coin */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static bool op_matches(const struct rule *ru, const struct vdisk_req *r)
{
	switch (ru->op) {
	case F_READ: return r->op == VDISK_OP_READ;
	case F_WRITE: return r->op == VDISK_OP_WRITE;
	case F_FUA_WRITE: return r->op == VDISK_OP_WRITE && (r->flags & VDISK_IO_FUA);
	case F_FLUSH: return r->op == VDISK_OP_FLUSH;
	case F_UNMAP: return r->op == VDISK_OP_UNMAP;
	case F_WRITE_ZEROES: return r->op == VDISK_OP_WRITE_ZEROES;
	default:
		return r->op == VDISK_OP_READ || r->op == VDISK_OP_WRITE ||
		       r->op == VDISK_OP_FLUSH || r->op == VDISK_OP_UNMAP ||
		       r->op == VDISK_OP_WRITE_ZEROES;
	}
}

static bool range_matches(const struct rule *ru, const struct vdisk_req *r, unsigned shift)
{
	if (!ru->has_range)
		return true;
	if (r->op == VDISK_OP_FLUSH)
		return false;
	/* the core guarantees these products fit in int64 */
	uint64_t start = r->sector << shift, end = (r->sector + r->count) << shift;
	uint64_t rend = ru->length > UINT64_MAX - ru->offset ? UINT64_MAX : ru->offset + ru->length;
	if (start == end) /* a zero-length request touches its start */
		return start >= ru->offset && start < rend;
	return start < rend && ru->offset < end;
}

/* The first armed rule that fires for r, or NULL.  Every armed rule counts
 * every request it matches, so that "nth" means the same whatever the other
 * rules do; only the first that fires acts (and is counted as a hit).  Under
 * f->lock. */
static struct rule *evaluate(struct fault *f, struct vdisk_req *r)
{
	uint64_t flushes = atomic_load_explicit(&f->flushes, memory_order_relaxed);
	struct rule *win = NULL;
	for (unsigned i = 0; i < f->n; i++) {
		struct rule *ru = &f->rules[i];
		if (!ru->armed || !op_matches(ru, r) || !range_matches(ru, r, f->shift))
			continue;
		bool fires = ru->sticky && ru->fired;
		if (!fires) {
			if (ru->after_flushes && flushes - ru->flush_base < ru->after_flushes)
				continue;
			uint64_t n = ++ru->seen;
			fires = (!ru->nth || n == ru->nth) && (!ru->every || n % ru->every == 0);
			if (ru->has_prob &&
			    (double)(rng_next(&ru->rng) >> 11) * 0x1p-53 >= ru->probability)
				fires = false;
		}
		if (fires && !win)
			win = ru;
	}
	if (win) {
		win->hits++;
		win->fired = true;
		if (win->once) {
			win->armed = false;
			atomic_fetch_sub(&f->narmed, 1);
		}
	}
	return win;
}

static void fault_child_done(struct vdisk_req *c, vdisk_status st)
{
	struct vdisk_req *r = c->opaque;
	struct fault_ctx *x = vdisk_req_ctx(r);
	/* an error from below always wins: it is never replaced by success */
	if (vdisk_ok(st) && x->mode != M_PASS)
		st = x->st;
	vdisk_req_complete(r, st);
}

static int forward(struct vdisk_req *r, struct fault *f, uint8_t mode, vdisk_status st,
                   uint64_t sectors)
{
	struct fault_ctx *x = vdisk_req_ctx(r);
	struct vdisk_req *c = vdisk_req_alloc(r, f->inner);
	if (!c)
		return -ENOMEM;
	x->mode = mode;
	x->st = st;
	if (mode == M_SHORT) {
		size_t len = (size_t)(sectors << f->shift);
		int n = vdisk_iov_slice(r->iov, r->iovcnt, 0, len, x->iov, FAULT_IOV);
		if (n < 0) {
			/* too many pieces for the slice: transfer what the first ones
			 * hold, in whole sectors; still short */
			size_t have = 0;
			for (int i = 0; i < r->iovcnt && i < FAULT_IOV; i++)
				have += r->iov[i].iov_len;
			len = have >> f->shift << f->shift;
			n = vdisk_iov_slice(r->iov, r->iovcnt, 0, len, x->iov, FAULT_IOV);
		}
		if (r->op == VDISK_OP_READ)
			vdisk_iov_memset(r->iov, r->iovcnt, len, 0xCC, r->len - len);
		vdisk_req_prep_rw(c, (enum vdisk_op)r->op, r->sector, x->iov, n, r->flags);
	} else if (r->op == VDISK_OP_READ || r->op == VDISK_OP_WRITE) {
		vdisk_req_prep_rw(c, (enum vdisk_op)r->op, r->sector, r->iov, r->iovcnt, r->flags);
	} else if (r->op == VDISK_OP_FLUSH) {
		vdisk_req_prep_flush(c);
	} else if (r->op == VDISK_OP_EXTENTS) {
		vdisk_req_prep_extents(c, r->sector, r->count, r->ext, r->ext_max, r->ext_n);
	} else {
		vdisk_req_prep_range(c, (enum vdisk_op)r->op, r->sector, r->count, r->flags);
	}
	c->done = fault_child_done;
	c->opaque = r;
	return vdisk_req_submit(c);
}

static int fault_submit(struct vdisk_req *r)
{
	struct fault *f = vdisk_priv(r->disk);
	if (r->op == VDISK_OP_FLUSH)
		atomic_fetch_add_explicit(&f->flushes, 1, memory_order_relaxed);
	if (__builtin_expect(atomic_load_explicit(&f->narmed, memory_order_relaxed) == 0, 1))
		return vdisk_req_forward(r, f->inner);

	pthread_mutex_lock(&f->lock);
	struct rule *ru = evaluate(f, r);
	uint8_t effect = ru ? ru->effect : E_ERROR;
	vdisk_status st = ru ? ru->st : vdisk_status_ok();
	bool performed = ru && ru->performed;
	uint64_t short_sectors = ru && ru->has_short ? ru->short_sectors : r->count / 2;
	if (ru && ru->st_medium_default)
		st.medium = r->op == VDISK_OP_READ ? VDISK_MEDIUM_UNRECOVERED_READ
		                                   : VDISK_MEDIUM_WRITE_FAULT;
	pthread_mutex_unlock(&f->lock);

	if (!ru)
		return vdisk_req_forward(r, f->inner);
	if (effect == E_LOST && r->op != VDISK_OP_READ) {
		vdisk_req_complete(r, vdisk_status_ok());
		return 0;
	}
	if (effect == E_SHORT && (r->op == VDISK_OP_READ || r->op == VDISK_OP_WRITE) && r->count) {
		if (short_sectors >= r->count)
			short_sectors = r->count - 1;
		if (st.kind == VDISK_OK)
			st = vdisk_status_io(EIO);
		if (short_sectors == 0) {
			if (r->op == VDISK_OP_READ)
				vdisk_iov_memset(r->iov, r->iovcnt, 0, 0xCC, r->len);
			vdisk_req_complete(r, st);
			return 0;
		}
		return forward(r, f, M_SHORT, st, short_sectors);
	}
	if (performed)
		return forward(r, f, M_PERFORMED, st, 0);
	vdisk_req_complete(r, st);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Control                                                                     */
/* ------------------------------------------------------------------------- */

/* The rule named by args {"rule": index or id}; -2 for "every rule" (no
 * "rule" key); -1 after an error.  Under f->lock. */
static int find_rule(struct fault *f, json_t *args, bool all_ok)
{
	json_t *v = json_is_object(args) ? json_object_get(args, "rule") : NULL;
	if (!v) {
		if (all_ok)
			return -2;
		return vdisk_set_error("rule: required (an index or an id)");
	}
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);
		if (i < 0 || (unsigned long long)i >= f->n)
			return vdisk_set_error(
			    "rule: no rule %" JSON_INTEGER_FORMAT " (there are %u)", i, f->n);
		return (int)i;
	}
	if (json_is_string(v)) {
		for (unsigned i = 0; i < f->n; i++)
			if (f->rules[i].id && strcmp(f->rules[i].id, json_string_value(v)) == 0)
				return (int)i;
		return vdisk_set_error("rule: no rule has id '%s'", json_string_value(v));
	}
	return vdisk_set_error("rule: expected an index or an id");
}

static json_t *rule_json(struct rule *r, unsigned i)
{
	json_t *o = json_object();
	json_object_set_new(o, "index", json_integer(i));
	if (r->id)
		json_object_set_new(o, "id", json_string(r->id));
	json_object_set_new(o, "armed", json_boolean(r->armed));
	json_object_set_new(o, "seen", json_integer((json_int_t)r->seen));
	json_object_set_new(o, "hits", json_integer((json_int_t)r->hits));
	json_object_set_new(o, "rule", json_deep_copy(r->spec));
	return o;
}

static json_t *list_json(struct fault *f)
{
	json_t *o = json_object(), *a = json_array();
	for (unsigned i = 0; i < f->n; i++)
		json_array_append_new(a, rule_json(&f->rules[i], i));
	json_object_set_new(o, "rules", a);
	json_object_set_new(o, "flushes", json_integer((json_int_t)atomic_load(&f->flushes)));
	return o;
}

static void set_armed(struct fault *f, struct rule *r, bool armed)
{
	if (armed) {
		/* arming starts the rule's counting afresh */
		rule_reset(r, atomic_load(&f->flushes));
		if (!r->armed)
			atomic_fetch_add(&f->narmed, 1);
	} else if (r->armed) {
		atomic_fetch_sub(&f->narmed, 1);
	}
	r->armed = armed;
}

static int fault_ctl(struct vdisk *d, const char *op, json_t *args, json_t **result)
{
	struct fault *f = vdisk_priv(d);
	int rc = 0;
	pthread_mutex_lock(&f->lock);
	if (strcmp(op, "list") == 0) {
		*result = list_json(f);
	} else if (strcmp(op, "arm") == 0 || strcmp(op, "disarm") == 0) {
		bool arm = op[0] == 'a';
		int i = find_rule(f, args, true);
		if (i == -1) {
			rc = -1;
		} else {
			for (unsigned k = 0; k < f->n; k++)
				if (i == -2 || (int)k == i)
					set_armed(f, &f->rules[k], arm);
			*result = list_json(f);
		}
	} else if (strcmp(op, "add") == 0) {
		struct rule r;
		if (parse_rule(args, "rule", &r) < 0) {
			rc = -1;
		} else if (rules_append(f, &r) < 0) {
			rule_free(&r);
			rc = -1;
		} else {
			*result = json_pack("{s:I}", "index", (json_int_t)(f->n - 1));
		}
	} else if (strcmp(op, "remove") == 0 || strcmp(op, "clear") == 0) {
		int i = op[0] == 'c' ? -2 : find_rule(f, args, false);
		if (i == -1) {
			rc = -1;
		} else {
			unsigned k = 0;
			for (unsigned j = 0; j < f->n; j++) {
				if (i == -2 || (int)j == i) {
					set_armed(f, &f->rules[j], false);
					rule_free(&f->rules[j]);
				} else {
					f->rules[k++] = f->rules[j];
				}
			}
			f->n = k;
			*result = list_json(f);
		}
	} else {
		rc = vdisk_set_error(
		    "unknown operation (known: list, arm, disarm, add, remove, clear)");
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static int fault_inspect(struct vdisk *d, json_t *obj)
{
	struct fault *f = vdisk_priv(d);
	pthread_mutex_lock(&f->lock);
	json_object_set_new(obj, "faults", list_json(f));
	pthread_mutex_unlock(&f->lock);
	return 0;
}

const struct vdisk_driver vdisk_driver_fault = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "fault",
    .description = "error injection by rules: errors, short transfers, lost writes (inner, "
                   "rules)",
    .open = fault_open,
    .close = fault_close,
    .read = fault_submit,
    .write = fault_submit,
    .flush = fault_submit,
    .unmap = fault_submit,
    .write_zeroes = fault_submit,
    .extents = fault_submit,
    .eject = fault_submit,
    .inspect = fault_inspect,
    .ctl = fault_ctl,
};
