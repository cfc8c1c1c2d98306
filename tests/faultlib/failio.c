/*
 * failio.so: an LD_PRELOAD shim that makes disk syscalls fail on demand (tests only).
 *
 * Environment (read on every call, so nothing needs initialising):
 *   FAILIO_MATCH          substring of a file's path; only matching fds are affected
 *   FAILIO_FSYNC_TRIGGER  while this file exists, fsync/fdatasync on a matching fd
 *                         fail with EIO
 *   FAILIO_WRITE_TRIGGER  while this file exists, write and pwrite on a matching fd fail
 *                         with ENOSPC
 *   FAILIO_SHORT_TRIGGER  while this file exists, write and pwrite on a matching fd write
 *                         only the first half of the buffer and return that short count,
 *                         as write(2) may near a full disk (callers must loop)
 * Removing a trigger file heals the fault. Each injected failure is reported as one line
 * on stderr ("failio: injected EIO into fdatasync fd=5 path=...") so a test can prove
 * the failure it observed was the injected one.
 *
 * Build: gcc -shared -fPIC -O2 -o failio.so failio.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*sync_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);

/* The next definition of `name` after this library (libc's), looked up once. */
static void *real(void **cache, const char *name) {
    if (*cache == NULL)
        *cache = dlsym(RTLD_NEXT, name);
    return *cache;
}

/* True when the trigger named by env var `trigger_var` exists and fd's path matches.
 * errno is preserved: callers that succeed must not see errno changed by our probes. */
static int should_fail(int fd, const char *trigger_var, char *path, size_t path_size) {
    const char *trigger = getenv(trigger_var);
    const char *match = getenv("FAILIO_MATCH");
    int saved = errno;
    int hit = 0;
    if (trigger != NULL && match != NULL && access(trigger, F_OK) == 0) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, path_size - 1);
        if (n > 0) {
            path[n] = '\0';
            hit = strstr(path, match) != NULL;
        }
    }
    errno = saved;
    return hit;
}

/* One line on stderr (fd 2, through libc's write so it is never itself failed). */
static void report(const char *call, const char *err, int fd, const char *path) {
    static void *real_write;
    char line[512];
    int n = snprintf(line, sizeof line, "failio: injected %s into %s fd=%d path=%s\n",
                     err, call, fd, path);
    write_fn w = (write_fn)real(&real_write, "write");
    if (w != NULL && n > 0)
        (void)!w(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Shared body of fsync and fdatasync. */
static int failing_sync(int fd, const char *name, void **cache) {
    char path[4096];
    if (should_fail(fd, "FAILIO_FSYNC_TRIGGER", path, sizeof path)) {
        report(name, "EIO", fd, path);
        errno = EIO;
        return -1;
    }
    sync_fn f = (sync_fn)real(cache, name);
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return f(fd);
}

int fsync(int fd) {
    static void *cache;
    return failing_sync(fd, "fsync", &cache);
}

int fdatasync(int fd) {
    static void *cache;
    return failing_sync(fd, "fdatasync", &cache);
}

ssize_t write(int fd, const void *buf, size_t count) {
    static void *cache;
    char path[4096];
    if (fd > 2 && should_fail(fd, "FAILIO_WRITE_TRIGGER", path, sizeof path)) {
        report("write", "ENOSPC", fd, path);
        errno = ENOSPC;
        return -1;
    }
    write_fn f = (write_fn)real(&cache, "write");
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (count > 1 && fd > 2 && should_fail(fd, "FAILIO_SHORT_TRIGGER", path, sizeof path)) {
        report("write", "a short count", fd, path);
        count /= 2; /* a legal partial write: the caller must write the rest */
    }
    return f(fd, buf, count);
}

/* Shared body of pwrite and pwrite64 (the WAL writes at offsets since issue 18). */
static ssize_t failing_pwrite(int fd, const void *buf, size_t count, off_t offset,
                              const char *name, void **cache) {
    char path[4096];
    if (fd > 2 && should_fail(fd, "FAILIO_WRITE_TRIGGER", path, sizeof path)) {
        report(name, "ENOSPC", fd, path);
        errno = ENOSPC;
        return -1;
    }
    pwrite_fn f = (pwrite_fn)real(cache, name);
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (count > 1 && fd > 2 && should_fail(fd, "FAILIO_SHORT_TRIGGER", path, sizeof path)) {
        report(name, "a short count", fd, path);
        count /= 2;
    }
    return f(fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    static void *cache;
    return failing_pwrite(fd, buf, count, offset, "pwrite", &cache);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    static void *cache;
    return failing_pwrite(fd, buf, count, offset, "pwrite64", &cache);
}
