/* progress.c — a one-line progress bar with rate and ETA, redrawn ≤ 10×/s. */
#include "cli.h"

#include <stdio.h>
#include <unistd.h>

void progress_init(progress *p, const char *label, uint64_t total, bool quiet)
{
	p->on = !quiet && isatty(STDERR_FILENO);
	p->label = label;
	p->total = total;
	p->done = 0;
	p->start = p->last = now_mono();
}

static void draw(progress *p, double now)
{
	char done[16], rate[16], eta[16];
	double secs = now - p->start;
	double bps = secs > 0 ? (double)p->done / secs : 0;
	double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
	int width = 24, fill = (int)(pct * width / 100);
	char bar[32];
	for (int i = 0; i < width; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[width] = 0;
	fmt_size(p->done, done);
	fmt_size((uint64_t)bps, rate);
	fmt_duration(bps > 0 ? (double)(p->total - p->done) / bps : -1, eta);
	fprintf(stderr, "\r%-24.24s [%s] %5.1f%% %10s %10s/s ETA %s ", p->label, bar, pct, done, rate, eta);
}

void progress_update(progress *p, uint64_t done)
{
	p->done = done;
	if (!p->on)
		return;
	double now = now_mono();
	if (now - p->last < 0.1)
		return;
	p->last = now;
	draw(p, now);
}

void progress_end(progress *p)
{
	if (!p->on)
		return;
	draw(p, now_mono());
	fputc('\n', stderr);
}
