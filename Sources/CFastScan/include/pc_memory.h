#ifndef PORTCULLIS_MEMORY_H
#define PORTCULLIS_MEMORY_H

#include <malloc.h>

/// Returns free heap memory to the system (glibc's `malloc_trim`, which Swift's Glibc module does not export).
static inline int pc_malloc_trim(void) { return malloc_trim(0); }

/// Makes the daemon's memory follow its load: glibc raises its mmap threshold after large blocks are freed (so
/// the tables that grow during a ban storm end up in the heap, where fragmentation keeps them from being given
/// back), and gives every thread its own arena. A fixed threshold keeps large tables in mmap (returned whole when
/// freed); two arenas bound fragmentation across the watcher, ban-manager and API threads.
static inline void pc_tune_malloc(void) {
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_ARENA_MAX, 2);
}

#endif
