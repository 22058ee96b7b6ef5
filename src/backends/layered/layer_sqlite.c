/* sqlite and sqlite-cache layers: a persistent sparse layer in a SQLite file.
 *
 *   {"type":"sqlite","path":P,"create":true?,"size":S?,"sector-size":N?}
 *   {"type":"sqlite-cache","root":DIR,"key":K?}
 *
 * The file format (docs/sqlite-layer.md) is the reference's, so files move
 * between OpenVMM and vdisk: a table `sectors(sector, data)` with one row per
 * present sector (data NULL: present and all zeros) and a table `meta` with
 * one JSON row {"logically_read_only", "sector_count", "sector_size"}; WAL
 * journal.  vdisk marks its files with an application id and versions the
 * format in user_version (0: written by OpenVMM, 1: this format).
 *
 * Every database call runs on the layer's own worker thread, which owns the
 * connection: a layer is one SQLite connection, and one thread serialises it
 * without a lock held across I/O.  The worker takes all waiting operations at
 * once and runs them in one transaction, so a queue of writes costs one
 * commit.  Commits run with synchronous=NORMAL (no fsync); a flush fsyncs the
 * WAL, which makes every committed write durable; finished operations go back
 * to their queue through layered_remote_finish().
 *
 * Never destructive: create refuses an existing file and builds the new one
 * under a temporary name that is linked into place only when complete; the
 * sqlite-cache's creation is the reference's race-free protocol (format in a
 * private directory, hard-link, losing the race is fine). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "layered.h"

#define SQ_APP_ID 0x7664736c /* "vdsl" */
#define SQ_FORMAT_VERSION 1
#define SQ_EXTENT_ROWS 65536 /* rows one extent query looks at */

struct sq;

/* A control-path call run on the worker, which owns the connection. */
struct sq_ctl {
	int (*fn)(struct sq *s, void *arg);
	void *arg;
	int rc;
	bool done;
};

struct sq {
	sqlite3 *db;
	char *path;
	int lock_fd; /* holds the image lock (vdisk_lock_image), when has_lock */
	bool has_lock;
	uint64_t count; /* changed only by the worker */
	_Atomic uint64_t count_pub;
	uint64_t zero_after; /* absent sectors at or beyond it read as zeros */
	uint32_t ss;
	bool logically_ro;
	bool open_ro;
	sqlite3_stmt *s_read, *s_write, *s_noov, *s_delete, *s_extent, *s_meta;
	unsigned char *sector_buf;

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct lio *head, **tail;
	bool stop;
	bool sleeping;
	struct sq_ctl *ctl; /* a control call waiting for the worker */
	pthread_cond_t ctl_cond;
	pthread_mutex_t ctl_lock; /* one control call at a time */
	bool dir_synced;          /* the WAL's directory entry made durable */

	_Atomic uint64_t n_jobs, n_batches, n_commits, n_syncs, n_errors;
};

static vdisk_status db_error(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL: return vdisk_status_io(ENOSPC);
	case SQLITE_NOMEM: return vdisk_status_io(ENOMEM);
	case SQLITE_READONLY: return vdisk_status_io(EROFS);
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return vdisk_status_io(EBUSY);
	default: return vdisk_status_io(EIO);
	}
}

/* ------------------------------------------------------------------------- */
/* Operations, on the worker                                                   */
/* ------------------------------------------------------------------------- */

static bool in_range(struct sq *s, struct lio *io)
{
	return io->sector + io->count <= s->count;
}

static vdisk_status sq_read(struct sq *s, struct lio *io)
{
	if (!in_range(s, io))
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	sqlite3_stmt *st = s->s_read;
	vdisk_status res = vdisk_status_ok();
	sqlite3_bind_int64(st, 1, (sqlite3_int64)io->sector);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(io->sector + io->count));
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	uint64_t at = io->sector;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 x = sqlite3_column_int64(st, 0);
		if (x < (sqlite3_int64)io->sector || x >= (sqlite3_int64)(io->sector + io->count))
			continue;
		uint64_t bit = (uint64_t)x - io->bits_base;
		if (bits_test(io->bits, bit))
			continue;
		const void *data = NULL;
		if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
			data = sqlite3_column_blob(st, 1);
			if ((uint64_t)sqlite3_column_bytes(st, 1) != s->ss || !data) {
				/* a damaged row is an error, never short data */
				res = vdisk_status_medium(VDISK_MEDIUM_UNRECOVERED_READ, EIO);
				break;
			}
		}
		iov_cur_skip(&cur, (size_t)(((uint64_t)x - at) * s->ss));
		iov_cur_copy(&cur, (void *)data, s->ss, true);
		at = (uint64_t)x + 1;
		io->bits[bit / 64] |= 1ull << (bit % 64);
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		res = db_error(rc);
	sqlite3_reset(st);
	/* beyond the watermark an absent sector is a present zero */
	uint64_t end = io->sector + io->count;
	if (vdisk_ok(res) && s->zero_after < end) {
		uint64_t b0 =
		    (s->zero_after > io->sector ? s->zero_after : io->sector) - io->bits_base;
		uint64_t b1 = end - io->bits_base;
		uint64_t x = b0;
		while ((x = bits_find(io->bits, x, b1, false)) < b1) {
			uint64_t y = bits_find(io->bits, x, b1, true);
			vdisk_iov_memset(io->iov, io->iovcnt,
			                 io->off +
			                     (size_t)((x + io->bits_base - io->sector) * s->ss),
			                 0, (size_t)((y - x) * s->ss));
			bits_set_range(io->bits, x, y);
			x = y;
		}
	}
	return res;
}

