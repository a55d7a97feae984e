/*
 * main.c: the resnetd command line: version, inspect, train, predict.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <math.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "blas.h"
#include "cmd_weights.h"
#include "config.h"
#include "events.h"
#include "fetch.h"
#include "jobspec.h"
#include "log.h"
#include "predict.h"
#include "puller.h"
#include "resnet.h"
#include "store.h"
#include "train.h"
#include "weights.h"
#include "worker.h"

#define RESNETD_VERSION "0.1.0"

static int usage(FILE *out)
{
    fprintf(out,
            "usage: resnetd COMMAND [ARGS]\n"
            "commands:\n"
            "  serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR] [--data-root DIR]\n"
            "        [--weights-dir DIR] [--token T] [--threads N] [--blas-kernel env|auto]\n"
            "        [--insecure] [--print-config]\n"
            "                           run the daemon (docs/api.md, docs/configuration.md)\n"
            "  version                  print the version and the BLAS kernel in use\n"
            "  inspect FILE.safetensors|FILE.h5\n"
            "                           print variant, tensor count, parameter count, metadata\n"
            "                           (a Keras .h5 is read and checked as the converter does)\n"
            "  train SPEC.json [--db FILE] [--export OUT.safetensors]\n"
            "                [--checkpoint FILE [--resume] [--checkpoint-interval S]]\n"
            "                [--no-cache] [--cache-dir DIR] [--blas-kernel env|auto]\n"
            "                           run one fine-tuning job in the foreground (docs/jobs.md)\n"
            "  predict WEIGHTS IMAGE... [--top K] [--json]\n"
            "                           top-k classes of images with exported weights\n"
            "  weights list [--manifest M]\n"
            "                           named pretrained weights, and which are downloaded\n"
            "  weights pull NAME [--manifest M] [--mirror URL] [--weights-dir D]\n"
            "                           download, verify and install named weights\n"
            "                           (docs/weights.md, \"Named weights\")\n"
            "environment:\n"
            "  RESNETD_THREADS=N        compute threads (default 0: one per core)\n"
            "  OPENBLAS_CORETYPE=NAME   force an OpenBLAS kernel (default: the fastest for this CPU)\n"
            "  RESNETD_BLAS_KERNEL=auto let resnetd pick the fastest kernel even over\n"
            "                           OPENBLAS_CORETYPE (default env: OPENBLAS_CORETYPE wins)\n");
    return out == stderr ? 2 : 0;
}

/* Threads and blas_kernel: the options of commands other than serve, which take
 * them from the environment (RESNETD_THREADS, RESNETD_BLAS_KERNEL) through the
 * option table of config.c. */
static int command_options(Config *c, Error *err)
{
    config_defaults(c);
    if (config_load_env_option(c, "threads", NULL, err) ||
        config_load_env_option(c, "blas_kernel", NULL, err))
        return -1;
    return 0;
}

/* When the kernel in force is slower than the best this CPU supports: one
 * sentence naming both and how to let resnetd choose, into buf; returns 1. Else
 * returns 0 with buf empty. */
static int blas_advice(char *buf, size_t n)
{
    buf[0] = '\0';
    if (!blas_kernel_is_slower())
        return 0;
    const char *origin = blas_kernel_origin(), *best = blas_kernel_best();
    int used = snprintf(buf, n, "OpenBLAS kernel %s (chosen by %s) is slower than %s, which "
                        "this CPU supports", blas_kernel_name(), origin, best);
    if (used < 0 || (size_t)used >= n)
        return 1;
    if (!strcmp(origin, "user"))
        snprintf(buf + used, n - (size_t)used, "; to let resnetd choose %s over "
                 "OPENBLAS_CORETYPE, set blas_kernel = auto (RESNETD_BLAS_KERNEL=auto or "
                 "--blas-kernel auto) or unset OPENBLAS_CORETYPE", best);
    else
        snprintf(buf + used, n - (size_t)used, "; resnetd's switch to it (OPENBLAS_CORETYPE=%s "
                 "and a re-exec) did not take effect", best);
    return 1;
}

/* A warning at start: on stderr prefixed with who, or in the log when who is NULL
 * (serve). */
