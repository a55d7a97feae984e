/*
 * test_fetch.c: server/fetch.c without a network: the shipped manifest and a
 * manifest's validation messages, "imagenet" and the names, mirror URLs, and
 * fetch_pull over file:// URLs: install, cache, SHA-256 and MD5 checks, size
 * mismatch, an unpinned entry refused, and two threads of one process asking
 * for the same file (one transfer; a cancelled owner hands over to the waiter).
 * HTTP (Range, cut and stalled connections, 404, proxies, two processes) is
 * tests/tools/test_weights_pull.py's. The tests run from the repository root.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch.h"

/* Writes a manifest with one entry whose fields are given as JSON text
 * (without braces); returns its path. */
static const char *manifest_with(const char *name, const char *fields)
{
    static char path[4200];
    static int n;
    char file[64], text[4096];
    snprintf(file, sizeof file, "manifest-%d.json", n++);
    snprintf(path, sizeof path, "%s", testutil_tmp_path(file));
    snprintf(text, sizeof text, "{\"weights\": {\"%s\": {%s}}}", name, fields);
    testutil_write_file(path, text, strlen(text));
    return path;
}

#define GOOD_FIELDS(extra)                                                                    \
    "\"url\": \"https://example.invalid/m/model.safetensors\", \"file\": \"w.safetensors\", " \
    "\"size\": 10, \"sha256\": null, \"md5\": \"0123456789abcdef0123456789ABCDEF\", "         \
    "\"format\": \"safetensors\", \"variant\": \"torchvision\", \"preprocess\": \"torch\", "  \
    "\"classes\": 1000, \"top1\": 76.1" extra

/* Loading fields under name must fail with exactly "<path>: want". */
static void assert_manifest_error(const char *name, const char *fields, const char *want)
{
    const char *path = manifest_with(name, fields);
    FetchManifest *m = (FetchManifest *)1;
    Error err = {{0}};
    assert_int_equal(fetch_manifest_load(&m, path, &err), -1);
    assert_null(m);
    char full[5000];
    snprintf(full, sizeof full, "%s: %s", path, want);
    assert_string_equal(err.msg, full);
}

static void test_shipped_manifest(void **state)
{
    (void)state;
    FetchManifest *m;
    Error err;
    if (fetch_manifest_load(&m, "config/weights.json", &err))
        fail_msg("%s", err.msg);
    const char *names[] = {"torchvision-v1", "torchvision-v2", "timm-a1", "keras", "keras-notop"};
    assert_int_equal(m->n, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(m->entries[i].name, names[i]);
    const FetchEntry *e = fetch_manifest_find(m, "torchvision-v1");
    assert_non_null(e);
    assert_string_equal(e->url, "https://huggingface.co/timm/resnet50.tv_in1k/resolve/"
                                "aa6c2d36d56bc0209040c02b5a7b7d7bf11d57b8/model.safetensors");
    assert_string_equal(e->sha256,
                        "5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888");
    assert_string_equal(e->file, "torchvision-v1.safetensors");
    assert_string_equal(e->variant, "torchvision");
    assert_string_equal(e->preprocess, "torch");
    assert_int_equal(e->classes, 1000);
    assert_true(e->top1 > 76.12 && e->top1 < 76.14);
    e = fetch_manifest_find(m, "timm-a1");
    assert_string_equal(e->sha256,
                        "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb");
    e = fetch_manifest_find(m, "keras");
    assert_string_equal(e->md5, "2cb95161c43110f7111970584f804107");
    assert_string_equal(e->file, "keras.h5");
    assert_string_equal(e->format, "h5");
    assert_string_equal(e->preprocess, "caffe");
    e = fetch_manifest_find(m, "keras-notop");
    assert_string_equal(e->md5, "4d473c1dd8becc155b73f8504c6f6626");
    assert_int_equal(e->classes, 0);
    /* no hash was found for torchvision-v2: it is listed, and pull refuses it */
    e = fetch_manifest_find(m, "torchvision-v2");
    assert_false(fetch_entry_pinned(e));
    assert_int_equal(e->size, -1);
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->entries[i].name, "torchvision-v2"))
            assert_true(fetch_entry_pinned(&m->entries[i]));

    /* "imagenet" is the variant's default */
    assert_int_equal(fetch_resolve(m, "imagenet", NULL, &e, &err), 0);
    assert_string_equal(e->name, "torchvision-v1");
    assert_int_equal(fetch_resolve(m, "imagenet", "torchvision", &e, &err), 0);
    assert_string_equal(e->name, "torchvision-v1");
    assert_int_equal(fetch_resolve(m, "imagenet", "keras", &e, &err), 0);
    assert_string_equal(e->name, "keras");
    assert_int_equal(fetch_resolve(m, "keras-notop", "torchvision", &e, &err), 0);
    assert_string_equal(e->name, "keras-notop");
    assert_int_equal(fetch_resolve(m, "resnet50", NULL, &e, &err), -1);
    char want[5000];
    snprintf(want, sizeof want, "unknown weights name 'resnet50' (the manifest %s has: "
             "torchvision-v1, torchvision-v2, timm-a1, keras, keras-notop, and \"imagenet\")",
             m->path);
    assert_string_equal(err.msg, want);
    fetch_manifest_free(m);
    fetch_manifest_free(NULL);

    /* the default manifest: beside resnetd's folder (BUILD/../config), which this
     * binary (BUILD/tests/) does not have, or the container's and package's places */
    char path[FETCH_PATH_MAX];
    if (fetch_default_manifest(path, sizeof path, &err) == 0)
        assert_non_null(strstr(path, "weights.json"));
    else
        assert_non_null(strstr(err.msg, "/tests/../config/weights.json, "
                                        "/etc/resnetd/weights.json, "
                                        "/usr/share/resnetd/weights.json exists; set "
                                        "weights_manifest (RESNETD_WEIGHTS_MANIFEST, --manifest)"));
}

