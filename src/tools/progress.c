/* The progress bar of long commands (convert, compare). */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void tool_progress_start(struct tool_progress *p, const char *what, uint64_t total)
{
	p->tty = isatty(2);
	p->total = total ? total : 1;
	p->last_ns = 0;
	p->last_pct = -1;
	p->what = what;
	tool_progress_update(p, 0);
}

void tool_progress_update(struct tool_progress *p, uint64_t done)
{
	if (!p->tty)
		return;
	int pct = (int)(done * 100 / p->total);
	uint64_t now = mono_ns();
	if (pct == p->last_pct || (now - p->last_ns < 100000000 && pct != 100))
		return;
	p->last_pct = pct;
	p->last_ns = now;
	char bar[41];
	int fill = pct * 40 / 100;
	for (int i = 0; i < 40; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[40] = '\0';
	fprintf(stderr, "\r%s [%s] %3d%%", p->what, bar, pct);
	fflush(stderr);
}

void tool_progress_end(struct tool_progress *p)
{
	if (!p->tty)
		return;
	tool_progress_update(p, p->total);
	fputc('\n', stderr);
}
