#ifndef PORTCULLIS_PLATFORM_H
#define PORTCULLIS_PLATFORM_H

// The Linux calls Swift's Glibc module does not export (GNU extensions, packed structs, static inlines), wrapped
// with plain types. Only `Platform` calls these; everything above it uses its Swift types.

#include <stdint.h>

/// One ready file descriptor: its epoll events and the 64-bit value registered with it (epoll_event is a packed
/// struct on x86-64, which Swift cannot import as such).
typedef struct {
    uint32_t events;
    uint64_t data;
} pc_event;

enum {
    PC_EPOLLIN = 0x001,
    PC_EPOLLOUT = 0x004,
    PC_EPOLLERR = 0x008,
    PC_EPOLLHUP = 0x010,
    PC_EPOLLRDHUP = 0x2000,
    /// Only one of the epoll sets sharing a listening socket is woken per connection (Linux 4.5).
    PC_EPOLLEXCLUSIVE = 1u << 28,
};

/// epoll_ctl's operations (EPOLL_CTL_*).
enum {
    PC_EPOLL_ADD = 1,
    PC_EPOLL_DEL = 2,
    PC_EPOLL_MOD = 3,
};

/// A close-on-exec epoll set; -1 with errno.
int pc_epoll_create(void);
/// op: PC_EPOLL_ADD, PC_EPOLL_DEL or PC_EPOLL_MOD; 0, or -1 with errno.
int pc_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Fills up to `max` events (at most 256); returns their number, 0 on timeout, -1 with errno.
int pc_epoll_wait(int epfd, pc_event *events, int max, int timeout_ms);

/// A non-blocking, close-on-exec eventfd; -1 with errno.
int pc_eventfd(void);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; -1 with errno.
int pc_accept(int fd);
/// open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC): the node itself, a symlink not followed (O_PATH is _GNU_SOURCE).
int pc_open_node(const char *path);

/// Names the calling thread (at most 15 bytes show: `top -H`, sanitizer reports): pthread_setname_np is a GNU
/// extension. Returns 0 or an errno.
int pc_name_this_thread(const char *name);

/// Returns free heap memory to the system (glibc's malloc_trim).
int pc_malloc_trim(void);
/// mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_ARENA_MAX, arenas); 1 when both were taken.
int pc_tune_malloc(int mmap_threshold, int arenas);

#endif
