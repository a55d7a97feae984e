/*
 * main.c: the resnetd command line: `version`, `inspect FILE.safetensors`.
 * (`serve` and `train` arrive with the daemon and training issues.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "blas.h"
#include "jobspec.h"
#include "predict.h"
#include "resnet.h"
#include "train.h"
#include "weights.h"

#define RESNETD_VERSION "0.1.0"

static int usage(FILE *out)
{
    fprintf(out,
            "usage: resnetd COMMAND [ARGS]\n"
            "commands:\n"
            "  version                  print the version and the BLAS kernel in use\n"
            "  inspect FILE.safetensors print variant, tensor count, parameter count, metadata\n"
            "  train SPEC.json [--export OUT.safetensors] [--checkpoint FILE [--resume]]\n"
            "                [--no-cache]\n"
            "                           run one fine-tuning job in the foreground (docs/jobs.md)\n"
            "  predict WEIGHTS IMAGE... [--top K] [--json]\n"
            "                           top-k classes of images with exported weights\n"
            "environment:\n"
            "  RESNETD_THREADS=N        compute threads (default 0: one per core)\n"
            "  OPENBLAS_CORETYPE=NAME   force an OpenBLAS kernel (default: the fastest for this CPU)\n");
    return out == stderr ? 2 : 0;
}

static int cmd_version(void)
{
    printf("resnetd %s\n", RESNETD_VERSION);
    printf("blas: OpenBLAS kernel %s (chosen by %s), %d threads\n", blas_kernel_name(),
           blas_kernel_origin(), blas_threads());
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: resnetd inspect FILE.safetensors\n");
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
    double t_start;
    int epochs_total;
    const char *export_path;
    int export_failed;
} Progress;

static void train_on_done(void *ctx, const Resnet *m, const Dataset *ds, const Preprocess *p)
{
    Progress *pr = ctx;
    Error err;
    if (!pr->export_path)
        return;
    if (train_export(m, ds, p, pr->export_path, &err)) {
        fprintf(stderr, "resnetd train: export failed: %s\n", err.msg);
        pr->export_failed = 1;
    } else {
        fprintf(stderr, "exported %s (%d classes)\n", pr->export_path, ds->n_classes);
    }
}

static void train_on_phase(void *ctx, int phase, const PhaseSpec *ph, const char *describe)
{
    (void)ctx;
    fprintf(stderr, "phase %d \"%s\": %d epochs, train %s, %s lr %g: %s\n", phase + 1, ph->name,
            ph->epochs, ph->train, optim_type_name(ph->optimizer.type), ph->optimizer.lr,
            describe);
}

static void train_on_step(void *ctx, int epoch, int step, int steps, double loss, float lr)
{
    Progress *p = ctx;
    if (p->tty)
        fprintf(stderr, "\repoch %d/%d  step %d/%d  loss %.4f  lr %.3g   ", epoch + 1,
                p->epochs_total, step + 1, steps, loss, lr);
}

static void train_on_epoch(void *ctx, const EpochReport *r)
{
    Progress *p = ctx;
    if (p->tty)
        fprintf(stderr, "\r%80s\r", "");
    printf("epoch %d/%d [%s] train loss %.4f acc %.4f | val loss %.4f acc %.4f balanced %.4f | "
           "lr %.3g | %.1f s, %.1f img/s%s\n", r->epoch + 1, r->epochs_total, r->phase_name,
           r->train_loss, r->train_accuracy, r->val_loss, r->val_accuracy,
           r->val_balanced_accuracy, r->lr, r->seconds, r->images_per_second,
           r->best ? " *" : "");
    printf("  per stage (conv1..conv5, head): grad norm");
    for (int k = 0; k < TRAIN_STAGES; k++)
        printf(" %.3g", r->grad_norm[k]);
    printf(" | weight change");
    for (int k = 0; k < TRAIN_STAGES; k++)
        printf(" %.3g", r->weight_change[k]);
    printf("\n");
    fflush(stdout);
}

static int cmd_train(int argc, char **argv)
{
    const char *export_path = NULL, *spec_path = NULL;
    int bad_args = 0;
    TrainOptions topt = {NULL, 0, 0, 0};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--export") && i + 1 < argc)
            export_path = argv[++i];
        else if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc)
            topt.checkpoint_path = argv[++i];
        else if (!strcmp(argv[i], "--resume"))
            topt.resume = 1;
        else if (!strcmp(argv[i], "--no-cache"))
            topt.no_activation_cache = 1;
        else if (!spec_path && argv[i][0] != '-')
            spec_path = argv[i];
        else
            bad_args = 1;
    }
    if (bad_args || !spec_path || (topt.resume && !topt.checkpoint_path)) {
        fprintf(stderr, "usage: resnetd train SPEC.json [--export OUT.safetensors] "
                        "[--checkpoint FILE [--resume]] [--no-cache]\n");
        return 2;
    }
    FILE *f = fopen(spec_path, "rb");
    if (!f) {
        fprintf(stderr, "resnetd train: %s: %s\n", spec_path, strerror(errno));
        return 1;
    }
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    int read_error = ferror(f), too_big = !read_error && !feof(f);
    fclose(f);
    if (read_error || too_big) {
        fprintf(stderr, "resnetd train: %s: %s\n", spec_path,
                read_error ? "read error" : "larger than 1 MiB");
        return 1;
    }
    JobSpec spec;
    Error err;
    if (jobspec_parse(&spec, buf, n, NULL, 0, &err)) {
        fprintf(stderr, "resnetd train: %s: %s\n", spec_path, err.msg);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    Progress prog = {isatty(STDERR_FILENO), 0, jobspec_total_epochs(&spec), export_path, 0};
    TrainCallbacks cb = {&prog, train_on_phase, train_on_step, train_on_epoch, &cancel_flag,
                         train_on_done};
    TrainResult res;
    int rc = train_run(&spec, &topt, &cb, &res, &err);
    jobspec_free(&spec);
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
                printf(", \"prob\": %.6f}", out[j].prob);
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

int main(int argc, char **argv)
{
    Error err;
    if (blas_select_kernel(argv, &err))
        fprintf(stderr, "resnetd: warning: %s\n", err.msg);
    const char *threads = getenv("RESNETD_THREADS");
    char *end = NULL;
    long nthreads = threads ? strtol(threads, &end, 10) : 0;
    if (threads && (*threads == '\0' || *end != '\0' || nthreads < 0 || nthreads > 1024)) {
        fprintf(stderr, "resnetd: RESNETD_THREADS must be a whole number from 0 (all cores) "
                        "to 1024, got '%s'\n", threads);
        return 2;
    }
    blas_set_threads((int)nthreads);
    if (argc < 2)
        return usage(stderr);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version"))
        return cmd_version();
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "predict"))
        return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
        return usage(stdout);
    fprintf(stderr, "resnetd: unknown command '%s'\n", cmd);
    return usage(stderr);
}
