/*
 * cmd_weights.c: `resnetd weights list` and `resnetd weights pull NAME` (see
 * cmd_weights.h and docs/weights.md, "Named weights"): the manifest, the mirror
 * and the weights folder come from the daemon's configuration (the file named by
 * RESNETD_CONFIG, then RESNETD_* variables) and then these flags, so that a pull
 * lands where `resnetd serve` looks.
 */
#include "cmd_weights.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "fetch.h"

/* The only global mutable state: set by SIGINT/SIGTERM, read by fetch_pull. */
static atomic_int interrupted;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&interrupted, 1);
}

static const char usage_text[] =
    "usage: resnetd weights list [--manifest M] [--weights-dir D]\n"
    "       resnetd weights pull NAME [--manifest M] [--mirror URL] [--weights-dir D]\n"
    "                                 [--variant torchvision|keras] [--stall-timeout S]\n"
    "                                 [--retries N]\n"
    "NAME is a name of the manifest, or imagenet (torchvision-v1; keras with --variant keras)\n";

static int usage(void)
{
    fputs(usage_text, stderr);
    return 2;
}

/* The options a weights command reads, with the flags already applied. */
typedef struct {
    Config cfg;
    char weights_dir[CONFIG_PATH_MAX + 16];
    const char *name;
    const char *variant;
    int stall_timeout_s;
    int retries;
} WeightsArgs;

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "resnetd weights: %s: expected a whole number from %d to %d (got '%s')\n",
                flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Reads the configuration (file, environment) and then argv; the command's
 * positional NAME when want_name. Returns 0, or an exit status. */
static int weights_args(WeightsArgs *a, int argc, char **argv, int want_name)
{
    Error err;
    FetchOptions defaults;
    fetch_options_init(&defaults);
    memset(a, 0, sizeof *a);
    a->stall_timeout_s = defaults.stall_timeout_s;
    a->retries = defaults.retries;
    config_defaults(&a->cfg);
    const char *file = getenv("RESNETD_CONFIG");
    if ((file && *file && config_load_file(&a->cfg, file, &err)) ||
        config_load_env(&a->cfg, NULL, &err)) {
        fprintf(stderr, "resnetd weights: %s\n", err.msg);
        return 2;
    }
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *key = NULL;
        if (!strcmp(arg, "--manifest") || !strcmp(arg, "--weights-manifest"))
            key = "weights_manifest";
        else if (want_name && (!strcmp(arg, "--mirror") || !strcmp(arg, "--weights-mirror")))
            key = "weights_mirror";
        else if (!strcmp(arg, "--weights-dir"))
            key = "weights_dir";
        if (key || (want_name && (!strcmp(arg, "--variant") || !strcmp(arg, "--stall-timeout") ||
                                  !strcmp(arg, "--retries")))) {
            if (i + 1 >= argc) {
                fprintf(stderr, "resnetd weights: %s: missing value\n", arg);
                return 2;
            }
            const char *value = argv[++i];
            if (key && config_load_flag_option(&a->cfg, key, value, &err)) {
                fprintf(stderr, "resnetd weights: %s\n", err.msg);
                return 2;
            }
            if (!strcmp(arg, "--variant")) {
                if (strcmp(value, "torchvision") && strcmp(value, "keras")) {
                    fprintf(stderr, "resnetd weights: --variant: expected torchvision or keras "
                                    "(got '%s')\n", value);
                    return 2;
                }
                a->variant = value;
            }
            if (!strcmp(arg, "--stall-timeout") &&
                parse_int(arg, value, 1, 86400, &a->stall_timeout_s))
                return 2;
            if (!strcmp(arg, "--retries") && parse_int(arg, value, 0, 100, &a->retries))
                return 2;
        } else if (want_name && !a->name && arg[0] != '-') {
            a->name = arg;
        } else {
            fprintf(stderr, "resnetd weights: unexpected argument '%s'\n", arg);
            return usage();
        }
    }
    if (want_name && !a->name)
        return usage();
    /* as config_finish does, without the daemon's listen rule */
    if (a->cfg.weights_dir[0])
        snprintf(a->weights_dir, sizeof a->weights_dir, "%s", a->cfg.weights_dir);
    else
        snprintf(a->weights_dir, sizeof a->weights_dir, "%s/weights", a->cfg.data_dir);
    return 0;
}

