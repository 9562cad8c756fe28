/* log.c — one line per message on log_fd (stderr), with a wall-clock stamp. */
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level = LOG_INFO;
int log_fd = 2;

void log_msg(int level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	if (level > log_level)
		return;
	char line[1024];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n = (int)strftime(line, sizeof line, "%H:%M:%S", &tm);
	n += snprintf(line + n, sizeof line - (size_t)n, ".%03ld %s: ", ts.tv_nsec / 1000000, names[level]);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len] = '\n';
	/* One write per line: lines of concurrent threads do not interleave. */
	if (write(log_fd, line, len + 1) < 0) {
		/* nowhere left to report it */
	}
}
