#ifndef SNAPIMPORT_CFILESYSTEM_SHIM_H
#define SNAPIMPORT_CFILESYSTEM_SHIM_H
// Linux file calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module is built
// without: hole punching (the block store frees a collected block's range in its pack) and starting
// writeback of a range early (so the sync before a commit mostly waits for I/O already under way).
#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>

#if defined(__linux__)
extern int fallocate(int fd, int mode, off_t offset, off_t len);
extern int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags);

/// O_DIRECT (glibc defines the name only under _GNU_SOURCE; __O_DIRECT is the per-architecture value).
static inline int snapimport_o_direct(void) {
    return __O_DIRECT;
}

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the range reads as zeros, its space is freed.
static inline int snapimport_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, 0x02 /* PUNCH_HOLE */ | 0x01 /* KEEP_SIZE */, offset, length);
}

/// fallocate(mode 0): allocate the range, extending the file's size to cover it.
static inline int snapimport_preallocate(int fd, off_t offset, off_t length) {
    return fallocate(fd, 0, offset, length);
}

/// sync_file_range(SYNC_FILE_RANGE_WRITE): queue the range's dirty pages for writeback, no waiting.
static inline int snapimport_start_writeback(int fd, off_t offset, off_t length) {
    return sync_file_range(fd, offset, length, 2 /* SYNC_FILE_RANGE_WRITE */);
}
#else
static inline int snapimport_o_direct(void) {
    return 0;
}

static inline int snapimport_punch_hole(int fd, off_t offset, off_t length) {
    (void)fd; (void)offset; (void)length;
    errno = EOPNOTSUPP;
    return -1;
}

static inline int snapimport_preallocate(int fd, off_t offset, off_t length) {
    (void)fd; (void)offset; (void)length;
    errno = EOPNOTSUPP;
    return -1;
}

static inline int snapimport_start_writeback(int fd, off_t offset, off_t length) {
    (void)fd; (void)offset; (void)length;
    return 0;
}
#endif
#endif