/* The metadata row, with zero_after only when it is below the sector count
 * (so a file never shrunk or unmapped to its end keeps the reference's
 * exact format). */
static int meta_text(char *buf, size_t len, bool ro, uint64_t count, uint32_t ss,
                     uint64_t zero_after)
{
	char za[48] = "";
	if (zero_after < count)
		snprintf(za, sizeof za, ",\"zero_after\":%" PRIu64, zero_after);
	return snprintf(buf, len,
	                "{\"logically_read_only\":%s,\"sector_count\":%" PRIu64
	                ",\"sector_size\":%" PRIu32 "%s}",
	                ro ? "true" : "false", count, ss, za);
}

/* Store count and zero_after, in the worker's transaction. */
static vdisk_status write_meta(struct sq *s, uint64_t count, uint64_t zero_after)
{
	char text[256];
	meta_text(text, sizeof text, s->logically_ro, count, s->ss, zero_after);
	sqlite3_bind_text(s->s_meta, 1, text, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(s->s_meta);
	sqlite3_reset(s->s_meta);
	if (rc != SQLITE_DONE)
		return db_error(rc);
	return vdisk_status_ok();
}

static vdisk_status delete_range(struct sq *s, uint64_t from, uint64_t to)
{
	/* a half-open range, so no count - 1 to underflow */
	sqlite3_stmt *st = s->s_delete;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)from);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)to);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? vdisk_status_ok() : db_error(rc);
}

/* One row of st (an insert): sector x with data, NULL for a zero sector. */
static vdisk_status put_sector(sqlite3_stmt *st, uint64_t x, const void *data, uint32_t ss)
{
	sqlite3_bind_int64(st, 1, (sqlite3_int64)x);
	if (data)
		sqlite3_bind_blob(st, 2, data, (int)ss, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? vdisk_status_ok() : db_error(rc);
}

static vdisk_status sq_write(struct sq *s, struct lio *io, bool no_overwrite)
{
	if (!in_range(s, io))
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	if (!no_overwrite && s->logically_ro)
		return vdisk_status_make(VDISK_ERR_READ_ONLY, 0);
	sqlite3_stmt *st = no_overwrite ? s->s_noov : s->s_write;
	struct iov_cur cur;
	iov_cur_init(&cur, io->iov, io->iovcnt, io->off);
	for (uint64_t x = io->sector; x < io->sector + io->count; x++) {
		if (no_overwrite && io->bits && bits_test(io->bits, x - io->bits_base)) {
			iov_cur_skip(&cur, s->ss);
			continue;
		}
		iov_cur_copy(&cur, s->sector_buf, s->ss, false);
		/* all-zero sectors are stored as NULL, as the reference does */
		vdisk_status r = put_sector(
		    st, x, vdisk_buf_is_zero(s->sector_buf, s->ss) ? NULL : s->sector_buf, s->ss);
		if (!vdisk_ok(r))
			return r;
	}
	return vdisk_status_ok();
}

static vdisk_status sq_unmap(struct sq *s, struct lio *io)
{
	if (!in_range(s, io))
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	if (io->count == 0)
		return vdisk_status_ok();
	if (s->logically_ro)
		return vdisk_status_make(VDISK_ERR_READ_ONLY, 0);
	uint64_t end = io->sector + io->count;
	/* nothing below shows through: absent is as good as zero */
	if (io->next_is_zero)
		return delete_range(s, io->sector, end);
	/* A range that reaches the watermark lowers it: the sectors read as
	 * zeros without a row each, so discarding a whole disk costs a delete
	 * of what was written, not a row per sector (the reference's way). */
	if (end >= s->zero_after) {
		if (io->sector < s->zero_after) {
			vdisk_status st = write_meta(s, s->count, io->sector);
			if (!vdisk_ok(st))
				return st;
			s->zero_after = io->sector;
		}
		return delete_range(s, io->sector, end);
	}
	/* the layer advertises zeroes: every sector, partial blocks included,
	 * becomes a present zero that hides what is below */
	for (uint64_t x = io->sector; x < end; x++) {
		vdisk_status r = put_sector(s->s_write, x, NULL, s->ss);
		if (!vdisk_ok(r))
			return r;
	}
	return vdisk_status_ok();
}

static vdisk_status sq_extent(struct sq *s, struct lio *io)
{
	if (!in_range(s, io))
		return vdisk_status_make(VDISK_ERR_ILLEGAL_BLOCK, 0);
	sqlite3_stmt *st = s->s_extent;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)io->sector);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(io->sector + io->count));
	sqlite3_bind_int64(st, 3, SQ_EXTENT_ROWS);
	io->ext_kind = LEXT_ABSENT;
	io->ext_len = io->count;
	vdisk_status res = vdisk_status_ok();
	int rc = sqlite3_step(st);
	uint64_t next_row = io->sector + io->count;
	if (rc == SQLITE_ROW)
		next_row = (uint64_t)sqlite3_column_int64(st, 0);
	if (next_row > io->sector) {
		/* absent up to the next row; beyond the watermark that reads zero */
		if (io->sector >= s->zero_after) {
			io->ext_kind = LEXT_HOLE;
			io->ext_len = next_row - io->sector;
		} else {
			uint64_t lim = next_row < s->zero_after ? next_row : s->zero_after;
			io->ext_len = lim - io->sector;
		}
	} else if (rc == SQLITE_ROW) {
		bool zero = sqlite3_column_int(st, 1);
		io->ext_kind = zero ? LEXT_ZERO : LEXT_DATA;
		io->ext_len = 1;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW &&
		       (uint64_t)sqlite3_column_int64(st, 0) == io->sector + io->ext_len &&
		       (bool)sqlite3_column_int(st, 1) == zero)
			io->ext_len++;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		res = db_error(rc);
	sqlite3_reset(st);
	return res;
}

