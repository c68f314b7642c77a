// See pc_http.h.

#include "pc_http.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

struct pc_http_client {
    CURL *curl;
    int cancelled;  // atomic
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

pc_http_client *pc_http_new(void) {
    pthread_once(&global_once, global_init);
    pc_http_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->curl = curl_easy_init();
    if (!c->curl) { free(c); return NULL; }
    return c;
}

void pc_http_cancel(pc_http_client *c) { __atomic_store_n(&c->cancelled, 1, __ATOMIC_RELEASE); }

// libcurl calls this about once a second while waiting, and more often while data moves.
static int progress(void *data, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    pc_http_client *c = data;
    return __atomic_load_n(&c->cancelled, __ATOMIC_ACQUIRE) ? 1 : 0;
}

void pc_http_free(pc_http_client *c) {
    if (!c) return;
    curl_easy_cleanup(c->curl);
    free(c);
}

// The answer's body is not needed: read (so that the connection can be reused) and dropped, 64 KiB at most.
static size_t discard(char *ptr, size_t size, size_t n, void *data) {
    (void)ptr;
    size_t *seen = data;
    *seen += size * n;
    return *seen > 65536 ? 0 : size * n;
}

void pc_http_post(pc_http_client *c, const char *url, const char *const *headers, size_t count, const uint8_t *body,
                  size_t length, long timeout_ms, const char *cafile, const char *user_agent, pc_http_result *out) {
    memset(out, 0, sizeof *out);
    CURL *h = c->curl;
    curl_easy_reset(h);
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < count; i++) {
        struct curl_slist *next = curl_slist_append(list, headers[i]);
        if (!next) { curl_slist_free_all(list); out->curl_code = CURLE_OUT_OF_MEMORY; strcpy(out->error, "out of memory"); return; }
        list = next;
    }
    size_t seen = 0;
    char error[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)length);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_USERAGENT, user_agent);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cafile) curl_easy_setopt(h, CURLOPT_CAINFO, cafile);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &seen);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(list);
    // A status that came with a body over our limit is still the receiver's answer.
    if (rc == CURLE_WRITE_ERROR && status > 0) rc = CURLE_OK;
    out->status = rc == CURLE_OK ? status : 0;
    out->curl_code = (int)rc;
    out->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
    out->tls_failure = rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM
        || rc == CURLE_SSL_ISSUER_ERROR;
    if (rc != CURLE_OK) {
        const char *text = error[0] ? error : curl_easy_strerror(rc);
        strncpy(out->error, text, sizeof out->error - 1);
    }
}

int pc_hmac_sha256(const uint8_t *key, size_t key_length, const uint8_t *data, size_t length, uint8_t *out) {
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_length, data, length, out, &n) || n != 32) return -1;
    return 0;
}