static void test_manifest_errors(void **state)
{
    (void)state;
    FetchManifest *m;
    Error err;
    const char *good = manifest_with("w-1.b_c", GOOD_FIELDS(", \"description\": \"d\", "
                                     "\"sources\": {\"md5\": \"x\"}, \"unverified\": [\"y\"]"));
    assert_int_equal(fetch_manifest_load(&m, good, &err), 0);
    assert_int_equal(m->n, 1);
    /* hashes are kept in lower case; a null sha256 is "" */
    assert_string_equal(m->entries[0].md5, "0123456789abcdef0123456789abcdef");
    assert_string_equal(m->entries[0].sha256, "");
    assert_string_equal(m->entries[0].description, "d");
    fetch_manifest_free(m);

    assert_manifest_error("w", GOOD_FIELDS(", \"sha265\": null"),
                          "weights.w: unknown field \"sha265\"");
    assert_manifest_error("w", "\"file\": \"w.safetensors\"", "weights.w: missing \"url\"");
    assert_manifest_error("imagenet", GOOD_FIELDS(""),
                          "weights.imagenet: a name is 1 to 63 characters of a-z, 0-9, '.', '_' "
                          "and '-', not starting with '.' or '-', and not \"imagenet\"");
    assert_manifest_error("Big", GOOD_FIELDS(""),
                          "weights.Big: a name is 1 to 63 characters of a-z, 0-9, '.', '_' "
                          "and '-', not starting with '.' or '-', and not \"imagenet\"");
    assert_manifest_error("w", "\"url\": \"ftp://x/w\", \"file\": \"w.safetensors\", "
                          "\"format\": \"safetensors\", \"variant\": \"torchvision\", "
                          "\"preprocess\": \"torch\"",
                          "weights.w.url: expected an http://, https:// or file:// URL without "
                          "spaces");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"../w.safetensors\", "
                          "\"format\": \"safetensors\", \"variant\": \"torchvision\", "
                          "\"preprocess\": \"torch\"",
                          "weights.w.file: expected a file name (no '/', not starting with '.', "
                          "under 128 bytes) ending in \".safetensors\"");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", "
                          "\"format\": \"safetensors\", \"variant\": \"torchvision\", "
                          "\"preprocess\": \"torch\"",
                          "weights.w.file: expected a file name (no '/', not starting with '.', "
                          "under 128 bytes) ending in \".safetensors\"");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.pth\", "
                          "\"format\": \"pth\", \"variant\": \"torchvision\", "
                          "\"preprocess\": \"torch\"",
                          "weights.w.format: expected \"safetensors\" or \"h5\"");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", "
                          "\"format\": \"h5\", \"variant\": \"resnet\", \"preprocess\": \"torch\"",
                          "weights.w.variant: expected \"torchvision\" or \"keras\"");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", "
                          "\"format\": \"h5\", \"variant\": \"keras\", \"preprocess\": \"tf\"",
                          "weights.w.preprocess: expected \"torch\" or \"caffe\"");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", \"format\": \"h5\", "
                          "\"variant\": \"keras\", \"preprocess\": \"caffe\", \"size\": 0",
                          "weights.w.size: expected a whole number of bytes above 0, or null");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", \"format\": \"h5\", "
                          "\"variant\": \"keras\", \"preprocess\": \"caffe\"",
                          "weights.w: missing \"size\" (bytes, or null when unknown)");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", \"format\": \"h5\", "
                          "\"variant\": \"keras\", \"preprocess\": \"caffe\", \"size\": 1, "
                          "\"sha256\": \"5d061a3c\"",
                          "weights.w.sha256: expected 64 hexadecimal digits or null");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", \"format\": \"h5\", "
                          "\"variant\": \"keras\", \"preprocess\": \"caffe\", \"size\": 1, "
                          "\"md5\": \"2cb95161c43110f7111970584f80410g\"",
                          "weights.w.md5: expected 32 hexadecimal digits or null");
    assert_manifest_error("w", GOOD_FIELDS(", \"sources\": {\"size\": 3}"),
                          "weights.w.sources.size: expected a string");
    assert_manifest_error("w", "\"url\": \"http://x/w\", \"file\": \"w.h5\", \"format\": \"h5\", "
                          "\"variant\": \"keras\", \"preprocess\": \"caffe\", \"size\": null, "
                          "\"classes\": \"1000\"",
                          "weights.w.classes: expected a whole number (1000, or 0 for a backbone "
                          "without its top)");

    /* two names, one file */
    const char *twice = testutil_tmp_path("twice.json");
    const char text[] = "{\"weights\": {\"a\": {" GOOD_FIELDS("") "}, \"b\": {" GOOD_FIELDS("")
                        "}}}";
    testutil_write_file(twice, text, strlen(text));
    assert_int_equal(fetch_manifest_load(&m, twice, &err), -1);
    assert_non_null(strstr(err.msg, ": weights.b.file: \"w.safetensors\" is already the file of "
                                    "\"a\""));
    /* a name twice is invalid JSON for the manifest (jansson rejects duplicates) */
    const char dup[] = "{\"weights\": {\"a\": {}, \"a\": {}}}";
    testutil_write_file(twice, dup, strlen(dup));
    assert_int_equal(fetch_manifest_load(&m, twice, &err), -1);
    assert_non_null(strstr(err.msg, ":1: not valid JSON: duplicate object key"));
    const char top[] = "{\"weights\": {}, \"weight\": {}}";
    testutil_write_file(twice, top, strlen(top));
    assert_int_equal(fetch_manifest_load(&m, twice, &err), -1);
    assert_non_null(strstr(err.msg, ": unknown top-level field \"weight\""));
    assert_int_equal(fetch_manifest_load(&m, testutil_tmp_path("none.json"), &err), -1);
    assert_non_null(strstr(err.msg, "none.json: cannot read the weights manifest: "));
}