static int fsync_dir_of(const char *path)
{
	char *dir = strdup(path);
	if (!dir)
		return -ENOMEM;
	char *slash = strrchr(dir, '/');
	const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
	int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 || fsync(fd) < 0 ? -errno : 0;
	if (fd >= 0)
		close(fd);
	free(dir);
	return rc;
}

/* Make every committed transaction durable: fsync the WAL (and, once, its
 * directory entry).  Commits run with synchronous=NORMAL, which writes the WAL
 * but does not sync it; a checkpoint syncs what it copies into the database. */
static vdisk_status sq_sync(struct sq *s)
{
	sqlite3_file *f = NULL;
	int rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
	atomic_fetch_add_explicit(&s->n_syncs, 1, memory_order_relaxed);
	if (rc != SQLITE_OK)
		return db_error(rc);
	if (f && f->pMethods) {
		rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
		if (rc != SQLITE_OK)
			return db_error(rc);
		if (!s->dir_synced) {
			int e = fsync_dir_of(s->path);
			if (e < 0)
				return vdisk_status_io(-e);
			s->dir_synced = true;
		}
	}
	return vdisk_status_ok();
}

static bool is_write(struct lio *io)
{
	return io->op == LIO_WRITE || io->op == LIO_WRITE_NO_OVERWRITE || io->op == LIO_UNMAP;
}

/* A transaction that failed lost every write it held: say so to each. */
static void fail_writes(struct lio *from, struct lio *to, vdisk_status st)
{
	for (struct lio *io = from; io && io != to; io = io->next)
		if (is_write(io) && vdisk_ok(io->st))
			io->st = st;
}

static void run_batch(struct sq *s, struct lio *list)
{
	bool want_sync = false, in_txn = false;
	struct lio *txn_first = list;
	atomic_fetch_add_explicit(&s->n_batches, 1, memory_order_relaxed);
	for (struct lio *io = list; io; io = io->next) {
		atomic_fetch_add_explicit(&s->n_jobs, 1, memory_order_relaxed);
		if (!in_txn) {
			int rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
			if (rc != SQLITE_OK) {
				io->st = db_error(rc);
				continue;
			}
			in_txn = true;
			txn_first = io;
		}
		switch (io->op) {
		case LIO_READ: io->st = sq_read(s, io); break;
		case LIO_WRITE: io->st = sq_write(s, io, false); break;
		case LIO_WRITE_NO_OVERWRITE: io->st = sq_write(s, io, true); break;
		case LIO_UNMAP: io->st = sq_unmap(s, io); break;
		case LIO_EXTENT: io->st = sq_extent(s, io); break;
		case LIO_FLUSH:
			want_sync = true;
			io->st = vdisk_status_ok();
			break;
		default: io->st = vdisk_status_make(VDISK_ERR_INVALID_INPUT, EINVAL); break;
		}
		if (!vdisk_ok(io->st) && io->st.kind == VDISK_ERR_IO &&
		    sqlite3_get_autocommit(s->db)) {
			/* SQLite rolled the transaction back on this error */
			fail_writes(txn_first, io, io->st);
			in_txn = false;
		}
	}
	if (in_txn) {
		int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
		atomic_fetch_add_explicit(&s->n_commits, 1, memory_order_relaxed);
		if (rc != SQLITE_OK) {
			vdisk_status st = db_error(rc);
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			fail_writes(txn_first, NULL, st);
		}
	}
	if (want_sync) {
		vdisk_status st = s->open_ro ? vdisk_status_ok() : sq_sync(s);
		for (struct lio *io = list; io; io = io->next)
			if (io->op == LIO_FLUSH)
				io->st = st;
	}
	for (struct lio *io = list, *next; io; io = next) {
		next = io->next;
		if (!vdisk_ok(io->st) && io->st.kind != VDISK_ERR_ILLEGAL_BLOCK)
			atomic_fetch_add_explicit(&s->n_errors, 1, memory_order_relaxed);
		layered_remote_finish(io);
	}
}

