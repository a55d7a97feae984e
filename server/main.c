/*
 * main.c: the resnetd command line: `version`, `inspect FILE.safetensors`.
 * (`serve` and `train` arrive with the daemon and training issues.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "resnet.h"
#include "weights.h"

#define RESNETD_VERSION "0.1.0"

static int usage(FILE *out)
{
    fprintf(out,
            "usage: resnetd COMMAND [ARGS]\n"
            "commands:\n"
            "  version                  print the version and the BLAS kernel in use\n"
            "  inspect FILE.safetensors print variant, tensor count, parameter count, metadata\n"
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
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
        return usage(stdout);
    fprintf(stderr, "resnetd: unknown command '%s'\n", cmd);
    return usage(stderr);
}
