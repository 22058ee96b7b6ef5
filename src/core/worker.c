/* The worker pool: blocking work (SQLite, HTTP, a busy fsync) runs here and
 * completes back on the submitting queue through its remote list. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

#define WORKERS 4

static pthread_mutex_t wlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wcond = PTHREAD_COND_INITIALIZER;
static struct vdisk_req *jobs_head, **jobs_tail = &jobs_head;
static unsigned nworkers;

static void *worker_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&wlock);
		while (!jobs_head)
			pthread_cond_wait(&wcond, &wlock);
		struct vdisk_req *r = jobs_head;
		jobs_head = r->internal.next;
		if (!jobs_head)
			jobs_tail = &jobs_head;
		pthread_mutex_unlock(&wlock);
		r->internal.next = NULL;
		vdisk_status st = r->internal.work(r);
		vd_complete_remote(r, st);
	}
	return NULL;
}

VD_EXPORT int vdisk_offload(struct vdisk_req *r, vdisk_status (*work)(struct vdisk_req *r))
{
	pthread_mutex_lock(&wlock);
	while (nworkers < WORKERS) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		int rc = pthread_create(&t, &a, worker_main, NULL);
		pthread_attr_destroy(&a);
		if (rc) {
			if (nworkers)
				break;
			pthread_mutex_unlock(&wlock);
			return -rc;
		}
		nworkers++;
	}
	r->internal.work = work;
	r->internal.next = NULL;
	*jobs_tail = r;
	jobs_tail = &r->internal.next;
	r->q->remote_expected++;
	pthread_cond_signal(&wcond);
	pthread_mutex_unlock(&wlock);
	return 0;
}
