#ifndef PORTCULLIS_MEMORY_H
#define PORTCULLIS_MEMORY_H

#include <malloc.h>

/// Returns free heap memory to the system (glibc's `malloc_trim`, which Swift's Glibc module does not export).
static inline int pc_malloc_trim(void) { return malloc_trim(0); }

#endif
