/*
 * fetch.h: named pretrained weights. A manifest (config/weights.json, format in
 * docs/weights.md, "Named weights") maps names such as "torchvision-v1" to a URL,
 * the file name in the weights folder, the size and the hashes the publisher
 * pins; fetch_pull downloads one with libcurl into the weights folder once:
 *
 *   - into WEIGHTS_DIR/.FILE.part, resumed with an HTTP Range request after a cut
 *     or stalled connection (a server that ignores Range restarts from byte 0);
 *   - the size and every pinned hash (SHA-256, MD5; OpenSSL's EVP) checked, then
 *     fsync, rename to WEIGHTS_DIR/FILE and fsync of the folder: a file under its
 *     final name was verified, so it is the cache and is never downloaded again;
 *   - a mismatch removes the part file; an entry with no hash is refused;
 *   - callers of one process asking for the same file share one download (the
 *     others wait and get its result); processes share it through flock(2) on
 *     the part file.
 *
 * libcurl reads http_proxy, https_proxy, all_proxy and no_proxy itself; a CA
 * bundle named by CURL_CA_BUNDLE or SSL_CERT_FILE (and a folder by SSL_CERT_DIR)
 * is passed on as curl(1) does.
 *
 * Ownership: the manifest owns its entries; fetch_pull borrows the entry and the
 * options for the duration of the call.
 */
#ifndef RESNETD_FETCH_H
#define RESNETD_FETCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define FETCH_PATH_MAX 4096

/* One manifest entry; every string is validated by fetch_manifest_load. */
typedef struct {
    char name[64];          /* [a-z0-9._-], not "imagenet" (the alias fetch_resolve reads) */
    char *url;              /* http://, https:// or file://; owned */
    char file[128];         /* plain file name in the weights folder, e.g. "keras.h5" */
    int64_t size;           /* bytes; -1 when the manifest does not pin it */
    char sha256[65];        /* lower-case hex; "" when not pinned */
    char md5[33];           /* lower-case hex; "" when not pinned */
    char format[16];        /* "safetensors" or "h5" (the file name ends with it) */
    char variant[16];       /* "torchvision" or "keras" */
    char preprocess[16];    /* "torch" or "caffe" */
    int classes;            /* 1000, or 0 for a backbone without its top */
    double top1;            /* ImageNet top-1 in percent; negative when unknown */
    char *description;      /* owned; "" when absent */
} FetchEntry;

typedef struct {
    char path[FETCH_PATH_MAX]; /* the file it was read from */
    int n;
    FetchEntry *entries;       /* in the manifest's order */
} FetchManifest;

/* The shipped manifest: config/weights.json beside the binary's folder (a build
 * in BUILD/resnetd of a source tree finds SRC/config/weights.json), else
 * /etc/resnetd/weights.json (the container), else
 * /usr/share/resnetd/weights.json. Writes the first that exists into out; an
 * error naming the three places when none does. */
int fetch_default_manifest(char *out, size_t n, Error *err);

/* Reads and validates the manifest at path (NULL or "": fetch_default_manifest).
 * Errors name the file and the JSON path of the bad field:
 * "PATH: weights.keras.md5: expected 32 hexadecimal digits or null". Unknown
 * fields are errors (a misspelt "sha265" must not silently unpin a file). On
 * success *out is owned by the caller (fetch_manifest_free). */
int fetch_manifest_load(FetchManifest **out, const char *path, Error *err);

/* Frees a manifest; accepts NULL. */
void fetch_manifest_free(FetchManifest *m);

/* The entry called name, or NULL. */
const FetchEntry *fetch_manifest_find(const FetchManifest *m, const char *name);

/* The name "imagenet" means for a variant: "keras" for "keras", else (NULL, "",
 * "torchvision") "torchvision-v1". */
const char *fetch_imagenet_name(const char *variant);

/* Resolves name (a manifest name, or "imagenet" with the job's variant, which may
 * be NULL) to its entry. Error: an unknown name, listing the manifest's names. */
int fetch_resolve(const FetchManifest *m, const char *name, const char *variant,
                  const FetchEntry **out, Error *err);

/* 1 when the entry pins a SHA-256 or an MD5 (fetch_pull refuses it otherwise). */
int fetch_entry_pinned(const FetchEntry *e);

