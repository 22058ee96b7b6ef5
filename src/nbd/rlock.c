/* Sector range locks between the requests that change the disk, on every
 * connection and worker: an unaligned write, write-zeroes or trim is a
 * read-modify-write of its partial sectors, and nothing else may change those
 * sectors between its read and its write, or one client's bytes are lost.
 *
 * Two kinds of holder.  Plain (aligned) writes only keep out of the way of
 * read-modify-writes: they overlap each other freely, as before.  A
 * read-modify-write waits for every older overlapping holder of either kind,
 * and every younger overlapping holder waits for it.
 *
 * Aligned writes are the data path, so while no read-modify-write exists
 * (s->rl_rmw == 0) they register on their own worker's list under the
 * worker's own mutex, which nobody else takes: no shared cache line.  A
 * read-modify-write raises s->rl_rmw before it looks at the workers' lists
 * (taking each list's mutex), so an aligned write either is in a list it
 * looks at, or, registering after, sees the count and takes the slow path:
 * the server's ordered list, under the server's mutex.
 *
 * A holder that must wait is woken by the release of the holders it waits
 * for: the release re-examines every waiter (waits are rare: they need two
 * clients writing one sector at once), and hands each one that may go to its
 * own worker, which resumes it on its own thread (nbd_rlock_run_ready()).
 * Lock order: s->rl_lock, then a worker's rl_lock; w->lock alone. */
#include <unistd.h>

#include "nbd/server.h"

static bool overlaps(const struct nbd_rlock *a, const struct nbd_rlock *b)
{
	return a->start < b->end && b->start < a->end;
}

/* Must l wait?  Marks what it waits for.  Under s->rl_lock. */
static bool must_wait(struct nbd_server *s, struct nbd_rlock *l)
{
	bool wait = false;
	for (struct nbd_rlock *e = s->rl_head; e && e != l; e = e->next) {
		if ((l->rmw || e->rmw) && overlaps(e, l)) {
			e->waited_on = true;
			wait = true;
		}
	}
	if (!l->rmw)
		return wait;
	/* every aligned write on a worker's list is older than l: none registers
	 * there while a read-modify-write exists */
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct nbd_worker *w = &s->workers[i];
		pthread_mutex_lock(&w->rl_lock);
		for (struct nbd_rlock *e = w->rl_list; e; e = e->next) {
			if (overlaps(e, l)) {
				e->waited_on = true;
				wait = true;
			}
		}
		pthread_mutex_unlock(&w->rl_lock);
	}
	return wait;
}

static void append_global(struct nbd_server *s, struct nbd_rlock *l)
{
	l->global = true;
	l->next = NULL;
	l->prev = s->rl_tail;
	if (s->rl_tail)
		s->rl_tail->next = l;
	else
		s->rl_head = l;
	s->rl_tail = l;
}

/* Waiters that may go now, on a list for dispatch().  Under s->rl_lock. */
static struct nbd_rlock *recheck(struct nbd_server *s)
{
	struct nbd_rlock *ready = NULL, **tail = &ready;
	for (struct nbd_rlock *e = s->rl_head; e; e = e->next) {
		if (!e->waiting || must_wait(s, e))
			continue;
		e->waiting = false;
		e->ready_next = NULL;
		*tail = e;
		tail = &e->ready_next;
	}
	return ready;
}

static void dispatch(struct nbd_rlock *ready)
{
	while (ready) {
		struct nbd_rlock *l = ready;
		ready = l->ready_next;
		struct nbd_worker *w = l->w;
		pthread_mutex_lock(&w->lock);
		l->ready_next = w->rl_ready;
		w->rl_ready = l;
		pthread_mutex_unlock(&w->lock);
		uint64_t one = 1;
		ssize_t rc = write(w->wake_fd, &one, sizeof one);
		(void)rc; /* an eventfd already set is as good */
	}
}

bool nbd_rlock_acquire(struct nbd_worker *w, struct nbd_rlock *l)
{
	struct nbd_server *s = w->srv;
	l->w = w;
	l->waiting = false;
	l->waited_on = false;
	if (!l->rmw) {
		pthread_mutex_lock(&w->rl_lock);
		if (atomic_load(&s->rl_rmw) == 0) {
			l->global = false;
			l->prev = NULL;
			l->next = w->rl_list;
			if (w->rl_list)
				w->rl_list->prev = l;
			w->rl_list = l;
			pthread_mutex_unlock(&w->rl_lock);
			return true;
		}
		pthread_mutex_unlock(&w->rl_lock);
	}
	pthread_mutex_lock(&s->rl_lock);
	if (l->rmw)
		atomic_fetch_add(&s->rl_rmw, 1);
	append_global(s, l);
	l->waiting = must_wait(s, l);
	bool go = !l->waiting;
	pthread_mutex_unlock(&s->rl_lock);
	return go;
}

void nbd_rlock_release(struct nbd_worker *w, struct nbd_rlock *l)
{
	struct nbd_server *s = w->srv;
	struct nbd_rlock *ready = NULL;
	if (!l->global) {
		pthread_mutex_lock(&w->rl_lock);
		if (l->prev)
			l->prev->next = l->next;
		else
			w->rl_list = l->next;
		if (l->next)
			l->next->prev = l->prev;
		bool waited = l->waited_on;
		pthread_mutex_unlock(&w->rl_lock);
		if (!waited)
			return;
		pthread_mutex_lock(&s->rl_lock);
		ready = recheck(s);
		pthread_mutex_unlock(&s->rl_lock);
	} else {
		pthread_mutex_lock(&s->rl_lock);
		if (l->prev)
			l->prev->next = l->next;
		else
			s->rl_head = l->next;
		if (l->next)
			l->next->prev = l->prev;
		else
			s->rl_tail = l->prev;
		if (l->rmw)
			atomic_fetch_sub(&s->rl_rmw, 1);
		if (l->waited_on)
			ready = recheck(s);
		pthread_mutex_unlock(&s->rl_lock);
	}
	dispatch(ready);
}

void nbd_rlock_run_ready(struct nbd_worker *w)
{
	pthread_mutex_lock(&w->lock);
	struct nbd_rlock *list = w->rl_ready;
	w->rl_ready = NULL;
	pthread_mutex_unlock(&w->lock);
	while (list) {
		struct nbd_rlock *l = list;
		list = l->ready_next;
		l->go(l);
	}
}
