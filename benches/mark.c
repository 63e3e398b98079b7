/*
 * mark FILE: the COMMAND that compare.sh starts to learn when a daemon
 * tool has actually exec'd it.
 *
 * The first thing it does is read CLOCK_REALTIME (the clock behind bash's
 * $EPOCHREALTIME, which the script reads just before launching the tool),
 * write it to FILE atomically (FILE.tmp, then rename), and then wait for a
 * signal forever, like `sleep 1000` would.
 */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec ts;
	char line[64], tmp[4096];
	int fd, n;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (argc != 2)
		return 2;
	n = snprintf(line, sizeof line, "%lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
	snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, n) != n || close(fd) != 0 || rename(tmp, argv[1]) != 0)
		return 1;
	for (;;)
		pause();
}