static void test_urls_and_paths(void **state)
{
    (void)state;
    FetchManifest *m;
    Error err;
    assert_int_equal(fetch_manifest_load(&m, "config/weights.json", &err), 0);
    const FetchEntry *e = fetch_manifest_find(m, "torchvision-v1");
    char out[FETCH_PATH_MAX];
    assert_int_equal(fetch_entry_url(e, NULL, out, sizeof out, &err), 0);
    assert_string_equal(out, e->url);
    assert_int_equal(fetch_entry_url(e, "", out, sizeof out, &err), 0);
    assert_string_equal(out, e->url);
    /* the mirror keeps the file name of the weights folder, not the URL's
     * "model.safetensors" that three entries share */
    assert_int_equal(fetch_entry_url(e, "http://mirror.lan/w", out, sizeof out, &err), 0);
    assert_string_equal(out, "http://mirror.lan/w/torchvision-v1.safetensors");
    assert_int_equal(fetch_entry_url(e, "file:///srv/w/", out, sizeof out, &err), 0);
    assert_string_equal(out, "file:///srv/w/torchvision-v1.safetensors");
    assert_int_equal(fetch_entry_url(e, "mirror.lan", out, sizeof out, &err), -1);
    assert_string_equal(err.msg, "weights_mirror 'mirror.lan': expected an http://, https:// or "
                                 "file:// URL");
    assert_int_equal(fetch_entry_path(e, "/var/w/", out, sizeof out, &err), 0);
    assert_string_equal(out, "/var/w/torchvision-v1.safetensors");
    assert_int_equal(fetch_entry_path(e, "/var/w", out, sizeof out, &err), 0);
    assert_string_equal(out, "/var/w/torchvision-v1.safetensors");
    assert_int_equal(fetch_entry_path(e, "/var/w", out, 10, &err), -1);
    fetch_manifest_free(m);
}

