/*
 * wref.c: a job's "weights" value resolved to a file (wref.h).
 */
#include "wref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

int wref_resolve(const char *weights, const char *variant, const char *weights_dir,
                 const char *data_dir, const FetchManifest *manifest, const char *manifest_error,
                 Wref *out, Error *err)
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
    if (!access(out->path, F_OK))
        return 0;
    const int alias = !strcmp(weights, "imagenet");
    if (!manifest) {
        if (alias)
            return error_set(err, "'imagenet' needs the manifest of named weights, which did "
                             "not load: %s", manifest_error ? manifest_error : "none");
        return 0; /* a missing file: the caller says so */
    }
    const FetchEntry *e;
    if (!alias && !fetch_manifest_find(manifest, weights))
        return 0;
    if (fetch_resolve(manifest, weights, variant, &e, err))
        return -1;
    out->kind = WREF_NAMED;
    out->entry = e;
    snprintf(out->file, sizeof out->file, "%s", e->file);
    if (fetch_entry_path(e, weights_dir, out->path, sizeof out->path, err))
        return -1;
    out->cached = fetch_entry_cached(e, weights_dir);
    return 0;
}
