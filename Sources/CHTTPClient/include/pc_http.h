#ifndef PORTCULLIS_HTTP_H
#define PORTCULLIS_HTTP_H

// Outgoing HTTP(S) for webhooks, over libcurl (TLS by OpenSSL, the system's CA store unless a CA file is given;
// peers and host names always verified), and HMAC-SHA256 from OpenSSL's libcrypto for their signatures.

#include <stddef.h>
#include <stdint.h>

typedef struct pc_http_client pc_http_client;

/// A client that keeps its connection between requests (one per webhook, used by one thread at a time).
/// NULL when memory runs out.
pc_http_client *pc_http_new(void);
void pc_http_free(pc_http_client *client);
/// From any thread: the request in progress (and every later one) ends at once with an error (a daemon stopping
/// does not wait for a receiver that never answers).
void pc_http_cancel(pc_http_client *client);

typedef struct {
    long status;        // the HTTP status; 0 when none came
    int curl_code;      // libcurl's CURLcode: 0 when a status came
    int tls_failure;    // non-zero when the TLS peer could not be verified (certificate, name, CA file)
    int timed_out;
    char error[256];    // libcurl's message when curl_code is not 0
} pc_http_result;

/// POSTs `body` to `url` (http or https only; redirects are not followed) with the given header lines ("Name:
/// value", `count` of them), within `timeout_ms` in all. `cafile`: PEM file of the CA(s) to trust instead of the
/// system's store, or NULL. The answer's body is read and dropped (at most 64 KiB).
void pc_http_post(pc_http_client *client, const char *url, const char *const *headers, size_t count, const uint8_t *body,
                  size_t length, long timeout_ms, const char *cafile, const char *user_agent, pc_http_result *out);

/// HMAC-SHA256 of `data` under `key` into `out` (32 bytes). Returns 0, or -1 on failure.
int pc_hmac_sha256(const uint8_t *key, size_t key_length, const uint8_t *data, size_t length, uint8_t *out);

#endif
