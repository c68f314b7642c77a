#define _GNU_SOURCE
#include "pc_platform.h"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

int pc_open_node(const char *path) { return open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC); }

int pc_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int pc_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int pc_epoll_wait(int epfd, pc_event *out, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        out[i].events = evs[i].events;
        out[i].data = evs[i].data.u64;
    }
    return n;
}

int pc_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int pc_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int pc_name_this_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }

int pc_malloc_trim(void) { return malloc_trim(0); }

int pc_tune_malloc(int mmap_threshold, int arenas) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_ARENA_MAX, arenas) == 1;
}