static void *sq_worker(void *arg)
{
	struct sq *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->head && !s->ctl && !s->stop) {
			s->sleeping = true;
			pthread_cond_wait(&s->cond, &s->lock);
			s->sleeping = false;
		}
		if (s->ctl) {
			/* between batches: no operation sees half a resize */
			struct sq_ctl *c = s->ctl;
			pthread_mutex_unlock(&s->lock);
			c->rc = c->fn(s, c->arg);
			pthread_mutex_lock(&s->lock);
			s->ctl = NULL;
			c->done = true;
			pthread_cond_broadcast(&s->ctl_cond);
			continue;
		}
		if (!s->head)
			break;
		struct lio *list = s->head;
		s->head = NULL;
		s->tail = &s->head;
		pthread_mutex_unlock(&s->lock);
		run_batch(s, list);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Run fn on the worker and wait for it (control path, any thread). */
static int sq_call(struct sq *s, int (*fn)(struct sq *s, void *arg), void *arg)
{
	struct sq_ctl c = {.fn = fn, .arg = arg};
	pthread_mutex_lock(&s->ctl_lock);
	pthread_mutex_lock(&s->lock);
	s->ctl = &c;
	pthread_cond_signal(&s->cond);
	while (!c.done)
		pthread_cond_wait(&s->ctl_cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->ctl_lock);
	return c.rc;
}

static int sq_submit(struct lio *io)
{
	struct sq *s = io->l->priv;
	io->next = NULL;
	layered_remote_begin(io);
	pthread_mutex_lock(&s->lock);
	*s->tail = io;
	s->tail = &io->next;
	if (s->sleeping)
		pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Open, create                                                                */
/* ------------------------------------------------------------------------- */

static void sq_free(struct sq *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_signal(&s->cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	sqlite3_finalize(s->s_read);
	sqlite3_finalize(s->s_write);
	sqlite3_finalize(s->s_noov);
	sqlite3_finalize(s->s_delete);
	sqlite3_finalize(s->s_extent);
	sqlite3_finalize(s->s_meta);
	if (s->db)
		sqlite3_close(s->db);
	if (s->has_lock)
		close(s->lock_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->ctl_lock);
	pthread_cond_destroy(&s->ctl_cond);
	free(s->sector_buf);
	free(s->path);
	free(s);
}

static int exec_or_error(sqlite3 *db, const char *sql, const char *what, const char *path)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		vdisk_set_error("'%s': %s: %s", path, what, err ? err : sqlite3_errmsg(db));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

/* Remove a private creation directory and what SQLite may have left in it. */
static void remove_tmpdir(const char *dir)
{
	DIR *dh = opendir(dir);
	if (dh) {
		struct dirent *e;
		while ((e = readdir(dh))) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char p[PATH_MAX];
			if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
				unlink(p);
		}
		closedir(dh);
	}
	rmdir(dir);
}

/* Build a new layer file at path: formatted in a private directory beside it,
 * then hard-linked into place, so nobody ever sees a half-made file and an
 * existing file is never touched.  *raced is set when path appeared meanwhile
 * (another process created it): that is an error for the caller to judge. */
static int sq_create(const char *path, uint64_t count, uint32_t ss, bool logically_ro, bool *raced)
{
	char dir[PATH_MAX], tmpdir[PATH_MAX], tmp[PATH_MAX];
	sqlite3 *db = NULL;
	int rc = -1;
	*raced = false;
	const char *slash = strrchr(path, '/');
	if (slash)
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) ? (int)(slash - path) : 1,
		         path);
	else
		snprintf(dir, sizeof dir, ".");
	if (snprintf(tmpdir, sizeof tmpdir, "%s/.vdisk-create-XXXXXX", dir) >= (int)sizeof tmpdir)
		return vdisk_set_error("path '%s': too long", path);
	if (!mkdtemp(tmpdir))
		return vdisk_set_error_errno(errno, "path '%s': cannot create a file beside it",
		                             path);
	snprintf(tmp, sizeof tmp, "%s/layer.dbhd", tmpdir);

	int r = sqlite3_open_v2(
	    tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (r != SQLITE_OK) {
		vdisk_set_error("'%s': cannot create: %s", path,
		                db ? sqlite3_errmsg(db) : sqlite3_errstr(r));
		goto out;
	}
	char sql[768], meta[256];
	meta_text(meta, sizeof meta, logically_ro, count, ss, count);
	snprintf(sql, sizeof sql,
	         "PRAGMA application_id = %d;"
	         "PRAGMA user_version = %d;"
	         "PRAGMA journal_mode = WAL;"
	         "BEGIN;"
	         "CREATE TABLE sectors (sector INTEGER NOT NULL, data BLOB, PRIMARY KEY (sector));"
	         "CREATE TABLE meta (metadata TEXT NOT NULL);"
	         "INSERT INTO meta (metadata) VALUES ('%s');"
	         "COMMIT;",
	         SQ_APP_ID, SQ_FORMAT_VERSION, meta);
	if (exec_or_error(db, sql, "formatting", path) < 0)
		goto out;
	/* closing the last connection checkpoints the WAL into the file */
	if (sqlite3_close(db) != SQLITE_OK) {
		vdisk_set_error("'%s': closing after formatting: %s", path, sqlite3_errmsg(db));
		goto out;
	}
	db = NULL;
	int fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		vdisk_set_error_errno(errno, "'%s': syncing the new file", path);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	if (link(tmp, path) < 0) {
		if (errno == EEXIST)
			*raced = true;
		else
			vdisk_set_error_errno(errno, "'%s': cannot create", path);
		goto out;
	}
	fsync_dir_of(path);
	rc = 0;
out:
	if (db)
		sqlite3_close(db);
	remove_tmpdir(tmpdir);
	return rc;
}