static void warn_at_start(const char *who, const char *msg)
{
    if (who)
        fprintf(stderr, "%s: warning: %s\n", who, msg);
    else
        log_msg(LOG_LEVEL_WARN, "%s", msg);
}

/* Starts OpenBLAS for a command: the kernel that c->blas_kernel asks for (which
 * may re-exec the process with argv, the whole command line), then the threads.
 * A kernel that cannot be had is a warning: the command runs on the kernel it
 * has. With advise, a kernel slower than this CPU's best is one too (serve and
 * train say so once, at start). Call once, before any thread exists. */
static void blas_start(char **argv, const Config *c, const char *who, int advise)
{
    Error err;
    if (blas_select_kernel(argv, (BlasKernelPolicy)c->blas_kernel, &err))
        warn_at_start(who, err.msg);
    blas_set_threads(c->threads);
    char advice[512];
    if (advise && blas_advice(advice, sizeof advice))
        warn_at_start(who, advice);
}

static int cmd_version(void)
{
    const char *best = blas_kernel_best();
    char advice[512];
    printf("resnetd %s\n", RESNETD_VERSION);
    printf("blas: OpenBLAS kernel %s (chosen by %s), %d threads; best for this CPU: %s\n",
           blas_kernel_name(), blas_kernel_origin(), blas_threads(),
           best ? best : "none of SkylakeX, Haswell (OpenBLAS's own choice)");
    if (blas_advice(advice, sizeof advice))
        printf("blas: %s\n", advice);
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: resnetd inspect FILE.safetensors|FILE.h5\n");
        return 2;
    }
    Error err;
    WeightsInfo info;
    if (weights_probe(argv[0], &info, &err)) {
        fprintf(stderr, "resnetd inspect: %s\n", err.msg);
        return 1;
    }
    printf("file:        %s\n", argv[0]);
    printf("variant:     %s\n", resnet_variant_name(info.variant));
    printf("naming:      %s\n", weights_naming_name(info.naming));
    printf("preprocess:  %s\n", info.preprocess);
    printf("tensors:     %d\n", info.n_tensors);
    printf("parameters:  %zu\n", info.n_params);
    if (info.has_head)
        printf("head:        %d classes%s", info.head_classes, info.head_hidden ? "" : "\n");
    if (info.has_head && info.head_hidden)
        printf(", hidden layer of %d\n", info.head_hidden);
    if (!info.has_head)
        printf("head:        none (backbone only)\n");
    if (info.classes)
        printf("classes:     %s\n", info.classes);
    weights_info_free(&info);
    return 0;
}

/* The only global mutable state: set by SIGINT/SIGTERM, read between batches. */
static volatile sig_atomic_t stop_requested;
static volatile int cancel_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    cancel_flag = 1;
}

typedef struct {
    int tty;
    int epochs_total;
    const char *export_path;
    int export_failed;
    int batch_size;
    double epoch_t0;      /* when the current epoch started */
    int epoch;            /* current epoch (0-based) */
    Store *store;         /* --db, or NULL */
    int64_t job;
    char *const *classes; /* borrowed from the dataset for the run */
    int store_failed;
} Progress;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A failed write to the store stops recording (the run goes on); reported once. */
static void store_failure(Progress *p, const Error *err)
{
    if (!p->store_failed)
        fprintf(stderr, "resnetd train: --db: %s; metrics are no longer recorded\n", err->msg);
    p->store_failed = 1;
}

static void train_on_start(void *ctx, const Dataset *ds, const struct Resnet *m,
                           const Preprocess *pp, int first_epoch, int first_step)
{
    (void)m;
    Progress *p = ctx;
    Error err;
    (void)pp;
    p->classes = ds->classes;
    p->epoch = first_epoch;
    p->epoch_t0 = now_seconds();
    if (first_epoch > 0 || first_step > 0)
        fprintf(stderr, "resuming at epoch %d, step %d from the checkpoint\n", first_epoch + 1,
                first_step + 1);
    if (!p->store || p->store_failed)
        return;
    if (store_job_trim(p->store, p->job, first_epoch, first_step, &err) ||
        store_job_started(p->store, p->job, ds, NULL, &err) ||
        store_job_set_state(p->store, p->job, JOB_RUNNING, NULL, &err))
        store_failure(p, &err);
}

