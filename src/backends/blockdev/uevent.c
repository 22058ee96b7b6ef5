/* The resize listener: one thread per process reading the kernel's
 * NETLINK_KOBJECT_UEVENT socket, shared by every open block device.
 *
 * A "change" event with RESIZE=1 for a device's MAJOR:MINOR makes every disk
 * open on that device re-read its size (BLKGETSIZE64) and publish it with
 * vdisk_set_sector_count(), which wakes vdisk_wait_resize() waiters.  The
 * socket can overflow when events come faster than they are read (ENOBUFS):
 * the events lost may have been resizes, so then every device is re-read.
 * Only messages from the kernel (sender port 0) count: anyone may send to the
 * multicast group from user space.
 *
 * Locks: `life` serialises starting and stopping the thread; `lock` guards the
 * list of watches and is held while the thread publishes a size, so that
 * blk_watch_del() returning means the thread is done with that disk.  The
 * thread never takes `life`. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/netlink.h>

#include "blockdev.h"

static pthread_mutex_t life = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct blk_watch *watches;
static unsigned users;
static int nl_fd = -1, stop_fd = -1;
static pthread_t thread;

void blk_watch_refresh(struct blk_watch *w)
{
	uint64_t bytes;
	if (blk_size(w->fd, &bytes) < 0)
		return; /* a device that went away keeps its last size */
	uint64_t count = bytes >> w->shift;
	if (count != vdisk_sector_count(w->d))
		vdisk_set_sector_count(w->d, count);
}

static bool value_is(const char *kv, const char *key, const char *want)
{
	size_t n = strlen(key);
	return strncmp(kv, key, n) == 0 && kv[n] == '=' && strcmp(kv + n + 1, want) == 0;
}

/* The decimal value of KEY=N in kv, or -1. */
static long number_of(const char *kv, const char *key)
{
	size_t n = strlen(key);
	if (strncmp(kv, key, n) != 0 || kv[n] != '=' || !kv[n + 1])
		return -1;
	char *end;
	errno = 0;
	unsigned long v = strtoul(kv + n + 1, &end, 10);
	if (*end || errno || v > 0xfffff)
		return -1;
	return (long)v;
}

int blk_uevent_parse(const char *msg, size_t len, dev_t *dev)
{
	bool change = false, block = false, resize = false;
	long maj = -1, min = -1;
	size_t i = 0;
	/* the first string is the header "ACTION@DEVPATH"; fields follow */
	while (i < len && msg[i])
		i++;
	while (++i < len) {
		const char *kv = msg + i;
		size_t n = strnlen(kv, len - i);
		if (n == len - i)
			break; /* not NUL-terminated: ignore the fragment */
		if (value_is(kv, "ACTION", "change"))
			change = true;
		else if (value_is(kv, "SUBSYSTEM", "block"))
			block = true;
		else if (value_is(kv, "RESIZE", "1"))
			resize = true;
		else if (number_of(kv, "MAJOR") >= 0)
			maj = number_of(kv, "MAJOR");
		else if (number_of(kv, "MINOR") >= 0)
			min = number_of(kv, "MINOR");
		i += n;
	}
	if (!(change && block && resize && maj >= 0 && min >= 0))
		return 0;
	*dev = makedev((unsigned)maj, (unsigned)min);
	return 1;
}

/* Re-read every watch of dev, or every watch if all is set. */
static void refresh(dev_t dev, bool all)
{
	pthread_mutex_lock(&lock);
	for (struct blk_watch *w = watches; w; w = w->next)
		if (all || w->rdev == dev)
			blk_watch_refresh(w);
	pthread_mutex_unlock(&lock);
}

/* Read what the socket holds.  False when the thread is to stop. */
static bool drain(void)
{
	char buf[8192];
	for (;;) {
		struct sockaddr_nl from;
		struct iovec iov = {buf, sizeof buf};
		struct msghdr mh = {.msg_name = &from,
		                    .msg_namelen = sizeof from,
		                    .msg_iov = &iov,
		                    .msg_iovlen = 1};
		ssize_t n = recvmsg(nl_fd, &mh, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n < 0) {
			int err = errno;
			/* ENOBUFS: events were lost; any of them may have been a
			 * resize, so look at every device again */
			refresh(0, true);
			if (err == ENOBUFS)
				continue;
			return false;
		}
		dev_t dev;
		if (from.nl_pid == 0 && !(mh.msg_flags & MSG_TRUNC) &&
		    blk_uevent_parse(buf, (size_t)n, &dev))
			refresh(dev, false);
	}
}

static void *listener_main(void *arg)
{
	(void)arg;
	struct pollfd p[2] = {{.fd = nl_fd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (p[0].revents && !drain())
			break;
	}
	return NULL;
}

static bool start(void)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
	nl_fd =
	    socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
	if (nl_fd < 0)
		return false;
	/* room for a burst (a partition table rescan sends dozens) */
	int sz = 1 << 20;
	setsockopt(nl_fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	stop_fd = eventfd(0, EFD_CLOEXEC);
	if (bind(nl_fd, (struct sockaddr *)&sa, sizeof sa) < 0 || stop_fd < 0)
		goto fail;
	sigset_t all, old;
	sigfillset(&all);
	/* the thread takes no signals of the application */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&thread, NULL, listener_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0) {
		pthread_setname_np(thread, "vdisk-uevent");
		return true;
	}
fail:
	close(nl_fd);
	if (stop_fd >= 0)
		close(stop_fd);
	nl_fd = stop_fd = -1;
	return false;
}

static void stop(void)
{
	uint64_t one = 1;
	if (write(stop_fd, &one, sizeof one) != sizeof one)
		abort(); /* an eventfd write of 1 cannot fail */
	pthread_join(thread, NULL);
	close(nl_fd);
	close(stop_fd);
	nl_fd = stop_fd = -1;
}

bool blk_watch_add(struct blk_watch *w)
{
	pthread_mutex_lock(&life);
	if (users == 0 && !start()) {
		pthread_mutex_unlock(&life);
		return false;
	}
	users++;
	pthread_mutex_lock(&lock);
	w->next = watches;
	watches = w;
	pthread_mutex_unlock(&lock);
	pthread_mutex_unlock(&life);
	return true;
}

void blk_watch_del(struct blk_watch *w)
{
	pthread_mutex_lock(&life);
	pthread_mutex_lock(&lock);
	for (struct blk_watch **pp = &watches; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	pthread_mutex_unlock(&lock);
	if (--users == 0)
		stop();
	pthread_mutex_unlock(&life);
}