static void format_bytes(char *buf, size_t n, uint64_t v)
{
    if (v >= 1000000)
        snprintf(buf, n, "%.1f MB", v / 1e6);
    else if (v >= 1000)
        snprintf(buf, n, "%.1f kB", v / 1e3);
    else
        snprintf(buf, n, "%llu B", (unsigned long long)v);
}

static int cmd_list(int argc, char **argv)
{
    WeightsArgs a;
    int rc = weights_args(&a, argc, argv, 0);
    if (rc)
        return rc;
    Error err;
    FetchManifest *m;
    if (fetch_manifest_load(&m, a.cfg.weights_manifest, &err)) {
        fprintf(stderr, "resnetd weights: %s\n", err.msg);
        return 1;
    }
    printf("manifest:       %s\nweights folder: %s\n", m->path, a.weights_dir);
    printf("%-16s %-12s %-12s %8s %10s  %-7s %s\n", "NAME", "VARIANT", "FORMAT", "TOP-1", "SIZE",
           "PINNED", "CACHED");
    for (int i = 0; i < m->n; i++) {
        const FetchEntry *e = &m->entries[i];
        char size[32], top1[16];
        if (e->size > 0)
            format_bytes(size, sizeof size, (uint64_t)e->size);
        else
            snprintf(size, sizeof size, "?");
        if (e->top1 >= 0)
            snprintf(top1, sizeof top1, "%.2f", e->top1);
        else
            snprintf(top1, sizeof top1, "-");
        const char *pinned = e->sha256[0] ? "sha256" : e->md5[0] ? "md5" : "none";
        printf("%-16s %-12s %-12s %8s %10s  %-7s %s\n", e->name, e->variant, e->format, top1,
               size, pinned, fetch_entry_cached(e, a.weights_dir) ? "yes" : "no");
    }
    printf("imagenet = %s (torchvision), %s (keras)\n", fetch_imagenet_name("torchvision"),
           fetch_imagenet_name("keras"));
    fetch_manifest_free(m);
    return 0;
}

/* What the progress callback draws: a bar on a terminal, else a line every 5 s. */
typedef struct {
    const char *name;
    int tty;
    int drawn;          /* a bar is on the line */
    double t0, last_line;
    int last_attempt;
} PullView;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_progress(void *ctx, const FetchProgress *p)
{
    PullView *v = ctx;
    double t = now_s();
    char done[32], total[32];
    format_bytes(done, sizeof done, p->done);
    if (p->total)
        format_bytes(total, sizeof total, p->total);
    else
        snprintf(total, sizeof total, "?");
    double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 0;
    const char *note = p->shared ? " (another download of it is under way: waiting)" : "";
    if (p->attempt > 1 && p->attempt != v->last_attempt) {
        fprintf(stderr, "%s%s: attempt %d, resuming at byte %llu\n", v->drawn ? "\n" : "",
                v->name, p->attempt, (unsigned long long)p->done);
        v->drawn = 0;
    }
    v->last_attempt = p->attempt;
    if (v->tty) {
        int width = 30, fill = p->total ? (int)(pct / 100 * width) : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r%s [%s] %5.1f%%  %s / %s%s   ", v->name, bar, pct, done, total, note);
        v->drawn = 1;
    } else if (t - v->last_line >= 5.0) {
        fprintf(stderr, "%s: %s of %s (%.0f%%)%s\n", v->name, done, total, pct, note);
        v->last_line = t;
    }
}

/* Pulls e as a and the configuration say, with progress on stderr; Ctrl-C and
 * SIGTERM cancel it (res->cancelled; the part file is kept). */
