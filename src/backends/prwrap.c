/* prwrap: persistent reservations (the SCSI SPC-4 / NVMe model) over any disk.
 *
 * Every prwrap layer is an initiator, named by its host-id.  Layers opened
 * with the same "domain" in one process share one reservation state, so two
 * virtual machines in one process can cluster over shared storage; without a
 * domain the state is the layer's own.  Registrations are per host: two layers
 * with the same host-id are one initiator (as NVMe controllers of one host).
 *
 * The model (SPC-4 5.12, which NVMe follows):
 *  - register: with the current key (0 when unregistered) or ignoring it; a
 *    new key of 0 unregisters; the holder unregistering releases a
 *    reservation of a single-holder type; an all-registrants reservation ends
 *    with its last registrant;
 *  - reserve: only a registrant with its key; the holder may repeat it with
 *    the same type; anything else against an existing reservation conflicts;
 *  - release: by a non-holder succeeds and does nothing; by the holder with
 *    another type is invalid; for the all-registrants types every registrant
 *    is a holder;
 *  - clear: drops every registration and the reservation;
 *  - preempt (and abort): the preempt key names registrants to remove (never
 *    the initiator issuing it); when it names the holder, or is 0 under an
 *    all-registrants reservation (then every other registrant goes), the
 *    preempting initiator takes the reservation with the new type; a key
 *    matching nobody conflicts; 0 where it names nobody is invalid.  With
 *    abort, I/O in flight from the preempted initiators completes with
 *    aborted-preempt;
 *  - the generation counts register, clear and preempt (not reserve or
 *    release, nor a register that changed nothing), and restarts at 0 at power
 *    on.
 * Reads and writes (flush, unmap and write-zeroes are writes, as in SBC and
 * NVMe, and so is eject, as START STOP UNIT is in SPC-4; extents is a read) that the reservation excludes for this initiator
 * complete with reservation-conflict: write-exclusive lets only the holder
 * write, exclusive-access lets only the holder in at all, and the
 * registrants-only and all-registrants types extend that to every registrant.
 *
 * Persist through power loss: with a state-file, a registration made with
 * VDISK_PR_SET_PTPL makes the registrations and the reservation survive the
 * last close of the domain and are reloaded at the next open.  The file is
 * replaced atomically on every change (a temporary is written, fsynced and
 * renamed, and the directory fsynced) before the change takes effect; if that
 * fails the call fails with an I/O error and nothing changes.
 *
 * The I/O path reads one atomic per request (this initiator's access, set
 * under the domain's lock whenever the state changes), so reservations cost
 * nothing while nobody holds one. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk/backend.h"

#define ACC_READ 1u
#define ACC_WRITE 2u
#define ALL_TYPES 0x7Eu /* bits 1..6 */
#define STATE_MAX (1u << 20)

struct pr_reg {
	uint8_t host[16];
	uint8_t host_len;
	uint16_t ctrl;
	uint64_t key;
};

struct pr_state {
	uint32_t generation;
	uint8_t type; /* enum vdisk_pr_type */
	bool ptpl;
	/* the holder of a single-holder reservation */
	uint8_t holder[16];
	uint8_t holder_len;
	unsigned n;
	struct pr_reg *regs;
};

struct prw;

struct pr_domain {
	char *name;       /* NULL: private to one layer */
	char *state_file; /* NULL: nothing persists */
	unsigned refs;
	pthread_mutex_t lock;
	struct pr_state st;
	struct prw *inits;
	uint16_t next_ctrl;
	struct pr_domain *next;
};

struct prw {
	struct vdisk *inner;
	struct pr_domain *dom;
	uint8_t host[16];
	uint8_t host_len;
	uint16_t ctrl;
	_Atomic uint8_t access;
	atomic_uint abort_epoch;
	struct prw *next;
};

struct prw_ctx {
	unsigned epoch;
};

static pthread_mutex_t domains_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pr_domain *domains;

static const char *const type_names[] = {
    "none",
    "write-exclusive",
    "exclusive-access",
    "write-exclusive-registrants-only",
    "exclusive-access-registrants-only",
    "write-exclusive-all-registrants",
    "exclusive-access-all-registrants",
};