/* The URL to download e from: its own, or with mirror ("" or NULL: none) the
 * mirror base joined with e->file. The file name, not the URL's last segment,
 * names it on a mirror: the hub's URLs all end in "model.safetensors". */
int fetch_entry_url(const FetchEntry *e, const char *mirror, char *out, size_t n, Error *err);

/* WEIGHTS_DIR/FILE into out. */
int fetch_entry_path(const FetchEntry *e, const char *weights_dir, char *out, size_t n,
                     Error *err);

/* 1 when WEIGHTS_DIR/FILE exists as a regular file (the verified cache). */
int fetch_entry_cached(const FetchEntry *e, const char *weights_dir);

/* Progress of one pull, as its caller sees it. */
typedef struct {
    uint64_t done;      /* bytes of the file downloaded so far (resumed ones included) */
    uint64_t total;     /* expected bytes; 0 while unknown */
    int shared;         /* 1: another caller of this process, or another process,
                           downloads it and this one waits for it */
    int attempt;        /* 1 for the first request, 2 for the first retry, ... */
} FetchProgress;

/* Called in the thread that called fetch_pull, at most every 200 ms and once at
 * the end of each transfer; it must not call fetch_pull. */
typedef void (*FetchProgressFn)(void *ctx, const FetchProgress *p);

typedef struct {
    const char *weights_dir;    /* required; created (with its parents) when missing */
    const char *mirror;         /* NULL or "": the entries' URLs (fetch_entry_url) */
    int connect_timeout_s;      /* to connect, seconds */
    int stall_timeout_s;        /* a transfer with no byte for this long fails (curl's
                                   low-speed limit of 1 byte/s over that time) */
    int retries;                /* further attempts after a transfer that was cut or
                                   stalled after some bytes, or an HTTP 5xx; each resumes */
    int retry_delay_ms;         /* before the first retry; doubles, at most 30 s */
    FetchProgressFn progress;   /* NULL: none */
    void *progress_ctx;
    const atomic_int *cancel;   /* NULL, or set non-zero (any thread) to stop: the part
                                   file is kept and the next pull resumes it */
} FetchOptions;

/* Defaults: connect 30 s, stall 60 s, 3 retries 1 s apart (then 2, 4 s), no
 * mirror, no progress, no cancel; weights_dir NULL (set it). */
void fetch_options_init(FetchOptions *o);

typedef struct {
    char path[FETCH_PATH_MAX];  /* WEIGHTS_DIR/FILE, set even on failure */
    int cached;                 /* it was there already: nothing was requested */
    int shared;                 /* another caller or process downloaded it; this call
                                   waited and has that download's result */
    int cancelled;              /* the failure is a cancel (o->cancel) */
    int requests;               /* transfers this call started (0 when cached or shared) */
    uint64_t bytes;             /* bytes this call received */
} FetchResult;

/* In-process registry of downloads under way, so that callers asking for the
 * same file share one. One per process (the daemon's, or the CLI's). */
typedef struct FetchHub FetchHub;

/* Initialises libcurl (curl_global_init) and the registry. Call before starting
 * threads that pull. */
int fetch_hub_create(FetchHub **out, Error *err);

/* Frees the hub once no fetch_pull is running; accepts NULL. */
void fetch_hub_free(FetchHub *hub);

/* Makes e's file present and verified in o->weights_dir; res->path is where.
 * Thread-safe: any number of threads may call it with the same hub. A call for
 * a file another call of the same hub is downloading waits for that download
 * and returns its result (res->shared), unless the downloading call is
 * cancelled, in which case a waiter takes over and resumes the part file. hub
 * NULL: no in-process sharing (processes, and threads, still exclude each other
 * through flock), and libcurl is initialised on first use, which is safe only
 * before other threads start: the daemon creates one hub at start and passes it.
 * Returns 0, or -1 with err set: the entry pins no hash; HTTP errors ("HTTP 404
 * (Not Found) from URL"); connection failures, stalls and a host that cannot be
 * resolved, which also say which URL to fetch by hand, its hash and where to put
 * it; a size or hash mismatch ("expected ..., got ..."), after which the part
 * file is gone; a cancel (res->cancelled). */
int fetch_pull(FetchHub *hub, const FetchEntry *e, const FetchOptions *o, FetchResult *res,
               Error *err);

#endif
