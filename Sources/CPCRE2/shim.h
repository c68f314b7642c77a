#ifndef PORTCULLIS_CPCRE2_SHIM_H
#define PORTCULLIS_CPCRE2_SHIM_H

// PCRE2 selects its code-unit width with a macro; Portcullis matches raw UTF-8 bytes.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

// PCRE2_UNSET and PCRE2_ZERO_TERMINATED are casts of ~0, which Swift cannot import as constants.
static inline PCRE2_SIZE cpcre2_unset(void) { return PCRE2_UNSET; }
static inline PCRE2_SIZE cpcre2_zero_terminated(void) { return PCRE2_ZERO_TERMINATED; }

#endif