/* A source file of n pseudo-random bytes in the scratch folder; returns its path. */
static const char *make_source(const char *name, size_t n, unsigned seed)
{
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (unsigned char)(seed >> 16);
    }
    const char *path = testutil_tmp_path(name);
    testutil_write_file(path, buf, n);
    free(buf);
    return path;
}

/* The entry of a one-entry manifest over file://src with the given hashes. */
static FetchManifest *source_manifest(const char *src, const char *file, long long size,
                                      const char *sha256, const char *md5)
{
    char fields[3000];
    snprintf(fields, sizeof fields, "\"url\": \"file://%s\", \"file\": \"%s\", \"size\": %lld, "
             "\"sha256\": %s%s%s, \"md5\": %s%s%s, \"format\": \"safetensors\", "
             "\"variant\": \"torchvision\", \"preprocess\": \"torch\", \"classes\": 0",
             src, file, size, sha256 ? "\"" : "", sha256 ? sha256 : "null", sha256 ? "\"" : "",
             md5 ? "\"" : "", md5 ? md5 : "null", md5 ? "\"" : "");
    FetchManifest *m;
    Error err;
    if (fetch_manifest_load(&m, manifest_with("src", fields), &err))
        fail_msg("%s", err.msg);
    return m;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The expected digests come from coreutils (sha256sum, md5sum), an
 * implementation independent of the OpenSSL that fetch.c uses. */
static void digest_file(const char *tool, const char *path, char *out, size_t n)
{
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "%s '%s'", tool, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(out, (int)n, p));
    pclose(p);
    char *sp = strchr(out, ' ');
    assert_non_null(sp);
    *sp = '\0';
}

