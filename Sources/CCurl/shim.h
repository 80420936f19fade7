#ifndef SNAPIMPORT_CCURL_SHIM_H
#define SNAPIMPORT_CCURL_SHIM_H
#include <curl/curl.h>

// curl_easy_setopt is variadic and cannot be called from Swift; these typed
// wrappers fix the argument type per option kind (long, curl_off_t, pointer,
// callback), as swift-corelibs-foundation's CFURLSessionInterface does.

static inline CURLcode snap_easy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode snap_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode snap_easy_setopt_ptr(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode snap_easy_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode snap_easy_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }

typedef size_t (*snap_data_callback)(char *ptr, size_t size, size_t nmemb, void *userdata);
static inline CURLcode snap_easy_setopt_data_cb(CURL *h, CURLoption o, snap_data_callback cb) { return curl_easy_setopt(h, o, cb); }

typedef int (*snap_xferinfo_callback)(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);
static inline CURLcode snap_easy_setopt_xferinfo_cb(CURL *h, CURLoption o, snap_xferinfo_callback cb) { return curl_easy_setopt(h, o, cb); }

typedef int (*snap_seek_callback)(void *userdata, curl_off_t offset, int origin);
static inline CURLcode snap_easy_setopt_seek_cb(CURL *h, CURLoption o, snap_seek_callback cb) { return curl_easy_setopt(h, o, cb); }

static inline CURLcode snap_easy_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode snap_easy_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode snap_easy_getinfo_str(CURL *h, CURLINFO i, char **v) { return curl_easy_getinfo(h, i, v); }

#endif