static void train_on_done(void *ctx, const Resnet *m, const Dataset *ds, const Preprocess *pp)
{
    Progress *p = ctx;
    Error err;
    if (!p->export_path)
        return;
    if (train_export(m, ds, pp, p->export_path, &err)) {
        fprintf(stderr, "resnetd train: export failed: %s\n", err.msg);
        p->export_failed = 1;
    } else {
        fprintf(stderr, "exported %s (%d classes)\n", p->export_path, ds->n_classes);
    }
}

static void train_on_phase(void *ctx, int phase, const PhaseSpec *ph, const char *describe)
{
    Progress *p = ctx;
    Error err;
    fprintf(stderr, "phase %d \"%s\": %d epochs, train %s, %s lr %g: %s\n", phase + 1, ph->name,
            ph->epochs, ph->train, optim_type_name(ph->optimizer.type), ph->optimizer.lr,
            describe);
    if (p->store && !p->store_failed && store_job_phase(p->store, p->job, phase, ph->name, &err))
        store_failure(p, &err);
}

static void train_on_step(void *ctx, int epoch, int step, int steps, double loss, float lr)
{
    Progress *p = ctx;
    Error err;
    if (epoch != p->epoch) {
        p->epoch = epoch;
        p->epoch_t0 = now_seconds();
    }
    if (p->store && !p->store_failed &&
        store_step_put(p->store, p->job, epoch, step, steps, loss, lr, &err))
        store_failure(p, &err);
    if (!p->tty)
        return;
    double dt = now_seconds() - p->epoch_t0;
    double per_step = dt / (step + 1);
    double left = per_step * ((steps - step - 1) + (double)steps * (p->epochs_total - epoch - 1));
    fprintf(stderr, "\repoch %d/%d  step %d/%d  loss %.4f  lr %.3g  %.1f img/s  %d:%02d left   ",
            epoch + 1, p->epochs_total, step + 1, steps, loss, lr,
            dt > 0 ? (step + 1) * p->batch_size / dt : 0.0, (int)(left / 60), (int)left % 60);
}

static void train_on_epoch(void *ctx, const EpochReport *r)
{
    Progress *p = ctx;
    Error err;
    if (p->tty)
        fprintf(stderr, "\r%100s\r", "");
    printf("epoch %d/%d [%s] train loss %.4f acc %.4f | val loss %.4f acc %.4f balanced %.4f | "
           "lr %.3g | %.1f s, %.1f img/s%s%s\n", r->epoch + 1, r->epochs_total, r->phase_name,
           r->train_loss, r->train_accuracy, r->val_loss, r->val_accuracy,
           r->val_balanced_accuracy, r->lr, r->seconds, r->images_per_second,
           r->cached && r->full_forwards == 0 ? " (cached)" : "", r->best ? " *" : "");
    printf("  per stage (conv1..conv5, head): grad norm");
    for (int k = 0; k < TRAIN_STAGES; k++)
        printf(" %.3g", r->grad_norm[k]);
    printf(" | weight change");
    for (int k = 0; k < TRAIN_STAGES; k++)
        printf(" %.3g", r->weight_change[k]);
    printf("\n");
    fflush(stdout);
    if (p->store && !p->store_failed &&
        store_epoch_put(p->store, p->job, r, p->classes, &err))
        store_failure(p, &err);
    p->epoch = r->epoch + 1;
    p->epoch_t0 = now_seconds();
}

static void train_on_finding(void *ctx, const Finding *f)
{
    Progress *p = ctx;
    Error err;
    if (p->tty)
        fprintf(stderr, "\r%100s\r", "");
    printf("finding %s [%s]%s: %s\n  evidence: %s\n  fix: %s\n", f->code,
           diag_severity_name(f->severity), f->epoch >= 0 ? "" : " (before training)",
           f->message, f->evidence, f->fix);
    fflush(stdout);
    if (p->store && !p->store_failed && store_finding_put(p->store, p->job, f, &err))
        store_failure(p, &err);
}

