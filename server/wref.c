/*
 * wref.c: a job's "weights" value resolved to a file (wref.h).
 */
#include "wref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

int wref_resolve(const char *weights, const char *weights_dir, const char *data_dir, Wref *out,
                 Error *err)
{
    memset(out, 0, sizeof *out);
    if (!strcmp(weights, "random")) {
        out->kind = WREF_RANDOM;
        return 0;
    }
    if (!strncmp(weights, "job:", 4)) {
        const char *id = weights + 4;
        char *end = NULL;
        long long v = strtoll(id, &end, 10);
        if (!*id || *end || v <= 0 || strlen(id) > 18)
            return error_set(err, "'%s': job:ID needs a job id, such as job:3", weights);
        out->kind = WREF_JOB;
        out->job = v;
        worker_job_path(data_dir, v, "model.safetensors", out->path, sizeof out->path);
        return 0;
    }
    if (!*weights || strchr(weights, '/') || weights[0] == '.' || strlen(weights) >= 256)
        return error_set(err, "'%s' is not a file name in the weights folder", weights);
    out->kind = WREF_FILE;
    snprintf(out->file, sizeof out->file, "%s", weights);
    if (snprintf(out->path, sizeof out->path, "%s/%s", weights_dir, weights) >=
        (int)sizeof out->path)
        return error_set(err, "the weights path is too long");
    return 0;
}