static int pull_one(const WeightsArgs *a, const FetchEntry *e, FetchHub *hub, FetchResult *res,
                    PullView *view, Error *err)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    *view = (PullView){e->name, isatty(STDERR_FILENO), 0, now_s(), now_s(), 1};
    FetchOptions o;
    fetch_options_init(&o);
    o.weights_dir = a->weights_dir;
    o.mirror = a->cfg.weights_mirror;
    o.stall_timeout_s = a->stall_timeout_s;
    o.retries = a->retries;
    o.progress = on_progress;
    o.progress_ctx = view;
    o.cancel = &interrupted;
    char url[FETCH_PATH_MAX];
    if (!fetch_entry_url(e, o.mirror, url, sizeof url, NULL) && fetch_entry_pinned(e) &&
        !fetch_entry_cached(e, o.weights_dir))
        fprintf(stderr, "pulling %s from %s into %s\n", e->name, url, o.weights_dir);
    int rc = fetch_pull(hub, e, &o, res, err);
    if (view->drawn)
        fputc('\n', stderr);
    return rc;
}

int cmd_weights_for_train(const char *weights, const char *variant, char *path, size_t n)
{
    WeightsArgs a;
    if (weights_args(&a, 0, NULL, 0))
        return -1;
    Error err;
    FetchManifest *m = NULL;
    const int alias = !strcmp(weights, "imagenet");
    if (fetch_manifest_load(&m, a.cfg.weights_manifest, &err)) {
        if (!alias)
            return 1;
        fprintf(stderr, "resnetd train: weights: %s\n", err.msg);
        return -1;
    }
    const FetchEntry *e;
    if (!alias && !fetch_manifest_find(m, weights)) {
        fetch_manifest_free(m);
        return 1;
    }
    FetchHub *hub = NULL;
    if (fetch_resolve(m, weights, variant, &e, &err) || fetch_hub_create(&hub, &err)) {
        fprintf(stderr, "resnetd train: weights: %s\n", err.msg);
        fetch_manifest_free(m);
        return -1;
    }
    FetchResult res;
    PullView view;
    int rc = pull_one(&a, e, hub, &res, &view, &err);
    if (rc)
        fprintf(stderr, "resnetd train: weights %s: %s\n", e->name, err.msg);
    else
        snprintf(path, n, "%s", res.path);
    fetch_hub_free(hub);
    fetch_manifest_free(m);
    return rc ? -1 : 0;
}

static int cmd_pull(int argc, char **argv)
{
    WeightsArgs a;
    int rc = weights_args(&a, argc, argv, 1);
    if (rc)
        return rc;
    Error err;
    FetchManifest *m = NULL;
    FetchHub *hub = NULL;
    const FetchEntry *e;
    if (fetch_manifest_load(&m, a.cfg.weights_manifest, &err) ||
        fetch_resolve(m, a.name, a.variant, &e, &err) || fetch_hub_create(&hub, &err)) {
        fprintf(stderr, "resnetd weights pull: %s\n", err.msg);
        fetch_manifest_free(m);
        return 1;
    }
    FetchResult res;
    PullView view;
    rc = pull_one(&a, e, hub, &res, &view, &err);
    if (rc) {
        fprintf(stderr, "resnetd weights pull: %s\n", err.msg);
        rc = res.cancelled ? 130 : 1;
    } else {
        if (res.cached)
            fprintf(stderr, "%s is already in the weights folder (verified when it was "
                            "installed)\n", e->name);
        else if (res.shared)
            fprintf(stderr, "%s was installed by another download of it\n", e->name);
        else
            fprintf(stderr, "%s: %llu bytes downloaded in %.1f s, %s verified\n", e->name,
                    (unsigned long long)res.bytes, now_s() - view.t0,
                    e->sha256[0] && e->md5[0] ? "SHA-256 and MD5" : e->sha256[0] ? "SHA-256"
                                                                        : "MD5");
        printf("%s\n", res.path);
    }
    fetch_hub_free(hub);
    fetch_manifest_free(m);
    return rc;
}

int cmd_weights(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    if (!strcmp(argv[0], "list"))
        return cmd_list(argc - 1, argv + 1);
    if (!strcmp(argv[0], "pull"))
        return cmd_pull(argc - 1, argv + 1);
    if (!strcmp(argv[0], "help") || !strcmp(argv[0], "--help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    fprintf(stderr, "resnetd weights: unknown subcommand '%s'\n", argv[0]);
    return usage();
}