/* The metadata row: {"logically_read_only", "sector_count", "sector_size"}. */
static int read_meta(struct sq *s)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, "SELECT metadata FROM meta", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return vdisk_set_error("'%s': not a sqlite layer (%s)", s->path,
		                       sqlite3_errmsg(s->db));
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		vdisk_set_error("'%s': %s", s->path,
		                rc == SQLITE_DONE ? "no metadata row in table meta"
		                                  : sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		return -1;
	}
	const char *text = (const char *)sqlite3_column_text(st, 0);
	json_error_t jerr;
	json_t *m = text ? json_loads(text, 0, &jerr) : NULL;
	bool more = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	if (!m)
		return vdisk_set_error("'%s': metadata is not JSON", s->path);
	json_t *ro = json_object_get(m, "logically_read_only");
	json_t *cnt = json_object_get(m, "sector_count");
	json_t *ssz = json_object_get(m, "sector_size");
	json_t *zav = json_object_get(m, "zero_after"); /* vdisk's, optional */
	int ok = json_is_boolean(ro) && json_is_integer(cnt) && json_is_integer(ssz) &&
	         (!zav || json_is_integer(zav));
	json_int_t c = ok ? json_integer_value(cnt) : 0, z = ok ? json_integer_value(ssz) : 0;
	json_int_t za = zav && ok ? json_integer_value(zav) : c;
	if (ok) {
		s->logically_ro = json_is_true(ro);
		s->count = (uint64_t)c;
		s->ss = (uint32_t)z;
		s->zero_after = (uint64_t)za;
	}
	json_decref(m);
	if (more)
		return vdisk_set_error("'%s': more than one metadata row", s->path);
	if (!ok)
		return vdisk_set_error("'%s': metadata lacks logically_read_only, sector_count or "
		                       "sector_size",
		                       s->path);
	if (z < 512 || z > 65536 || (z & (z - 1)))
		return vdisk_set_error("'%s': sector size %" JSON_INTEGER_FORMAT
		                       " is not a power of two in 512..64k",
		                       s->path, z);
	if (c <= 0 || (uint64_t)c > (uint64_t)INT64_MAX / (uint64_t)z)
		return vdisk_set_error("'%s': sector count %" JSON_INTEGER_FORMAT " is not valid",
		                       s->path, c);
	if (za < 0 || za > c)
		return vdisk_set_error("'%s': zero_after %" JSON_INTEGER_FORMAT
		                       " is not within the %" JSON_INTEGER_FORMAT " sectors",
		                       s->path, za, c);
	atomic_store(&s->count_pub, s->count);
	return 0;
}

static int pragma_int(struct sq *s, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK)
		return vdisk_set_error("'%s': %s", s->path, sqlite3_errmsg(s->db));
	return 0;
}

static int prepare(struct sq *s, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return vdisk_set_error("'%s': not a sqlite layer (%s)", s->path,
		                       sqlite3_errmsg(s->db));
	return 0;
}