/* With --resume: the latest unfinished job of the same spec text, else a new one. */
static int db_job(Store *st, const char *spec_text, const JobSpec *spec, int resume, int64_t *id,
                  Error *err)
{
    if (resume) {
        int found = store_job_unfinished_with_spec(st, spec_text, id, err);
        if (found)
            return found < 0 ? -1 : 0;
    }
    return store_job_insert(st, spec->name, spec_text, NULL, jobspec_total_epochs(spec),
                            JOB_QUEUED, id, err);
}

/* argc/argv: the arguments after "train"; cmdline: the whole command line (for
 * the kernel's re-exec); opts: the options read from the environment. */
static int cmd_train(int argc, char **argv, char **cmdline, Config *opts)
{
    const char *export_path = NULL, *spec_path = NULL, *db_path = NULL, *cache_dir = NULL;
    int bad_args = 0;
    Error err;
    TrainOptions topt;
    memset(&topt, 0, sizeof topt);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--export") && i + 1 < argc)
            export_path = argv[++i];
        else if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc)
            topt.checkpoint_path = argv[++i];
        else if (!strcmp(argv[i], "--db") && i + 1 < argc)
            db_path = argv[++i];
        else if (!strcmp(argv[i], "--cache-dir") && i + 1 < argc)
            cache_dir = argv[++i];
        else if (!strcmp(argv[i], "--resume"))
            topt.resume = 1;
        else if (!strcmp(argv[i], "--no-cache"))
            topt.no_activation_cache = 1;
        else if (!strcmp(argv[i], "--blas-kernel") && i + 1 < argc) {
            if (config_load_flag_option(opts, "blas_kernel", argv[++i], &err)) {
                fprintf(stderr, "resnetd train: %s\n", err.msg);
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--checkpoint-interval") && i + 1 < argc) {
            if (config_load_flag_option(opts, "checkpoint_interval", argv[++i], &err)) {
                fprintf(stderr, "resnetd train: %s\n", err.msg);
                return 2;
            }
        }
        else if (!spec_path && argv[i][0] != '-')
            spec_path = argv[i];
        else
            bad_args = 1;
    }
    if (bad_args || !spec_path || (topt.resume && !topt.checkpoint_path)) {
        fprintf(stderr, "usage: resnetd train SPEC.json [--db FILE] [--export OUT.safetensors] "
                        "[--checkpoint FILE [--resume] [--checkpoint-interval S]] [--no-cache] "
                        "[--cache-dir DIR] [--blas-kernel env|auto]\n");
        return 2;
    }
    topt.checkpoint_interval_s = opts->checkpoint_interval;
    /* Ctrl-C or SIGTERM writes a checkpoint at the batch it stopped at */
    topt.checkpoint_on_cancel = &cancel_flag;
    blas_start(cmdline, opts, "resnetd train", 1);
    FILE *f = fopen(spec_path, "rb");
    if (!f) {
        fprintf(stderr, "resnetd train: %s: %s\n", spec_path, strerror(errno));
        return 1;
    }
    static char buf[(1 << 20) + 1];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int read_error = ferror(f), too_big = !read_error && !feof(f);
    fclose(f);
    if (read_error || too_big) {
        fprintf(stderr, "resnetd train: %s: %s\n", spec_path,
                read_error ? "read error" : "larger than 1 MiB");
        return 1;
    }
    buf[n] = '\0';
    JobSpec spec;
    if (jobspec_parse(&spec, buf, n, NULL, 0, &err)) {
        fprintf(stderr, "resnetd train: %s: %s\n", spec_path, err.msg);
        return 1;
    }
    /* "imagenet" or a manifest name: downloaded once into the weights folder */
    if (strcmp(spec.weights, "random") && access(spec.weights, F_OK)) {
        char named[sizeof spec.weights];
        int r = cmd_weights_for_train(spec.weights, spec.variant, named, sizeof named);
        if (r < 0) {
            jobspec_free(&spec);
            return 1;
        }
        if (r == 0)
            memcpy(spec.weights, named, sizeof named);
    }
    /* the activation cache spills beside the checkpoint, else into --cache-dir
     * or the temporary folder */
    char spill[4096];
    if (cache_dir) {
        snprintf(spill, sizeof spill, "%s", cache_dir);
    } else if (topt.checkpoint_path) {
        snprintf(spill, sizeof spill, "%s", topt.checkpoint_path);
        char *slash = strrchr(spill, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(spill, sizeof spill, ".");
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(spill, sizeof spill, "%s", tmp && *tmp ? tmp : "/tmp");
    }
    topt.spill_dir = spill;
    Progress prog;
    memset(&prog, 0, sizeof prog);
    prog.tty = isatty(STDERR_FILENO);
    prog.epochs_total = jobspec_total_epochs(&spec);
    prog.export_path = export_path;
    prog.batch_size = spec.batch_size;
    if (db_path) {
        if (store_open(&prog.store, db_path, &err) ||
            db_job(prog.store, buf, &spec, topt.resume, &prog.job, &err)) {
            fprintf(stderr, "resnetd train: --db: %s\n", err.msg);
            store_close(prog.store);
            jobspec_free(&spec);
            return 1;
        }
        fprintf(stderr, "recording to %s as job %lld\n", db_path, (long long)prog.job);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    TrainCallbacks cb = {&prog, train_on_phase, train_on_step, train_on_epoch, &cancel_flag,
                         train_on_done, train_on_start, train_on_finding};
    TrainResult res;
    int rc = train_run(&spec, &topt, &cb, &res, &err);
    jobspec_free(&spec);
    if (prog.store && !prog.store_failed) {
        Error serr;
        if (store_job_set_state(prog.store, prog.job,
                                rc ? JOB_FAILED : res.cancelled ? JOB_CANCELLED : JOB_COMPLETED,
                                rc ? err.msg : NULL, &serr))
            fprintf(stderr, "resnetd train: --db: %s\n", serr.msg);
    }
    store_close(prog.store);
    if (rc) {
        fprintf(stderr, "resnetd train: %s\n", err.msg);
        return 1;
    }
    if (res.cancelled) {
        fprintf(stderr, "resnetd train: cancelled after %d epochs\n", res.epochs_run);
        return 130;
    }
    return prog.export_failed ? 1 : 0;
}

static void json_string_out(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static int cmd_predict(int argc, char **argv)
{
    int top = 5, as_json = 0, n_images = 0;
    const char *weights = NULL;
    const char **images = calloc((size_t)argc + 1, sizeof *images);
    if (!images)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (!strcmp(argv[i], "--top") && i + 1 < argc) {
            char *end;
            long k = strtol(argv[++i], &end, 10);
            if (*end || k < 1 || k > 1000) {
                fprintf(stderr, "resnetd predict: --top must be a whole number from 1 to 1000\n");
                free(images);
                return 2;
            }
            top = (int)k;
        } else if (!weights) {
            weights = argv[i];
        } else {
            images[n_images++] = argv[i];
        }
    }
    if (!weights || n_images == 0) {
        fprintf(stderr, "usage: resnetd predict WEIGHTS IMAGE... [--top K] [--json]\n");
        free(images);
        return 2;
    }
    Error err;
    Predictor *pr;
    if (predictor_load(&pr, weights, &err)) {
        fprintf(stderr, "resnetd predict: %s\n", err.msg);
        free(images);
        return 1;
    }
    Prediction *out = calloc((size_t)top, sizeof *out);
    int failed = 0;
    if (as_json) printf("[");
    for (int i = 0; i < n_images && out; i++) {
        int n;
        if (predictor_run_file(pr, images[i], top, out, &n, &err)) {
            fprintf(stderr, "resnetd predict: %s\n", err.msg);
            failed = 1;
            n = 0;
        }
        if (as_json) {
            printf("%s[", i ? ", " : "");
            for (int j = 0; j < n; j++) {
                printf("%s{\"index\": %d, \"class\": ", j ? ", " : "", out[j].index);
                json_string_out(out[j].name);
                if (isfinite(out[j].prob))
                    printf(", \"prob\": %.6f}", out[j].prob);
                else
                    printf(", \"prob\": null}");
            }
            printf("]");
        } else if (n > 0) {
            printf("%s:", images[i]);
            for (int j = 0; j < n; j++)
                printf("%s %s %.4f", j ? "," : "", out[j].name, out[j].prob);
            printf("\n");
        }
    }
    if (as_json) printf("]\n");
    free(out);
    free(images);
    predictor_free(pr);
    return failed ? 1 : 0;
}

/* mkdir -p for one level below an existing parent, or the folder itself. */
static int ensure_dir(const char *path, Error *err)
{
    char buf[4200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return error_set(err, "cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return error_set(err, "cannot create %s: %s", buf, strerror(errno));
    return 0;
}

/* The dashboard's folder: $RESNETD_WEB_DIR, ./web, web/ beside the binary's
 * folder (build/resnetd -> web/), or /usr/share/resnetd/web. */
static void find_web_dir(char *out, size_t len)
{
    const char *env = getenv("RESNETD_WEB_DIR");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char cand[3][4200];
    snprintf(cand[0], sizeof cand[0], "web");
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(cand[1], sizeof cand[1], "%s/../web", exe);
    snprintf(cand[2], sizeof cand[2], "/usr/share/resnetd/web");
    for (int i = 0; i < 3; i++) {
        char index[4300];
        if (snprintf(index, sizeof index, "%s/index.html", cand[i]) < (int)sizeof index &&
            access(index, R_OK) == 0 && snprintf(out, len, "%s", cand[i]) < (int)len)
            return;
    }
    snprintf(out, len, "web");
}

extern char **environ;

/* Jobs left "fetching" by a previous daemon: their downloads start again (and
 * resume their part files), or they fail when their weights left the manifest. */
static void resume_fetching(const char *db, const FetchManifest *manifest,
                            const char *manifest_error, Puller *puller)
{
    Store *st;
    Error err;
    if (store_connect(&st, db, &err))
        return;
    json_t *ids = store_jobs_fetching(st, &err);
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        int64_t id = json_integer_value(v);
        int missing;
        json_t *j = store_job_get(st, id, &missing, &err);
        json_t *res = json_object_get(j, "resolved");
        const char *name = json_string_value(json_object_get(res, "weights_name"));
        const FetchEntry *e = manifest && name ? fetch_manifest_find(manifest, name) : NULL;
        if (e && !puller_start(puller, e, id, &err)) {
            log_msg(LOG_LEVEL_INFO, "job %lld: its weights %s download again", (long long)id,
                    name);
        } else {
            char why[sizeof err.msg + 128];
            snprintf(why, sizeof why, "weights %s: %s", name ? name : "?",
                     !manifest ? manifest_error : e ? err.msg : "no longer in the manifest");
            store_job_fetched(st, id, why, &err);
        }
        json_decref(j);
    }
    json_decref(ids);
    store_close(st);
}

/* argc/argv: the arguments after "serve"; cmdline: the whole command line (for
 * the kernel's re-exec). */
static int cmd_serve(int argc, char **argv, char **cmdline)
{
    Config cfg;
    Error err;
    if (config_load(&cfg, argc, argv, environ, &err)) {
        fprintf(stderr, "resnetd serve: %s\n", err.msg);
        return 2;
    }
    if (config_find_flag(argc, argv, "--print-config", NULL) == 1) {
        config_print(&cfg, stdout);
        return 0;
    }
    log_set_level(cfg.log_level);
    blas_start(cmdline, &cfg, NULL, 1);
    char db[4200], datasets[4200], jobs[4200], web[4200];
    snprintf(db, sizeof db, "%s/resnetd.db", cfg.data_dir);
    snprintf(datasets, sizeof datasets, "%s/datasets", cfg.data_dir);
    snprintf(jobs, sizeof jobs, "%s/jobs", cfg.data_dir);
    if (ensure_dir(cfg.data_dir, &err) || ensure_dir(datasets, &err) || ensure_dir(jobs, &err) ||
        ensure_dir(cfg.weights_dir, &err)) {
        fprintf(stderr, "resnetd serve: %s\n", err.msg);
        return 1;
    }
    find_web_dir(web, sizeof web);
    Store *st;
    if (store_open(&st, db, &err)) { /* creates or migrates the schema, once */
        fprintf(stderr, "resnetd serve: %s\n", err.msg);
        return 1;
    }
    int64_t running;
    if (store_job_running(st, &running, &err) > 0)
        log_msg(LOG_LEVEL_INFO, "job %lld was running when the daemon stopped: it resumes from "
                "its last checkpoint", (long long)running);
    store_close(st);
    /* named weights: a manifest that does not load turns them off, with the reason
     * given to whoever asks for one */
    FetchManifest *manifest = NULL;
    char manifest_error[sizeof err.msg] = "";
    if (fetch_manifest_load(&manifest, cfg.weights_manifest, &err)) {
        snprintf(manifest_error, sizeof manifest_error, "%s", err.msg);
        log_msg(LOG_LEVEL_WARN, "named weights are off: %s", err.msg);
    }
    FetchHub *hub = NULL;
    if (fetch_hub_create(&hub, &err)) {
        fprintf(stderr, "resnetd serve: %s\n", err.msg);
        fetch_manifest_free(manifest);
        return 1;
    }

    /* SIGINT and SIGTERM are taken by sigwait below, in this thread only */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    EventHub *events = events_create();
    Worker *worker = NULL;
    WorkerConfig wc = {db,         cfg.data_dir,   cfg.weights_dir, cfg.cache_bytes,
                       cfg.max_pixels, cfg.checkpoint_interval, events};
    Puller *puller = NULL;
    PullerConfig pc = {hub, cfg.weights_dir, cfg.weights_mirror, db, events, NULL};
    if (!events || worker_start(&worker, &wc, &err) ||
        (pc.worker = worker, puller_create(&puller, &pc, &err))) {
        fprintf(stderr, "resnetd serve: %s\n", events ? err.msg : "out of memory");
        worker_stop(worker);
        events_free(events);
        fetch_hub_free(hub);
        fetch_manifest_free(manifest);
        return 1;
    }
    resume_fetching(db, manifest, manifest_error, puller);
    ApiConfig ac = {cfg.listen_host, cfg.listen_port, db, cfg.data_dir, cfg.data_root,
                    cfg.weights_dir, web, cfg.token, cfg.body_limit, cfg.upload_limit,
                    cfg.cache_bytes, cfg.max_pixels, cfg.max_jobs_queued, cfg.threads, worker,
                    events, manifest, manifest_error, puller};
    Api *api;
    if (api_start(&api, &ac, &err)) {
        fprintf(stderr, "resnetd serve: %s\n", err.msg);
        puller_free(puller);
        worker_stop(worker);
        events_free(events);
        fetch_hub_free(hub);
        fetch_manifest_free(manifest);
        return 1;
    }
    log_msg(LOG_LEVEL_INFO, "resnetd %s listening on http://%s:%d/ (data in %s, %s kernel, %d "
            "threads%s)", RESNETD_VERSION, cfg.listen_host, api_port(api), cfg.data_dir,
            blas_kernel_name(), blas_threads(), cfg.token[0] ? ", token required" : "");
    int sig = 0;
    sigwait(&sigs, &sig);
    log_msg(LOG_LEVEL_INFO, "%s: stopping (the running batch finishes and is checkpointed)",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    api_quiesce(api);
    puller_free(puller); /* downloads stop; their part files and jobs wait for the next start */
    worker_stop(worker);
    events_close(events);
    api_stop(api);
    events_free(events);
    fetch_hub_free(hub);
    fetch_manifest_free(manifest);
    log_msg(LOG_LEVEL_INFO, "stopped");
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc < 2 ? "" : argv[1];
    /* serve reads its options (file, environment, flags) before it starts OpenBLAS */
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 2, argv + 2, argv);
    /* weights needs no BLAS (and no re-exec for its kernel) */
    if (!strcmp(cmd, "weights"))
        return cmd_weights(argc - 2, argv + 2);
    Config opts;
    Error err;
    if (command_options(&opts, &err)) {
        fprintf(stderr, "resnetd: %s\n", err.msg);
        return 2;
    }
    /* so does train, which also takes --blas-kernel */
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 2, argv + 2, argv, &opts);
    blas_start(argv, &opts, "resnetd", 0);
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version"))
        return cmd_version();
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "predict"))
        return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
        return usage(stdout);
    fprintf(stderr, "resnetd: unknown command '%s'\n", cmd);
    return usage(stderr);
}