static void test_pull_file_url(void **state)
{
    (void)state;
    char src[4200];
    snprintf(src, sizeof src, "%s", make_source("src.bin", 300000, 7));
    char sha[100], md5[100];
    digest_file("sha256sum", src, sha, sizeof sha);
    digest_file("md5sum", src, md5, sizeof md5);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", testutil_tmp_path("weights/sub"));
    FetchHub *hub;
    Error err = {{0}};
    assert_int_equal(fetch_hub_create(&hub, &err), 0);
    FetchOptions o;
    fetch_options_init(&o);
    o.weights_dir = dir; /* created with its parent */
    FetchResult res;

    /* both hashes pinned: installed, then cached */
    FetchManifest *m = source_manifest(src, "a.safetensors", 300000, sha, md5);
    if (fetch_pull(hub, &m->entries[0], &o, &res, &err))
        fail_msg("%s", err.msg);
    char want[9000];
    snprintf(want, sizeof want, "%s/a.safetensors", dir);
    assert_string_equal(res.path, want);
    assert_int_equal(res.cached, 0);
    assert_int_equal(res.requests, 1);
    assert_int_equal(res.bytes, 300000);
    assert_true(fetch_entry_cached(&m->entries[0], dir));
    char part[4300];
    snprintf(part, sizeof part, "%s/.a.safetensors.part", dir);
    assert_false(file_exists(part));
    assert_int_equal(fetch_pull(hub, &m->entries[0], &o, &res, &err), 0);
    assert_int_equal(res.cached, 1);
    assert_int_equal(res.requests, 0);
    fetch_manifest_free(m);

    /* MD5 only, and an unknown size */
    m = source_manifest(src, "b.safetensors", 300000, NULL, md5);
    assert_int_equal(fetch_pull(NULL, &m->entries[0], &o, &res, &err), 0);
    fetch_manifest_free(m);

    /* a wrong SHA-256: refused, nothing installed, the part file removed */
    char bad[100];
    snprintf(bad, sizeof bad, "%s", sha);
    bad[0] = bad[0] == '0' ? '1' : '0';
    m = source_manifest(src, "c.safetensors", 300000, bad, NULL);
    assert_int_equal(fetch_pull(hub, &m->entries[0], &o, &res, &err), -1);
    snprintf(want, sizeof want, "src: SHA-256 mismatch: expected %s, got %s from file://%s; the "
             "download was removed", bad, sha, src);
    assert_string_equal(err.msg, want);
    assert_false(fetch_entry_cached(&m->entries[0], dir));
    snprintf(part, sizeof part, "%s/.c.safetensors.part", dir);
    assert_false(file_exists(part));
    fetch_manifest_free(m);

    /* a wrong MD5 next to a right SHA-256 is refused too */
    m = source_manifest(src, "d.safetensors", 300000, sha, "00000000000000000000000000000000");
    assert_int_equal(fetch_pull(hub, &m->entries[0], &o, &res, &err), -1);
    assert_non_null(strstr(err.msg, "src: MD5 mismatch: expected 00000000000000000000000000000000,"
                                    " got "));
    fetch_manifest_free(m);

    /* the manifest's size differs from the file's */
    m = source_manifest(src, "e.safetensors", 299999, sha, NULL);
    assert_int_equal(fetch_pull(hub, &m->entries[0], &o, &res, &err), -1);
    assert_non_null(strstr(err.msg, "src: size mismatch: the manifest expects 299999 bytes"));
    assert_non_null(strstr(err.msg, "the partial file was removed"));
    snprintf(part, sizeof part, "%s/.e.safetensors.part", dir);
    assert_false(file_exists(part));
    assert_false(fetch_entry_cached(&m->entries[0], dir));
    fetch_manifest_free(m);

    /* no hash: refused before any transfer */
    m = source_manifest(src, "f.safetensors", 300000, NULL, NULL);
    assert_int_equal(fetch_pull(hub, &m->entries[0], &o, &res, &err), -1);
    assert_string_equal(err.msg, "src: the manifest pins no hash for it (neither sha256 nor md5), "
                                 "and resnetd never installs an unverified file; add its sha256 "
                                 "to the manifest");
    assert_int_equal(res.requests, 0);
    fetch_manifest_free(m);

    /* a missing source: the message says how to install it by hand */
    char nowhere[4200];
    snprintf(nowhere, sizeof nowhere, "%s", testutil_tmp_path("nowhere.bin"));
    m = source_manifest(nowhere, "g.safetensors", 300000, sha, NULL);
    assert_int_equal(fetch_pull(hub, &m->entries[0], &o, &res, &err), -1);
    snprintf(want, sizeof want, ". Without network access here, fetch file://%s on another "
             "machine, check that its sha256 is %s, and copy it to %s/g.safetensors", nowhere,
             sha, dir);
    assert_non_null(strstr(err.msg, want));
    snprintf(part, sizeof part, "%s/.g.safetensors.part", dir);
    assert_false(file_exists(part)); /* an empty part file is not kept */
    fetch_manifest_free(m);
    fetch_hub_free(hub);
}