/* Open an existing layer file and start its worker. */
static struct sq *sq_open_file(const char *path, bool read_only)
{
	struct stat stb;
	struct sq *s = calloc(1, sizeof *s);
	if (!s) {
		vdisk_set_error_errno(ENOMEM, "sqlite layer");
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_mutex_init(&s->ctl_lock, NULL);
	pthread_cond_init(&s->ctl_cond, NULL);
	s->tail = &s->head;
	s->open_ro = read_only;
	s->path = strdup(path);
	if (!s->path) {
		vdisk_set_error_errno(ENOMEM, "sqlite layer");
		goto fail;
	}
	if (stat(path, &stb) < 0) {
		vdisk_set_error_errno(errno, "path '%s'", path);
		goto fail;
	}
	if (!S_ISREG(stb.st_mode)) {
		vdisk_set_error("path '%s': not a regular file", path);
		goto fail;
	}
	int flags =
	    (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
	int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
	if (rc != SQLITE_OK) {
		vdisk_set_error("path '%s': %s", path,
		                s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	/* another process may hold the file (a shared cache) for a moment */
	sqlite3_busy_timeout(s->db, 10000);
	int64_t app = 0, ver = 0;
	if (pragma_int(s, "PRAGMA application_id", &app) < 0 ||
	    pragma_int(s, "PRAGMA user_version", &ver) < 0)
		goto fail;
	if (app != 0 && app != SQ_APP_ID) {
		vdisk_set_error("'%s': a SQLite file of another application (id 0x%" PRIx64 ")",
		                path, (uint64_t)app);
		goto fail;
	}
	if (ver > SQ_FORMAT_VERSION || ver < 0) {
		vdisk_set_error("'%s': format version %" PRId64
		                " is newer than this build knows (%d)",
		                path, ver, SQ_FORMAT_VERSION);
		goto fail;
	}
	if (read_meta(s) < 0)
		goto fail;
	/* A checkpoint fsyncs the WAL and the database, and random writes fill
	 * the 1000 pages of the default WAL in a few dozen commits: checkpointing
	 * every 8192 pages (32 MiB) gave about 1.4x the write rate here.  The WAL
	 * file is cut back to 64 MiB after a checkpoint. */
	if (!read_only &&
	    (exec_or_error(s->db, "PRAGMA journal_mode = WAL", "journal mode", path) < 0 ||
	     exec_or_error(s->db, "PRAGMA synchronous = NORMAL", "synchronous", path) < 0 ||
	     exec_or_error(s->db, "PRAGMA wal_autocheckpoint = 8192", "checkpoints", path) < 0 ||
	     exec_or_error(s->db, "PRAGMA journal_size_limit = 67108864", "WAL size", path) < 0))
		goto fail;
	if (prepare(s,
	            "SELECT sector, data FROM sectors WHERE sector >= ?1 AND sector < ?2 "
	            "ORDER BY sector",
	            &s->s_read) < 0 ||
	    prepare(s, "INSERT OR REPLACE INTO sectors (sector, data) VALUES (?1, ?2)",
	            &s->s_write) < 0 ||
	    prepare(s, "INSERT OR IGNORE INTO sectors (sector, data) VALUES (?1, ?2)", &s->s_noov) <
	        0 ||
	    prepare(s, "UPDATE meta SET metadata = ?1", &s->s_meta) < 0 ||
	    prepare(s, "DELETE FROM sectors WHERE sector >= ?1 AND sector < ?2", &s->s_delete) <
	        0 ||
	    prepare(s,
	            "SELECT sector, data IS NULL FROM sectors WHERE sector >= ?1 AND sector < ?2 "
	            "ORDER BY sector LIMIT ?3",
	            &s->s_extent) < 0)
		goto fail;
	s->sector_buf = aligned_alloc(64, s->ss);
	if (!s->sector_buf) {
		vdisk_set_error_errno(ENOMEM, "sqlite layer");
		goto fail;
	}
	int e = pthread_create(&s->thread, NULL, sq_worker, s);
	if (e) {
		vdisk_set_error_errno(e, "sqlite layer: worker thread");
		goto fail;
	}
	s->thread_started = true;
	/* visible in top -H and in the benchmarks' per-thread CPU figures */
	pthread_setname_np(s->thread, "vdisk-sqlite");
	return s;
fail:
	sq_free(s);
	return NULL;
}

static void set_meta(struct layer *l, struct sq *s)
{
	struct layer_meta *m = &l->meta;
	m->sector_count = s->count;
	m->sector_size = s->ss;
	m->physical_sector_size = s->ss;
	m->fua = false; /* a write is durable after a flush */
	m->read_only = s->logically_ro || s->open_ro;
	m->can_no_overwrite = !s->open_ro;
	m->unmap = VDISK_UNMAP_ZEROES;
	m->optimal_unmap_sectors = 1;
	m->shared_flush = true; /* one connection for every queue */
	l->priv = s;
}

static int sq_layer_open(struct layer *l, json_t *cfg, const struct layer_meta *below)
{
	static const char *const keys[] = {"path",        "create",  "size",
	                                   "sector-size", "locking", NULL};
	const char *path = NULL;
	bool create = false, locking = true;
	uint64_t size = 0, ss = below ? below->sector_size : 512;
	int have_size, have_ss;
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "path", &path) < 0 ||
	    vdisk_cfg_bool(cfg, "create", &create) < 0 ||
	    (have_size = vdisk_cfg_size(cfg, "size", &size)) < 0 ||
	    (have_ss = vdisk_cfg_size(cfg, "sector-size", &ss)) < 0 ||
	    vdisk_cfg_bool(cfg, "locking", &locking) < 0)
		return -1;
	if (!path || !*path)
		return vdisk_set_error("path: required");
	if ((have_size || have_ss) && !create)
		return vdisk_set_error("%s: only with create (an existing file knows its size)",
		                       have_size ? "size" : "sector-size");
	if (create) {
		if (l->open_read_only)
			return vdisk_set_error("create: the layer is opened read-only");
		if (ss < 512 || ss > 65536 || (ss & (ss - 1)))
			return vdisk_set_error(
			    "sector-size: %" PRIu64 " is not a power of two in 512..64k", ss);
		if (!have_size) {
			if (!below)
				return vdisk_set_error(
				    "size: required to create a layer with nothing "
				    "below it");
			size = below->sector_count * below->sector_size;
		}
		/* validate everything before anything is created */
		if (size == 0 || size % ss || size > (uint64_t)INT64_MAX)
			return vdisk_set_error("size: %" PRIu64
			                       " is not a non-zero multiple of the "
			                       "sector size %" PRIu64,
			                       size, ss);
		if (access(path, F_OK) == 0)
			return vdisk_set_error(
			    "path '%s': exists; create refuses to overwrite it (drop "
			    "\"create\" to open it)",
			    path);
		bool raced;
		if (sq_create(path, size / ss, (uint32_t)ss, false, &raced) < 0) {
			if (raced)
				vdisk_set_error("path '%s': exists; create refuses to overwrite it",
				                path);
			return -1;
		}
	}
	/* the image lock, before SQLite may recover the WAL (a write) */
	int lock_fd = -1;
	if (locking) {
		lock_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (lock_fd < 0)
			return vdisk_set_error_errno(errno, "path '%s'", path);
		if (vdisk_lock_image(lock_fd, path, !l->open_read_only) < 0) {
			close(lock_fd);
			return -1;
		}
	}
	struct sq *s = sq_open_file(path, l->open_read_only);
	if (!s) {
		if (lock_fd >= 0)
			close(lock_fd);
		return -1;
	}
	s->lock_fd = lock_fd;
	s->has_lock = lock_fd >= 0;
	set_meta(l, s);
	return 0;
}

/* The directory name from the lower disk's id, or the configured key. */
static int cache_key(json_t *cfg, const struct layer_meta *below, char *key, size_t len)
{
	const char *k = NULL;
	json_t *v = json_object_get(cfg, "key");
	if (vdisk_cfg_string(cfg, "key", &k) < 0)
		return -1;
	if (k) {
		if (!*k)
			return vdisk_set_error("key: empty");
		if (json_string_length(v) != strlen(k) || strchr(k, '/') || strcmp(k, ".") == 0 ||
		    strcmp(k, "..") == 0 || strlen(k) >= len)
			return vdisk_set_error("key: '%s' is not usable as a directory name", k);
		snprintf(key, len, "%s", k);
		return 0;
	}
	if (!below->has_disk_id)
		return vdisk_set_error("key: required, because the layer below has no disk id");
	for (int i = 0; i < 16; i++)
		snprintf(key + 2 * i, 3, "%02x", below->disk_id[i]);
	return 0;
}

static int mkdir_ok(const char *p)
{
	if (mkdir(p, 0777) < 0 && errno != EEXIST)
		return vdisk_set_error_errno(errno, "cannot create directory '%s'", p);
	return 0;
}

static int sq_cache_open(struct layer *l, json_t *cfg, const struct layer_meta *below)
{
	static const char *const keys[] = {"root", "key", NULL};
	const char *root = NULL;
	char key[256], dir[PATH_MAX], path[PATH_MAX];
	if (vdisk_cfg_check(cfg, keys) < 0 || vdisk_cfg_string(cfg, "root", &root) < 0)
		return -1;
	if (!root || !*root)
		return vdisk_set_error("root: required (the directory of caches)");
	if (!below)
		return vdisk_set_error("a cache needs a layer below it");
	if (cache_key(cfg, below, key, sizeof key) < 0)
		return -1;
	if (snprintf(dir, sizeof dir, "%s/%s", root, key) >= (int)sizeof dir ||
	    snprintf(path, sizeof path, "%s/cache.dbhd", dir) >= (int)sizeof path)
		return vdisk_set_error("root: path too long");
	if (access(path, F_OK) < 0) {
		if (l->open_read_only)
			return vdisk_set_error("'%s' does not exist and the layer is read-only",
			                       path);
		bool raced;
		if (mkdir_ok(root) < 0 || mkdir_ok(dir) < 0)
			return -1;
		/* two processes may get here at once: one link wins, both use it */
		if (sq_create(path, below->sector_count, below->sector_size, true, &raced) < 0 &&
		    !raced)
			return -1;
	}
	struct sq *s = sq_open_file(path, l->open_read_only);
	if (!s)
		return -1;
	if (s->count != below->sector_count || s->ss != below->sector_size) {
		vdisk_set_error("'%s' caches a disk of %" PRIu64 " %" PRIu32 "-byte sectors; the "
		                "layer below has %" PRIu64 " %" PRIu32 "-byte sectors",
		                path, s->count, s->ss, below->sector_count, below->sector_size);
		sq_free(s);
		return -1;
	}
	set_meta(l, s);
	return 0;
}

struct resize_arg {
	uint64_t count;
	char err[256]; /* the worker's message, for the caller's thread */
};

/* On the worker: a shrink drops what is cut off and lowers the watermark, so
 * a later growth reads zeros rather than what lies below. */
static int sq_resize_worker(struct sq *s, void *arg)
{
	uint64_t count = ((struct resize_arg *)arg)->count;
	uint64_t za = s->zero_after < count ? s->zero_after : count;
	vdisk_status st = vdisk_status_ok();
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	st = write_meta(s, count, za);
	if (vdisk_ok(st) && count < s->count)
		st = delete_range(s, count, s->count);
	if (!vdisk_ok(st) || sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
	s->count = count;
	s->zero_after = za;
	atomic_store(&s->count_pub, count);
	return 0;
fail:
	snprintf(((struct resize_arg *)arg)->err, sizeof((struct resize_arg *)arg)->err, "%s",
	         sqlite3_errmsg(s->db));
	return -1;
}

static int sq_resize(struct layer *l, uint64_t count)
{
	struct sq *s = l->priv;
	if (s->open_ro || s->logically_ro)
		return layered_layer_error(l, "resize: the layer is read-only");
	if (count == 0 || count > (uint64_t)INT64_MAX / s->ss)
		return layered_layer_error(l, "resize: %" PRIu64 " sectors is not a valid size",
		                           count);
	struct resize_arg a = {.count = count};
	if (sq_call(s, sq_resize_worker, &a) < 0)
		return layered_layer_error(l, "resize: '%s': %s", s->path, a.err);
	return 0;
}

struct check_arg {
	struct layer *l;
	struct vdisk_check *chk;
	char err[256];
};

/* On the worker, on the layer's own connection: SQLite's integrity check, and
 * every stored sector's length (a blob of another length reads as a medium
 * error). */
static int sq_check_worker(struct sq *s, void *arg)
{
	struct check_arg *a = arg;
	unsigned idx = a->l->index;
	const char *name = a->l->ops->name;
	sqlite3_stmt *st = NULL;
	/* a failed step shows in sqlite3_finalize()'s result */
	int rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check(20)", -1, &st, NULL);
	while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		const char *msg = (const char *)sqlite3_column_text(st, 0);
		if (msg && strcmp(msg, "ok") != 0)
			vdisk_check_problem(a->chk, "layers[%u] (%s '%s'): integrity check: %s",
			                    idx, name, s->path, msg);
	}
	if (sqlite3_finalize(st) != SQLITE_OK || rc != SQLITE_OK)
		goto fail;
	st = NULL;
	rc = sqlite3_prepare_v2(s->db,
	                        "SELECT sector, length(data) FROM sectors WHERE data IS NOT NULL "
	                        "AND length(data) != ?1 ORDER BY sector",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 1, s->ss);
	uint64_t bad = 0;
	while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		if (++bad <= 10)
			vdisk_check_problem(
			    a->chk, "layers[%u] (%s '%s'): sector %lld: stored %lld bytes, not %u",
			    idx, name, s->path, sqlite3_column_int64(st, 0),
			    sqlite3_column_int64(st, 1), s->ss);
	}
	if (sqlite3_finalize(st) != SQLITE_OK || rc != SQLITE_OK)
		goto fail;
	if (bad > 10)
		vdisk_check_problem(a->chk,
		                    "layers[%u] (%s '%s'): %" PRIu64
		                    " more sectors stored with a wrong length",
		                    idx, name, s->path, bad - 10);
	return 0;
fail:
	snprintf(a->err, sizeof a->err, "%s", sqlite3_errmsg(s->db));
	return -1;
}

static int sq_check(struct layer *l, struct vdisk_check *chk)
{
	struct sq *s = l->priv;
	struct check_arg a = {.l = l, .chk = chk};
	if (sq_call(s, sq_check_worker, &a) < 0)
		return layered_layer_error(l, "check: '%s': %s", s->path, a.err);
	return 0;
}

static uint64_t sq_sector_count(struct layer *l)
{
	struct sq *s = l->priv;
	return atomic_load_explicit(&s->count_pub, memory_order_acquire);
}

static void sq_close(struct layer *l)
{
	sq_free(l->priv);
	l->priv = NULL;
}

static void sq_inspect(struct layer *l, json_t *obj)
{
	struct sq *s = l->priv;
	json_object_set_new(obj, "path", json_string(s->path));
	json_object_set_new(obj, "operations", json_integer((json_int_t)atomic_load(&s->n_jobs)));
	json_object_set_new(obj, "batches", json_integer((json_int_t)atomic_load(&s->n_batches)));
	json_object_set_new(obj, "commits", json_integer((json_int_t)atomic_load(&s->n_commits)));
	json_object_set_new(obj, "syncs", json_integer((json_int_t)atomic_load(&s->n_syncs)));
	json_object_set_new(obj, "errors", json_integer((json_int_t)atomic_load(&s->n_errors)));
}

const struct layer_ops layered_sqlite_ops = {
    .name = "sqlite",
    .open = sq_layer_open,
    .close = sq_close,
    .submit = sq_submit,
    .resize = sq_resize,
    .sector_count = sq_sector_count,
    .inspect = sq_inspect,
    .check = sq_check,
};

const struct layer_ops layered_sqlite_cache_ops = {
    .name = "sqlite-cache",
    .open = sq_cache_open,
    .close = sq_close,
    .submit = sq_submit,
    .sector_count = sq_sector_count,
    .inspect = sq_inspect,
    .check = sq_check,
};
