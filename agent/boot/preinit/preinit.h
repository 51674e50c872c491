#ifndef SEALPOD_PREINIT_H
#define SEALPOD_PREINIT_H

#define SEALPOD_PREINIT_PATH "/init"
#define SEALPOD_PREINIT_NAME "sealpod-agent"

// sealpod_preinit_clone copies the regular file at path into a new sealed memfd (close on
// exec) and returns it, or -1 with errno set.
int sealpod_preinit_clone(const char *path);

// sealpod_preinit_wanted reports whether this process is the kernel's /init on the initial
// ramfs (PID 1, executed as "/init" (AT_EXECFN), "/" a ramfs or tmpfs).
int sealpod_preinit_wanted(int argc, char **argv);

#endif