static vdisk_status ok(void)
{
	return vdisk_status_ok();
}
static vdisk_status conflict(void)
{
	return vdisk_status_make(VDISK_ERR_RESERVATION_CONFLICT, EBADE);
}
static vdisk_status invalid(void)
{
	return vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL);
}

static bool all_registrants(uint8_t type)
{
	return type == VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS ||
	       type == VDISK_PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

static bool same_host(const uint8_t *a, uint8_t alen, const uint8_t *b, uint8_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

static int find_reg(const struct pr_state *st, const uint8_t *host, uint8_t len)
{
	for (unsigned i = 0; i < st->n; i++)
		if (same_host(st->regs[i].host, st->regs[i].host_len, host, len))
			return (int)i;
	return -1;
}

static bool is_holder(const struct pr_state *st, const uint8_t *host, uint8_t len)
{
	if (st->type == VDISK_PR_NONE)
		return false;
	if (all_registrants(st->type))
		return find_reg(st, host, len) >= 0;
	return same_host(st->holder, st->holder_len, host, len);
}

/* What the reservation lets an initiator do (SPC-4 table of commands allowed
 * in the presence of reservations, SBC / NVMe command groups). */
static uint8_t access_for(const struct pr_state *st, const uint8_t *host, uint8_t len)
{
	if (st->type == VDISK_PR_NONE)
		return ACC_READ | ACC_WRITE;
	bool reg = find_reg(st, host, len) >= 0;
	bool holder = is_holder(st, host, len);
	switch (st->type) {
	case VDISK_PR_WRITE_EXCLUSIVE: return holder ? ACC_READ | ACC_WRITE : ACC_READ;
	case VDISK_PR_EXCLUSIVE_ACCESS: return holder ? ACC_READ | ACC_WRITE : 0;
	case VDISK_PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY:
	case VDISK_PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS: return reg ? ACC_READ | ACC_WRITE : ACC_READ;
	default: return reg ? ACC_READ | ACC_WRITE : 0;
	}
}

/* ------------------------------------------------------------------------- */
/* State: copies, edits, the state file                                        */
/* ------------------------------------------------------------------------- */

static void state_free(struct pr_state *st)
{
	free(st->regs);
	st->regs = NULL;
	st->n = 0;
}

static int state_copy(struct pr_state *dst, const struct pr_state *src)
{
	*dst = *src;
	dst->regs = NULL;
	if (src->n) {
		dst->regs = malloc(src->n * sizeof *dst->regs);
		if (!dst->regs)
			return -1;
		memcpy(dst->regs, src->regs, src->n * sizeof *dst->regs);
	}
	return 0;
}

/* Registrants a domain keeps (SPC-4's "insufficient registration resources"
 * past it): bounds the linear look-ups and what a state file can make us load. */
enum { PR_MAX_REGISTRANTS = 4096 };

/* Returns 0, or -1 with errno ENOSPC (the domain is full) or ENOMEM. */
static int state_add(struct pr_state *st, const uint8_t *host, uint8_t len, uint16_t ctrl,
                     uint64_t key)
{
	if (st->n >= PR_MAX_REGISTRANTS) {
		errno = ENOSPC;
		return -1;
	}
	struct pr_reg *r = realloc(st->regs, (st->n + 1) * sizeof *r);
	if (!r) {
		errno = ENOMEM;
		return -1;
	}
	st->regs = r;
	memset(&r[st->n], 0, sizeof *r);
	memcpy(r[st->n].host, host, len);
	r[st->n].host_len = len;
	r[st->n].ctrl = ctrl;
	r[st->n].key = key;
	st->n++;
	return 0;
}

static void release(struct pr_state *st)
{
	st->type = VDISK_PR_NONE;
	st->holder_len = 0;
	memset(st->holder, 0, sizeof st->holder);
}

/* Remove registrant i, with what that does to the reservation. */
static void state_remove(struct pr_state *st, unsigned i)
{
	struct pr_reg gone = st->regs[i];
	memmove(&st->regs[i], &st->regs[i + 1], (st->n - i - 1) * sizeof *st->regs);
	st->n--;
	if (st->type == VDISK_PR_NONE)
		return;
	if (all_registrants(st->type)) {
		if (st->n == 0)
			release(st);
	} else if (same_host(st->holder, st->holder_len, gone.host, gone.host_len)) {
		release(st);
	}
}

static void hex(char *out, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* A host id: 8 or 16 bytes in hex. */
static int parse_hex(const char *s, uint8_t *out, uint8_t *len)
{
	size_t n = strlen(s);
	if ((n != 16 && n != 32) || vdisk_parse_hex(s, out, n / 2) < 0)
		return -1;
	*len = (uint8_t)(n / 2);
	return 0;
}

static json_t *state_json(const struct pr_state *st)
{
	json_t *o = json_object(), *a = json_array();
	char h[33], k[24];
	json_object_set_new(o, "format", json_string("vdisk-prwrap"));
	json_object_set_new(o, "version", json_integer(1));
	json_object_set_new(o, "ptpl", json_boolean(st->ptpl));
	json_object_set_new(o, "type", json_string(type_names[st->type]));
	if (st->type != VDISK_PR_NONE && !all_registrants(st->type)) {
		hex(h, st->holder, st->holder_len);
		json_object_set_new(o, "holder", json_string(h));
	}
	for (unsigned i = 0; i < st->n; i++) {
		hex(h, st->regs[i].host, st->regs[i].host_len);
		snprintf(k, sizeof k, "0x%016" PRIx64, st->regs[i].key);
		json_array_append_new(a, json_pack("{s:s,s:s}", "host-id", h, "key", k));
	}
	json_object_set_new(o, "registrants", a);
	return o;
}

/* Replace the state file atomically: temporary, fsync, rename, fsync dir. */
static int state_save(const char *path, const struct pr_state *st)
{
	int rc = -1, fd = -1;
	char *tmp = NULL, *text = NULL, *dir = NULL;
	json_t *o = state_json(st);
	text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (!text || asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		errno = ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto out;
	size_t len = strlen(text), done = 0;
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out_unlink;
		done += (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto out_unlink;
	dir = strdup(path);
	if (dir) {
		int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	rc = 0;
	goto out;
out_unlink:;
	int e = errno;
	if (fd >= 0)
		close(fd);
	fd = -1;
	unlink(tmp);
	errno = e;
out:
	if (fd >= 0)
		close(fd);
	free(text);
	free(tmp);
	free(dir);
	return rc;
}

/* Load a state file at power on.  Absent: an empty state.  The generation
 * restarts at 0; without PTPL nothing but the flag is kept. */
static int state_load(const char *path, struct pr_state *st, uint16_t *next_ctrl)
{
	json_error_t err;
	memset(st, 0, sizeof *st);
	struct stat sb;
	if (stat(path, &sb) < 0) {
		if (errno == ENOENT)
			return 0;
		return vdisk_set_error_errno(errno, "state-file '%s'", path);
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size > STATE_MAX)
		return vdisk_set_error("state-file '%s': not a regular file of at most 1 MiB",
		                       path);
	json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	if (!o)
		return vdisk_set_error("state-file '%s': line %d: %s", path, err.line, err.text);
	const char *fmt = json_string_value(json_object_get(o, "format"));
	json_t *ver = json_object_get(o, "version"), *ptpl = json_object_get(o, "ptpl");
	const char *type = json_string_value(json_object_get(o, "type"));
	json_t *regs = json_object_get(o, "registrants");
	const char *holder = json_string_value(json_object_get(o, "holder"));
	int t = -1;
	for (int i = 0; type && i < 7; i++)
		if (strcmp(type, type_names[i]) == 0)
			t = i;
	if (!fmt || strcmp(fmt, "vdisk-prwrap") != 0) {
		vdisk_set_error("state-file '%s': format: not a vdisk-prwrap state file", path);
		goto fail;
	}
	if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
		vdisk_set_error("state-file '%s': version: only version 1 is known", path);
		goto fail;
	}
	if (!json_is_boolean(ptpl)) {
		vdisk_set_error("state-file '%s': ptpl: expected a boolean", path);
		goto fail;
	}
	if (t < 0) {
		vdisk_set_error(
		    "state-file '%s': type: expected a reservation type name or \"none\"", path);
		goto fail;
	}
	if (!json_is_array(regs)) {
		vdisk_set_error("state-file '%s': registrants: expected an array", path);
		goto fail;
	}
	if (json_array_size(regs) > PR_MAX_REGISTRANTS) {
		vdisk_set_error("state-file '%s': registrants: %zu of them, more than the %d a "
		                "domain keeps",
		                path, json_array_size(regs), PR_MAX_REGISTRANTS);
		goto fail;
	}
	st->ptpl = json_is_true(ptpl);
	if (!st->ptpl) {
		json_decref(o);
		return 0;
	}
	size_t i;
	json_t *r;
	json_array_foreach (regs, i, r) {
		const char *h = json_string_value(json_object_get(r, "host-id"));
		const char *k = json_string_value(json_object_get(r, "key"));
		uint8_t host[16], len;
		char *end;
		if (!h || parse_hex(h, host, &len) < 0) {
			vdisk_set_error(
			    "state-file '%s': registrants[%zu].host-id: expected 16 or 32 hex "
			    "digits",
			    path, i);
			goto fail;
		}
		/* strtoull alone would take " 1", "+1" and "-1" (as 2^64 - 1) */
		errno = 0;
		uint64_t key = k && isdigit((unsigned char)k[0]) ? strtoull(k, &end, 0) : 0;
		if (!key || errno || *end) {
			vdisk_set_error(
			    "state-file '%s': registrants[%zu].key: expected a non-zero key "
			    "such as \"0x1234\"",
			    path, i);
			goto fail;
		}
		if (find_reg(st, host, len) >= 0) {
			vdisk_set_error(
			    "state-file '%s': registrants[%zu]: host-id registered twice", path, i);
			goto fail;
		}
		if (state_add(st, host, len, (*next_ctrl)++, key) < 0) {
			vdisk_set_error_errno(errno, "state-file '%s'", path);
			goto fail;
		}
	}
	st->type = (uint8_t)t;
	if (t != VDISK_PR_NONE) {
		if (st->n == 0) {
			vdisk_set_error("state-file '%s': type: a reservation without registrants",
			                path);
			goto fail;
		}
		if (!all_registrants(st->type)) {
			if (!holder || parse_hex(holder, st->holder, &st->holder_len) < 0 ||
			    find_reg(st, st->holder, st->holder_len) < 0) {
				vdisk_set_error(
				    "state-file '%s': holder: expected the host-id of a registrant",
				    path);
				goto fail;
			}
		}
	}
	json_decref(o);
	return 0;
fail:
	json_decref(o);
	state_free(st);
	return -1;
}

/* ------------------------------------------------------------------------- */
/* Domains                                                                     */
/* ------------------------------------------------------------------------- */

static void update_access(struct pr_domain *dom)
{
	for (struct prw *p = dom->inits; p; p = p->next)
		atomic_store_explicit(&p->access, access_for(&dom->st, p->host, p->host_len),
		                      memory_order_release);
}

static void domain_put(struct pr_domain *dom)
{
	pthread_mutex_lock(&domains_lock);
	if (--dom->refs) {
		pthread_mutex_unlock(&domains_lock);
		return;
	}
	for (struct pr_domain **pp = &domains; *pp; pp = &(*pp)->next)
		if (*pp == dom) {
			*pp = dom->next;
			break;
		}
	pthread_mutex_unlock(&domains_lock);
	state_free(&dom->st);
	pthread_mutex_destroy(&dom->lock);
	free(dom->name);
	free(dom->state_file);
	free(dom);
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The domain called name (created, with its state loaded, if it is not open);
 * NULL name: a new private one. */
static struct pr_domain *domain_get(const char *name, const char *state_file)
{
	pthread_mutex_lock(&domains_lock);
	for (struct pr_domain *dom = domains; dom; dom = dom->next) {
		if (name && dom->name && strcmp(dom->name, name) == 0) {
			if (state_file && !str_eq(dom->state_file, state_file)) {
				if (dom->state_file)
					vdisk_set_error(
					    "state-file: domain '%s' is open with state-file '%s'",
					    name, dom->state_file);
				else
					vdisk_set_error(
					    "state-file: domain '%s' is open without a state-file",
					    name);
				pthread_mutex_unlock(&domains_lock);
				return NULL;
			}
			dom->refs++;
			pthread_mutex_unlock(&domains_lock);
			return dom;
		}
		/* two states saved in one file would overwrite each other */
		if (state_file && dom->state_file && strcmp(dom->state_file, state_file) == 0) {
			vdisk_set_error("state-file: '%s' is in use by %s%s%s", state_file,
			                dom->name ? "domain '" : "another prwrap layer",
			                dom->name ? dom->name : "", dom->name ? "'" : "");
			pthread_mutex_unlock(&domains_lock);
			return NULL;
		}
	}
	struct pr_domain *dom = calloc(1, sizeof *dom);
	if (!dom || (name && !(dom->name = strdup(name))) ||
	    (state_file && !(dom->state_file = strdup(state_file)))) {
		if (dom) {
			free(dom->name);
			free(dom);
		}
		pthread_mutex_unlock(&domains_lock);
		vdisk_set_error_errno(ENOMEM, "prwrap");
		return NULL;
	}
	if (state_file && state_load(state_file, &dom->st, &dom->next_ctrl) < 0) {
		pthread_mutex_unlock(&domains_lock);
		free(dom->name);
		free(dom->state_file);
		free(dom);
		return NULL;
	}
	pthread_mutex_init(&dom->lock, NULL);
	dom->refs = 1;
	dom->next = domains;
	domains = dom;
	pthread_mutex_unlock(&domains_lock);
	return dom;
}

/* ------------------------------------------------------------------------- */
/* Open, close                                                                 */
/* ------------------------------------------------------------------------- */

static int prw_open(struct vdisk *d, json_t *cfg)
{
	static const char *const keys[] = {"inner", "host-id", "domain", "state-file", NULL};
	const char *host = NULL, *domain = NULL, *state_file = NULL;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "host-id", &host) < 0 ||
	    vdisk_cfg_string(cfg, "domain", &domain) < 0 ||
	    vdisk_cfg_string(cfg, "state-file", &state_file) < 0)
		return -1;
	if (domain && !*domain)
		return vdisk_set_error("domain: must not be empty");
	if (state_file && !*state_file)
		return vdisk_set_error("state-file: must not be empty");
	struct prw *p = calloc(1, sizeof *p);
	if (!p)
		return vdisk_set_error_errno(ENOMEM, "prwrap");
	p->host_len = 8; /* all zeros: the single initiator of the reference */
	if (host && parse_hex(host, p->host, &p->host_len) < 0) {
		free(p);
		return vdisk_set_error("host-id: '%s' is not 16 or 32 hex digits (an 8- or 16-byte "
		                       "host identifier)",
		                       host);
	}
	p->inner = vdisk_open_child(d, json_object_get(cfg, "inner"), "inner", false);
	if (!p->inner) {
		free(p);
		return -1;
	}
	p->dom = domain_get(domain, state_file);
	if (!p->dom) {
		free(p);
		return -1;
	}
	pthread_mutex_lock(&p->dom->lock);
	p->ctrl = p->dom->next_ctrl++;
	p->next = p->dom->inits;
	p->dom->inits = p;
	atomic_init(&p->access, access_for(&p->dom->st, p->host, p->host_len));
	pthread_mutex_unlock(&p->dom->lock);

	vdisk_set_priv(d, p);
	vdisk_meta(d)->req_ctx_size = sizeof(struct prw_ctx);
	vdisk_meta_inherit(d, p->inner);
	vdisk_meta(d)->has_pr = true;
	return 0;
}

static void prw_close(struct vdisk *d)
{
	struct prw *p = vdisk_priv(d);
	struct pr_domain *dom = p->dom;
	pthread_mutex_lock(&dom->lock);
	for (struct prw **pp = &dom->inits; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	pthread_mutex_unlock(&dom->lock);
	domain_put(dom);
	free(p);
}

/* ------------------------------------------------------------------------- */
/* The data path                                                               */
/* ------------------------------------------------------------------------- */

static void prw_done(struct vdisk_req *c, vdisk_status st)
{
	struct vdisk_req *r = c->opaque;
	struct prw *p = vdisk_priv(r->disk);
	struct prw_ctx *x = vdisk_req_ctx(r);
	if (atomic_load_explicit(&p->abort_epoch, memory_order_acquire) != x->epoch)
		st = vdisk_status_make(VDISK_ERR_ABORTED_PREEMPT, ECANCELED);
	vdisk_req_complete(r, st);
}

static int prw_submit(struct vdisk_req *r)
{
	struct prw *p = vdisk_priv(r->disk);
	struct prw_ctx *x = vdisk_req_ctx(r);
	unsigned need = r->op == VDISK_OP_READ || r->op == VDISK_OP_EXTENTS ? ACC_READ : ACC_WRITE;
	if (!(atomic_load_explicit(&p->access, memory_order_acquire) & need)) {
		vdisk_req_complete(r, conflict());
		return 0;
	}
	x->epoch = atomic_load_explicit(&p->abort_epoch, memory_order_acquire);
	struct vdisk_req *c = vdisk_req_alloc(r, p->inner);
	if (!c)
		return -ENOMEM;
	switch (r->op) {
	case VDISK_OP_READ:
	case VDISK_OP_WRITE:
		vdisk_req_prep_rw(c, (enum vdisk_op)r->op, r->sector, r->iov, r->iovcnt, r->flags);
		break;
	case VDISK_OP_FLUSH: vdisk_req_prep_flush(c); break;
	case VDISK_OP_EXTENTS:
		vdisk_req_prep_extents(c, r->sector, r->count, r->ext, r->ext_max, r->ext_n);
		break;
	default:
		vdisk_req_prep_range(c, (enum vdisk_op)r->op, r->sector, r->count, r->flags);
		break;
	}
	c->done = prw_done;
	c->opaque = r;
	return vdisk_req_submit(c);
}

/* ------------------------------------------------------------------------- */
/* Reservation commands                                                        */
/* ------------------------------------------------------------------------- */

/* Run op on a copy of the state; save the copy if persistence asks for it;
 * then make it the state and update every initiator's access. */
static vdisk_status transact(struct prw *p,
                             vdisk_status (*op)(struct prw *p, struct pr_state *st, void *arg),
                             void *arg)
{
	struct pr_domain *dom = p->dom;
	struct pr_state ns;
	vdisk_status rc;
	pthread_mutex_lock(&dom->lock);
	if (state_copy(&ns, &dom->st) < 0) {
		pthread_mutex_unlock(&dom->lock);
		return vdisk_status_io(ENOMEM);
	}
	rc = op(p, &ns, arg);
	if (vdisk_ok(rc) && dom->state_file && (ns.ptpl || dom->st.ptpl) &&
	    state_save(dom->state_file, &ns) < 0)
		rc = vdisk_status_io(errno ? errno : EIO);
	if (vdisk_ok(rc)) {
		state_free(&dom->st);
		dom->st = ns;
		update_access(dom);
	} else {
		state_free(&ns);
	}
	pthread_mutex_unlock(&dom->lock);
	return rc;
}

/* The registered key of this initiator must be key (conflict otherwise). */
static int check_key(struct prw *p, const struct pr_state *st, uint64_t key)
{
	int i = find_reg(st, p->host, p->host_len);
	if (i < 0 || st->regs[i].key != key)
		return -1;
	return i;
}

struct reg_args {
	uint64_t cur, new_key;
	unsigned flags;
};

static vdisk_status op_register(struct prw *p, struct pr_state *st, void *arg)
{
	struct reg_args *a = arg;
	int i = find_reg(st, p->host, p->host_len);
	if (!(a->flags & VDISK_PR_IGNORE_EXISTING_KEY)) {
		if (i < 0 ? a->cur != 0 : st->regs[i].key != a->cur)
			return conflict();
	}
	if ((a->flags & VDISK_PR_SET_PTPL) && !p->dom->state_file)
		return invalid();
	if (a->new_key == 0) {
		if (i < 0)
			return ok(); /* nothing to do, nothing counted */
		state_remove(st, (unsigned)i);
	} else if (i < 0) {
		if (state_add(st, p->host, p->host_len, p->ctrl, a->new_key) < 0)
			return vdisk_status_io(errno);
	} else {
		st->regs[i].key = a->new_key;
	}
	if (a->new_key && (a->flags & VDISK_PR_SET_PTPL))
		st->ptpl = true;
	if (a->new_key && (a->flags & VDISK_PR_CLEAR_PTPL))
		st->ptpl = false;
	st->generation++;
	return ok();
}

struct type_args {
	uint64_t key, pkey;
	uint8_t type;
	bool abort;
};

static vdisk_status op_reserve(struct prw *p, struct pr_state *st, void *arg)
{
	struct type_args *a = arg;
	if (check_key(p, st, a->key) < 0)
		return conflict();
	if (st->type == VDISK_PR_NONE) {
		st->type = a->type;
		memcpy(st->holder, p->host, p->host_len);
		st->holder_len = p->host_len;
		return ok();
	}
	if (is_holder(st, p->host, p->host_len) && st->type == a->type)
		return ok();
	return conflict();
}

static vdisk_status op_release(struct prw *p, struct pr_state *st, void *arg)
{
	struct type_args *a = arg;
	if (check_key(p, st, a->key) < 0)
		return conflict();
	if (!is_holder(st, p->host, p->host_len))
		return ok();
	if (st->type != a->type)
		return invalid();
	release(st);
	return ok();
}

static vdisk_status op_clear(struct prw *p, struct pr_state *st, void *arg)
{
	struct type_args *a = arg;
	if (check_key(p, st, a->key) < 0)
		return conflict();
	release(st);
	state_free(st);
	st->generation++;
	return ok();
}

/* Abort the I/O in flight of every initiator of host. */
static void abort_host(struct pr_domain *dom, const uint8_t *host, uint8_t len)
{
	for (struct prw *q = dom->inits; q; q = q->next)
		if (same_host(q->host, q->host_len, host, len))
			atomic_fetch_add_explicit(&q->abort_epoch, 1, memory_order_acq_rel);
}

static vdisk_status op_preempt(struct prw *p, struct pr_state *st, void *arg)
{
	struct type_args *a = arg;
	if (check_key(p, st, a->key) < 0)
		return conflict();
	/* take: the reservation passes to us; everyone: every other registrant
	 * goes (key 0 under an all-registrants reservation) */
	bool take = false, everyone = false;
	if (st->type != VDISK_PR_NONE && all_registrants(st->type)) {
		take = everyone = a->pkey == 0;
	} else if (st->type != VDISK_PR_NONE) {
		int h = find_reg(st, st->holder, st->holder_len);
		take = h >= 0 && st->regs[h].key == a->pkey;
	}
	if (a->pkey == 0 && !everyone)
		return invalid();
	unsigned matched = 0;
	for (unsigned i = 0; i < st->n; i++)
		if (everyone || st->regs[i].key == a->pkey)
			matched++;
	if (!matched)
		return conflict();
	if (take)
		release(st);
	for (unsigned i = 0; i < st->n;) {
		struct pr_reg *r = &st->regs[i];
		if (!same_host(r->host, r->host_len, p->host, p->host_len) &&
		    (everyone || r->key == a->pkey)) {
			if (a->abort)
				abort_host(p->dom, r->host, r->host_len);
			/* not the holder of a single-holder reservation here (that one
			 * was released above), so the reservation stays as it is */
			state_remove(st, i);
			continue;
		}
		i++;
	}
	if (take) {
		st->type = a->type;
		memcpy(st->holder, p->host, p->host_len);
		st->holder_len = p->host_len;
	}
	st->generation++;
	return ok();
}

static vdisk_status prw_register(struct vdisk *d, uint64_t cur, uint64_t new_key, unsigned flags)
{
	struct reg_args a = {cur, new_key, flags};
	return transact(vdisk_priv(d), op_register, &a);
}

static vdisk_status prw_reserve(struct vdisk *d, uint64_t key, enum vdisk_pr_type type)
{
	struct type_args a = {key, 0, (uint8_t)type, false};
	return transact(vdisk_priv(d), op_reserve, &a);
}

static vdisk_status prw_release(struct vdisk *d, uint64_t key, enum vdisk_pr_type type)
{
	struct type_args a = {key, 0, (uint8_t)type, false};
	return transact(vdisk_priv(d), op_release, &a);
}

static vdisk_status prw_clear(struct vdisk *d, uint64_t key)
{
	struct type_args a = {key, 0, 0, false};
	return transact(vdisk_priv(d), op_clear, &a);
}

static vdisk_status prw_preempt(struct vdisk *d, uint64_t key, uint64_t pkey,
                                enum vdisk_pr_type type, bool abort)
{
	struct type_args a = {key, pkey, (uint8_t)type, abort};
	return transact(vdisk_priv(d), op_preempt, &a);
}

static vdisk_status prw_capabilities(struct vdisk *d, struct vdisk_pr_capabilities *caps)
{
	struct prw *p = vdisk_priv(d);
	caps->types = ALL_TYPES;
	caps->persist_through_power_loss = p->dom->state_file != NULL;
	return ok();
}

static vdisk_status prw_report(struct vdisk *d, struct vdisk_pr_report *rep,
                               struct vdisk_pr_registrant *regs, unsigned max)
{
	struct prw *p = vdisk_priv(d);
	struct pr_domain *dom = p->dom;
	pthread_mutex_lock(&dom->lock);
	const struct pr_state *st = &dom->st;
	rep->generation = st->generation;
	rep->type = st->type;
	rep->persist_through_power_loss = st->ptpl;
	rep->nregistrants = st->n;
	for (unsigned i = 0; i < st->n && i < max; i++) {
		memset(&regs[i], 0, sizeof regs[i]);
		regs[i].key = st->regs[i].key;
		memcpy(regs[i].host_id, st->regs[i].host, st->regs[i].host_len);
		regs[i].host_id_len = st->regs[i].host_len;
		regs[i].controller_id = st->regs[i].ctrl;
		regs[i].holds_reservation = is_holder(st, st->regs[i].host, st->regs[i].host_len);
	}
	pthread_mutex_unlock(&dom->lock);
	return ok();
}

static const struct vdisk_pr_ops prw_pr_ops = {
    .capabilities = prw_capabilities,
    .report = prw_report,
    .register_key = prw_register,
    .reserve = prw_reserve,
    .release = prw_release,
    .clear = prw_clear,
    .preempt = prw_preempt,
};

/* ------------------------------------------------------------------------- */
/* Inspect                                                                     */
/* ------------------------------------------------------------------------- */

static int prw_inspect(struct vdisk *d, json_t *obj)
{
	struct prw *p = vdisk_priv(d);
	char h[33];
	hex(h, p->host, p->host_len);
	json_object_set_new(obj, "host_id", json_string(h));
	json_object_set_new(obj, "controller_id", json_integer(p->ctrl));
	pthread_mutex_lock(&p->dom->lock);
	json_t *st = state_json(&p->dom->st);
	json_object_del(st, "format");
	json_object_del(st, "version");
	json_object_set_new(st, "generation", json_integer(p->dom->st.generation));
	if (p->dom->name)
		json_object_set_new(st, "domain", json_string(p->dom->name));
	pthread_mutex_unlock(&p->dom->lock);
	json_object_set_new(obj, "reservations", st);
	return 0;
}

const struct vdisk_driver vdisk_driver_prwrap = {
    .struct_size = sizeof(struct vdisk_driver),
    .name = "prwrap",
    .description = "persistent reservations (SPC-4 / NVMe) over any disk, shared by the "
                   "initiators of a domain (inner, host-id, domain, state-file)",
    .open = prw_open,
    .close = prw_close,
    .read = prw_submit,
    .write = prw_submit,
    .flush = prw_submit,
    .unmap = prw_submit,
    .write_zeroes = prw_submit,
    .extents = prw_submit,
    .eject = prw_submit,
    .inspect = prw_inspect,
    .pr = &prw_pr_ops,
};
