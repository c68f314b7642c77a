#include "fastscan.h"
#include <stdlib.h>
#include <string.h>

// A multi-string screen after Hyperscan's "Teddy": every string has an anchor (two neighbouring bytes) and a
// bucket (one of eight bits). For each byte value, a 16-entry table per nibble says which buckets' anchors
// begin (or continue) with it; a pshufb looks the nibbles of 32 bytes up at once. With at most one string per
// bucket the nibble tables are exact, so a lane that survives the four lookups holds an anchor and only the full
// string compare remains.

struct pc_screen {
    uint8_t lo1[32], hi1[32], lo2[32], hi2[32];  // nibble tables, the 16 entries twice (one per AVX2 lane)
    pc_probe *probes;
    size_t count;
    uint8_t *bucketOf;  // per probe, its bucket's bit (probes share the eight buckets round-robin)
    int avx2;
    // The SSE2 fallback's inputs.
    uint8_t pairs[32];
    size_t pairCount;
    int tooManyPairs;  // more than 16 distinct anchors: the fallback cannot rule lines out
};

pc_screen *pc_screen_create(const pc_probe *probes, size_t count, int vectorised) {
    if (count == 0) return NULL;
    pc_screen *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->probes = malloc(count * sizeof *probes);
    s->bucketOf = malloc(count);
    if (!s->probes || !s->bucketOf) { pc_screen_free(s); return NULL; }
    memcpy(s->probes, probes, count * sizeof *probes);
    s->count = count;
    for (size_t i = 0; i < count; i++) {
        uint8_t a = probes[i].bytes[probes[i].offset], b = probes[i].bytes[probes[i].offset + 1];
        uint8_t bit = (uint8_t)(1u << (i % 8));
        s->bucketOf[i] = bit;
        for (int half = 0; half < 32; half += 16) {
            s->lo1[half + (a & 15)] |= bit;
            s->hi1[half + (a >> 4)] |= bit;
            s->lo2[half + (b & 15)] |= bit;
            s->hi2[half + (b >> 4)] |= bit;
        }
        size_t j = 0;
        while (j < s->pairCount && !(s->pairs[2 * j] == a && s->pairs[2 * j + 1] == b)) j++;
        if (j == s->pairCount) {
            if (s->pairCount == 16) {
                s->tooManyPairs = 1;
            } else {
                s->pairs[2 * j] = a;
                s->pairs[2 * j + 1] = b;
                s->pairCount++;
            }
        }
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    s->avx2 = vectorised && __builtin_cpu_supports("avx2");
#else
    (void)vectorised;
#endif
    return s;
}

void pc_screen_free(pc_screen *s) {
    if (!s) return;
    free(s->probes);
    free(s->bucketOf);
    free(s);
}

// Whether a string of one of the buckets in `bits` starts at pos - offset.
static int verify(const pc_screen *s, const uint8_t *p, size_t n, size_t pos, unsigned bits) {
    for (size_t i = 0; i < s->count; i++) {
        if (!(s->bucketOf[i] & bits)) continue;
        const pc_probe *pr = &s->probes[i];
        if (pos < pr->offset) continue;
        size_t start = pos - pr->offset;
        if (start + pr->length <= n && memcmp(p + start, pr->bytes, pr->length) == 0) return 1;
    }
    return 0;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2")))
static inline __m256i buckets(const pc_screen *s, __m256i v, __m256i w) {
    const __m256i low = _mm256_set1_epi8(15);
    __m256i lo1 = _mm256_loadu_si256((const __m256i *)s->lo1), hi1 = _mm256_loadu_si256((const __m256i *)s->hi1);
    __m256i lo2 = _mm256_loadu_si256((const __m256i *)s->lo2), hi2 = _mm256_loadu_si256((const __m256i *)s->hi2);
    __m256i a = _mm256_and_si256(_mm256_shuffle_epi8(lo1, _mm256_and_si256(v, low)),
                                 _mm256_shuffle_epi8(hi1, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
    __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(lo2, _mm256_and_si256(w, low)),
                                 _mm256_shuffle_epi8(hi2, _mm256_and_si256(_mm256_srli_epi16(w, 4), low)));
    return _mm256_and_si256(a, b);
}

// Lanes i (first anchor byte at p[i], second at p[i + 1]) of one 32-byte block whose bucket bits are set.
__attribute__((target("avx2")))
static int scan_block(const pc_screen *s, const uint8_t *p, size_t n, size_t i, __m256i v, __m256i w) {
    __m256i hit = buckets(s, v, w);
    unsigned mask = ~(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hit, _mm256_setzero_si256()));
    while (mask) {
        unsigned lane = (unsigned)__builtin_ctz(mask);
        if (i + lane + 1 < n) {
            uint8_t bits[32];
            _mm256_storeu_si256((__m256i *)bits, hit);
            if (verify(s, p, n, i + lane, bits[lane])) return 1;
        }
        mask &= mask - 1;
    }
    return 0;
}

__attribute__((target("avx2")))
static int scan_avx2(const pc_screen *s, const uint8_t *p, size_t n) {
    size_t i = 0;
    __m256i any = _mm256_setzero_si256();
    int found = 0;
    for (; i + 33 <= n; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i w = _mm256_loadu_si256((const __m256i *)(p + i + 1));
        any = _mm256_or_si256(any, v);
        if (!found && scan_block(s, p, n, i, v, w)) found = 1;
    }
    if (i < n) {
        // The last (up to 32) positions, from a zero-padded copy; lanes past the end are never verified.
        uint8_t tail[64] = {0};
        memcpy(tail, p + i, n - i);
        __m256i v = _mm256_loadu_si256((const __m256i *)tail);
        __m256i w = _mm256_loadu_si256((const __m256i *)(tail + 1));
        any = _mm256_or_si256(any, v);
        if (!found) {
            __m256i hit = buckets(s, v, w);
            unsigned mask = ~(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hit, _mm256_setzero_si256()));
            uint8_t bits[32];
            _mm256_storeu_si256((__m256i *)bits, hit);
            while (mask && !found) {
                unsigned lane = (unsigned)__builtin_ctz(mask);
                if (i + lane + 1 < n && verify(s, p, n, i + lane, bits[lane])) found = 1;
                mask &= mask - 1;
            }
        }
    }
    int nonASCII = _mm256_movemask_epi8(any) != 0;
    return found | (nonASCII ? PC_SCREEN_NON_ASCII : 0);
}
#endif

int pc_screen_scan(const pc_screen *s, const uint8_t *p, size_t n) {
#if defined(__x86_64__)
    if (s->avx2) return scan_avx2(s, p, n);
#endif
    int found = s->tooManyPairs || pc_contains_any(p, n, s->pairs, s->pairCount, s->probes, s->count);
    return found | (pc_is_ascii(p, n) ? 0 : PC_SCREEN_NON_ASCII);
}