/* Two threads of one process pulling one file. The owner's progress callback
 * holds its transfer until the other call is seen waiting (its own progress
 * callback reports shared), so the two overlap by construction. */
typedef struct {
    FetchHub *hub;
    const FetchEntry *e;
    const char *dir;
    atomic_int *waiter_seen;    /* set by the waiting call's progress */
    atomic_int *owner_started;  /* set by the owner's first progress */
    atomic_int cancel;
    int cancel_when_waited;     /* the owner cancels itself once the waiter is seen */
    FetchProgressFn progress;
    FetchResult res;
    Error err;
    int rc;
} Caller;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void owner_progress(void *ctx, const FetchProgress *p)
{
    Caller *c = ctx;
    (void)p;
    atomic_store(c->owner_started, 1);
    for (int i = 0; i < 500 && !atomic_load(c->waiter_seen); i++)
        sleep_ms(10);
    if (c->cancel_when_waited)
        atomic_store(&c->cancel, 1);
}

static void waiter_progress(void *ctx, const FetchProgress *p)
{
    Caller *c = ctx;
    if (p->shared)
        atomic_store(c->waiter_seen, 1);
}

static void *run_caller(void *arg)
{
    Caller *c = arg;
    FetchOptions o;
    fetch_options_init(&o);
    o.weights_dir = c->dir;
    o.cancel = &c->cancel;
    o.progress_ctx = c;
    o.progress = c->progress;
    c->rc = fetch_pull(c->hub, c->e, &o, &c->res, &c->err);
    return NULL;
}

static void test_shared_in_process(void **state)
{
    (void)state;
    char src[4200];
    snprintf(src, sizeof src, "%s", make_source("shared.bin", 4 << 20, 11));
    char sha[100];
    digest_file("sha256sum", src, sha, sizeof sha);
    for (int cancel_owner = 0; cancel_owner < 2; cancel_owner++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", testutil_tmp_path(cancel_owner ? "shared-c" : "shared"));
        FetchManifest *m = source_manifest(src, "s.safetensors", 4 << 20, sha, NULL);
        FetchHub *hub;
        Error err;
        assert_int_equal(fetch_hub_create(&hub, &err), 0);
        atomic_int waiter_seen = 0, owner_started = 0;
        Caller a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        a.hub = b.hub = hub;
        a.e = b.e = &m->entries[0];
        a.dir = b.dir = dir;
        a.waiter_seen = b.waiter_seen = &waiter_seen;
        a.owner_started = &owner_started;
        a.cancel_when_waited = cancel_owner;
        a.progress = owner_progress;
        b.progress = waiter_progress;
        pthread_t ta, tb;
        assert_int_equal(pthread_create(&ta, NULL, run_caller, &a), 0);
        for (int i = 0; i < 500 && !atomic_load(&owner_started); i++)
            sleep_ms(10);
        assert_true(atomic_load(&owner_started));
        assert_int_equal(pthread_create(&tb, NULL, run_caller, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        assert_true(atomic_load(&waiter_seen));
        if (!cancel_owner) {
            /* one transfer; the second call has its result */
            assert_int_equal(a.rc, 0);
            assert_int_equal(b.rc, 0);
            assert_int_equal(a.res.requests, 1);
            assert_int_equal(b.res.requests, 0);
            assert_int_equal(b.res.shared, 1);
            assert_string_equal(a.res.path, b.res.path);
        } else {
            /* the owner gave up; the waiter took over and finished the file */
            assert_int_equal(a.rc, -1);
            assert_int_equal(a.res.cancelled, 1);
            assert_non_null(strstr(a.err.msg, "cancelled"));
            assert_int_equal(b.rc, 0);
            assert_int_equal(b.res.shared, 0);
            assert_int_equal(b.res.requests, 1);
        }
        assert_true(fetch_entry_cached(&m->entries[0], dir));
        fetch_hub_free(hub);
        fetch_manifest_free(m);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_manifest),
        cmocka_unit_test(test_manifest_errors),
        cmocka_unit_test(test_urls_and_paths),
        cmocka_unit_test(test_pull_file_url),
        cmocka_unit_test(test_shared_in_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
