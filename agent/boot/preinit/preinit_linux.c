// The agent's first stage in C (see preinit.go): when the kernel starts the agent as /init, a
// constructor copies the binary into a sealed memfd, unlinks /init and executes the copy
// before the Go runtime of the first stage ever starts. A failure before the exec leaves
// everything to the Go first stage (boot.RunFromSealedCopy), which does the same, slower.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "preinit.h"

// The seals runc's exeseal.IsCloned requires (baseMemfdSeals): the agent is then recognised
// as already cloned, and libcontainer starts container inits and execs from it without a copy.
#define SEALPOD_PREINIT_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

// A constant message and an errno name: nothing else reaches the (host-visible) console.
static void sealpod_preinit_warn(const char *what)
{
	char buf[160];
	int n = snprintf(buf, sizeof buf, "sealpod-agent: preinit: %s: %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "unknown");
	if (n > 0)
		(void)!write(2, buf, (size_t)n);
}

int sealpod_preinit_clone(const char *path)
{
	int src = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (src < 0)
		return -1;
	struct stat st;
	if (fstat(src, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
		if (errno == 0)
			errno = EINVAL;
		close(src);
		return -1;
	}
	int mfd = memfd_create(SEALPOD_PREINIT_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0) {
		close(src);
		return -1;
	}
	off_t left = st.st_size;
	while (left > 0) {
		ssize_t n = sendfile(mfd, src, NULL, (size_t)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO; // the file shrank under us
			close(src);
			close(mfd);
			return -1;
		}
		left -= n;
	}
	close(src);
	if (fcntl(mfd, F_ADD_SEALS, SEALPOD_PREINIT_SEALS) != 0) {
		close(mfd);
		return -1;
	}
	return mfd;
}

int sealpod_preinit_wanted(int argc, char **argv)
{
	if (getpid() != 1 || argc < 1 || argv == NULL || argv[0] == NULL)
		return 0;
	// The path the kernel executed (not argv[0], which the executing process chooses): the
	// kernel runs "/init"; libcontainer's runc init, the pause process and the Go first stage
	// execute /proc/self/exe or a /proc/self/fd path.
	const char *execfn = (const char *)getauxval(AT_EXECFN);
	if (execfn == NULL || strcmp(execfn, SEALPOD_PREINIT_PATH) != 0)
		return 0;
	// Only the initial ramfs: a root switched already, or a container's root, never.
	struct statfs sfs;
	if (statfs("/", &sfs) != 0)
		return 0;
	return sfs.f_type == RAMFS_MAGIC || sfs.f_type == TMPFS_MAGIC;
}

// glibc calls init_array functions with argc, argv and envp (static binaries too).
__attribute__((constructor)) static void sealpod_preinit(int argc, char **argv, char **envp)
{
	if (!sealpod_preinit_wanted(argc, argv))
		return;
	int mfd = sealpod_preinit_clone(SEALPOD_PREINIT_PATH);
	if (mfd < 0) {
		sealpod_preinit_warn("copy /init into a sealed memfd");
		return;
	}
	// The copy runs from now on: the initramfs file goes, so that nothing of the agent stays
	// reachable by path (boot.LeaveInitramfs then moves only the rest of the initramfs).
	if (unlink(SEALPOD_PREINIT_PATH) != 0) {
		sealpod_preinit_warn("unlink /init");
		close(mfd);
		return;
	}
	argv[0] = SEALPOD_PREINIT_NAME;
	syscall(SYS_execveat, mfd, "", argv, envp, AT_EMPTY_PATH);
	// Still here: the Go first stage copies the (unlinked, still mapped) binary itself.
	sealpod_preinit_warn("execute the sealed copy");
	close(mfd);
}
