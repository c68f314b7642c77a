#ifndef PORTCULLIS_FASTSCAN_H
#define PORTCULLIS_FASTSCAN_H

#include <stddef.h>
#include <stdint.h>

/// Index of the first byte in p[from..<n] that is one of set[0..<k] (k <= 16), or n when there is none.
/// Sixteen bytes are compared against every byte of the set at once (SSE2 on x86-64).
size_t pc_find_any_byte(const uint8_t *p, size_t n, size_t from, const uint8_t *set, size_t k);

/// Whether p[0..<n] holds only bytes below 0x80.
int pc_is_ascii(const uint8_t *p, size_t n);

#endif

#ifndef PORTCULLIS_FASTSCAN_PROBE
#define PORTCULLIS_FASTSCAN_PROBE
/// A string to look for, found by its anchor: the two bytes `bytes[offset]`, `bytes[offset + 1]`.
typedef struct {
    const uint8_t *bytes;
    uint32_t length;
    uint32_t offset;
} pc_probe;

/// Whether p[0..<n] contains any probe's string, in one pass. `pairs` holds the k distinct anchor byte pairs
/// (2k bytes, k <= 16); a position where one occurs is checked against the probes anchored on it.
int pc_contains_any(const uint8_t *p, size_t n, const uint8_t *pairs, size_t k, const pc_probe *probes, size_t count);
#endif

/// A compiled set of probes (nil for none) for `pc_screen_scan`: AVX2 nibble lookups where the CPU has them and
/// `vectorised` is set, `pc_contains_any` otherwise (the tests compare both).
typedef struct pc_screen pc_screen;
pc_screen *pc_screen_create(const pc_probe *probes, size_t count, int vectorised);
void pc_screen_free(pc_screen *screen);

/// Set in `pc_screen_scan`'s result when p[0..<n] holds a byte above 0x7F.
#define PC_SCREEN_NON_ASCII 2
/// Bit 0: p[0..<n] contains one of the screen's strings; `PC_SCREEN_NON_ASCII`: it is not pure ASCII. One pass.
int pc_screen_scan(const pc_screen *screen, const uint8_t *p, size_t n);

/// Adds the byte counts of p[0..<n] to counts[256].
void pc_count_bytes(const uint8_t *p, size_t n, uint32_t *counts);
