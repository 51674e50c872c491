// The pod's pause process in C, run from a constructor before the Go runtime starts (see
// pause.go). It does what the Go pause() in init.go does, in the same order, and is selected by
// the same argument and environment; a build without cgo runs the Go version.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void sealpod_pause_fail(const char *what)
{
	char buf[160];
	int n = snprintf(buf, sizeof buf, "sealpod-pause: %s: %s\n", what, strerror(errno));
	if (n > 0)
		(void)!write(2, buf, (size_t)n);
	_exit(1);
}

static void sealpod_pause_nop(int sig) { (void)sig; }

// glibc calls init_array functions with argc, argv and envp (static binaries too).
__attribute__((constructor)) static void sealpod_pause(int argc, char **argv, char **envp)
{
	(void)envp;
	if (argc < 2 || argv == NULL || argv[1] == NULL || strcmp(argv[1], "sealpod-pause") != 0)
		return;
	const char *on = getenv("_SEALPOD_PAUSE");
	if (on == NULL || strcmp(on, "1") != 0)
		return;

	const char *host = getenv("_SEALPOD_HOSTNAME");
	if (host != NULL && host[0] != '\0' && sethostname(host, strlen(host)) != 0)
		sealpod_pause_fail("sethostname");
	const char *root = getenv("_SEALPOD_PAUSE_ROOT");
	if (root != NULL && root[0] != '\0') {
		if (chroot(root) != 0)
			sealpod_pause_fail("chroot");
		if (chdir("/") != 0)
			sealpod_pause_fail("chdir");
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		sealpod_pause_fail("set non-dumpable");
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
			sealpod_pause_fail("drop bounding capability");
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data) != 0)
		sealpod_pause_fail("capset");

	// PID 1 of a PID namespace gets only the signals it has a handler for: install one, block
	// the signals and take them with sigwait.
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = sealpod_pause_nop;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGCHLD, &sa, NULL) != 0)
		sealpod_pause_fail("sigaction");
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		sealpod_pause_fail("sigprocmask");

	if (write(1, "ready\n", 6) != 6)
		_exit(1);
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		(void)dup2(fd, 1);
		close(fd);
	}
	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGCHLD) {
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			continue;
		}
		_exit(0);
	}
}
