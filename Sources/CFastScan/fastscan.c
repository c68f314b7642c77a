#include "fastscan.h"
#include <string.h>

static int check_at(const uint8_t *p, size_t n, size_t pos, const pc_probe *probes, size_t count) {
    uint8_t b = p[pos], c = pos + 1 < n ? p[pos + 1] : 0;
    for (size_t i = 0; i < count; i++) {
        const pc_probe *pr = &probes[i];
        if (pr->bytes[pr->offset] != b || pr->bytes[pr->offset + 1] != c || pos < pr->offset) continue;
        size_t start = pos - pr->offset;
        if (start + pr->length <= n && memcmp(p + start, pr->bytes, pr->length) == 0) return 1;
    }
    return 0;
}

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>

size_t pc_find_any_byte(const uint8_t *p, size_t n, size_t from, const uint8_t *set, size_t k) {
    size_t i = from;
    if (k == 0) return n;
    __m128i needles[16];
    for (size_t j = 0; j < k && j < 16; j++) needles[j] = _mm_set1_epi8((char)set[j]);
    while (i + 16 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i hit = _mm_cmpeq_epi8(v, needles[0]);
        for (size_t j = 1; j < k; j++) hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, needles[j]));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return i + (size_t)__builtin_ctz((unsigned)mask);
        i += 16;
    }
    for (; i < n; i++) {
        for (size_t j = 0; j < k; j++) if (p[i] == set[j]) return i;
    }
    return n;
}

int pc_contains_any(const uint8_t *p, size_t n, const uint8_t *pairs, size_t k, const pc_probe *probes, size_t count) {
    if (k == 0 || k > 16) return 1;
    __m128i first[16], second[16];
    for (size_t j = 0; j < k; j++) {
        first[j] = _mm_set1_epi8((char)pairs[2 * j]);
        second[j] = _mm_set1_epi8((char)pairs[2 * j + 1]);
    }
    size_t i = 0;
    // Each lane checks the byte pair starting there: the block and the block one byte further.
    while (i + 17 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i w = _mm_loadu_si128((const __m128i *)(p + i + 1));
        __m128i hit = _mm_and_si128(_mm_cmpeq_epi8(v, first[0]), _mm_cmpeq_epi8(w, second[0]));
        for (size_t j = 1; j < k; j++)
            hit = _mm_or_si128(hit, _mm_and_si128(_mm_cmpeq_epi8(v, first[j]), _mm_cmpeq_epi8(w, second[j])));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        while (mask) {
            unsigned bit = (unsigned)__builtin_ctz(mask);
            if (check_at(p, n, i + bit, probes, count)) return 1;
            mask &= mask - 1;
        }
        i += 16;
    }
    for (; i + 1 < n; i++) {
        for (size_t j = 0; j < k; j++) {
            if (p[i] == pairs[2 * j] && p[i + 1] == pairs[2 * j + 1]) { if (check_at(p, n, i, probes, count)) return 1; break; }
        }
    }
    return 0;
}

int pc_is_ascii(const uint8_t *p, size_t n) {
    if (n < 16) {
        uint64_t acc = 0, w;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) { memcpy(&w, p + i, 8); acc |= w; }
        for (; i < n; i++) acc |= p[i];
        return (acc & 0x8080808080808080ull) == 0;
    }
    __m128i acc = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm_or_si128(acc, _mm_loadu_si128((const __m128i *)(p + i)));
    // The last, partial block: the final 16 bytes, overlapping what was already seen.
    if (i < n) acc = _mm_or_si128(acc, _mm_loadu_si128((const __m128i *)(p + n - 16)));
    return _mm_movemask_epi8(acc) == 0;
}

#else

size_t pc_find_any_byte(const uint8_t *p, size_t n, size_t from, const uint8_t *set, size_t k) {
    uint8_t table[256] = {0};
    for (size_t j = 0; j < k; j++) table[set[j]] = 1;
    for (size_t i = from; i < n; i++) if (table[p[i]]) return i;
    return n;
}

int pc_is_ascii(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) if (p[i] & 0x80) return 0;
    return 1;
}

int pc_contains_any(const uint8_t *p, size_t n, const uint8_t *pairs, size_t k, const pc_probe *probes, size_t count) {
    uint8_t table[256] = {0};
    for (size_t j = 0; j < k; j++) table[pairs[2 * j]] = 1;
    for (size_t i = 0; i + 1 < n; i++) if (table[p[i]] && check_at(p, n, i, probes, count)) return 1;
    return 0;
}

#endif

void pc_count_bytes(const uint8_t *p, size_t n, uint32_t *counts) {
    for (size_t i = 0; i < n; i++) counts[p[i]]++;
}
