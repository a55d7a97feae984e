/* jobcheck.c: a job's submit-time checks (see jobcheck.h). */
#include "jobcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "select.h"
#include "weights.h"

int jobcheck_preprocess(const JobSpec *s, const char *declared, Normalization *norm,
                        int *overridden, const char **from, Error *err)
{
    const int has_declared = declared && *declared;
    const int is_auto = !strcmp(s->preprocess, "auto");
    *from = is_auto ? "weights" : "job";
    if (is_auto && !has_declared) {
        *overridden = 0;
        *from = "default for random weights";
        return preprocess_norm_from_name(norm, JOBCHECK_RANDOM_PREPROCESS, err);
    }
    if (!strcmp(s->preprocess, "custom")) {
        *norm = s->custom;
        return preprocess_resolve_norm(norm, NULL, declared, s->preprocess_override,
                                       overridden, err);
    }
    return preprocess_resolve_norm(norm, s->preprocess, declared, s->preprocess_override,
                                   overridden, err);
}

/* A cgroup memory limit in bytes, or 0 when there is none (or it is unreadable). */
static double cgroup_limit(void)
{
    static const char *const files[] = {"/sys/fs/cgroup/memory.max",
                                        "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f)
            continue;
        char line[64] = "";
        double v = 0;
        if (fgets(line, sizeof line, f) && strncmp(line, "max", 3))
            v = strtod(line, NULL);
        fclose(f);
        if (v > 0)
            return v;
    }
    return 0;
}

double jobcheck_memory_limit(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double phys = pages > 0 && page > 0 ? (double)pages * (double)page : 0;
    double cg = cgroup_limit();
    return cg > 0 && (phys <= 0 || cg < phys) ? cg : phys;
}

static int fail_at(char *path, size_t path_len, const char *where)
{
    if (path && path_len)
        snprintf(path, path_len, "%s", where);
    return -1;
}

/* The training memory of s on m: parameters with their gradients, the
 * optimizer's state (Adam's two moments at most), the copies a job keeps (start,
 * best, the BN check's scratch), the activations of one batch, and the loader's
 * queue of ready batches. The image and frozen-prefix caches have budgets of
 * their own and spill or shrink, so they are not counted. */
static int memory_estimate(const JobSpec *s, Resnet *m, double *bytes, Error *err)
{
    size_t act = 0;
    if (resnet_plan_bytes(m, s->batch_size, s->input_size, &act, err))
        return -1;
    const double params = (double)m->n_floats * sizeof(float);
    const double batch_in = (double)s->batch_size * s->input_size * s->input_size * 3 *
                            sizeof(float);
    *bytes = params * (2 + 2 + 3) + (double)act + 4 * batch_in;
    return 0;
}

int jobcheck_variant(const JobSpec *s, const ResnetVariant *weights, ResnetVariant *out,
                     Error *err)
{
    const int keras = !strcmp(s->variant, "keras");
    if (!weights) {
        *out = keras ? RESNET_KERAS : RESNET_TORCHVISION;
        return 0;
    }
    *out = *weights;
    if (s->variant[0] && keras != (*weights == RESNET_KERAS))
        return error_set(err, "variant: the job says \"%s\" but the weights are a %s ResNet50",
                         s->variant, resnet_variant_name(*weights));
    return 0;
}

/* jobcheck_run and jobcheck_run_declared: the weights file at weights_path, or
 * (weights_path NULL) what decl says a file will hold, or (both NULL) random
 * weights. */
static int check(const JobSpec *s, const char *weights_path, const JobDeclared *decl,
                 const char *const *classes, int n_classes, JobResolved *out, char *path,
                 size_t path_len, Error *err)
{
    memset(out, 0, sizeof *out);
    if (path && path_len)
        path[0] = '\0';
    WeightsInfo info = {0};
    Resnet *m = NULL;
    int rc = -1;
    if (weights_path && weights_probe(weights_path, &info, err)) {
        error_wrap(err, "weights");
        fail_at(path, path_len, "weights");
        goto done;
    }
    const ResnetVariant *have = weights_path ? &info.variant : decl ? &decl->variant : NULL;
    if (jobcheck_variant(s, have, &out->variant, err)) {
        fail_at(path, path_len, "variant");
        goto done;
    }

    Normalization norm;
    memset(&norm, 0, sizeof norm);
    const char *declared = weights_path ? info.preprocess : decl ? decl->preprocess : NULL;
    if (jobcheck_preprocess(s, declared, &norm, &out->overridden, &out->preprocess_from,
                            err)) {
        error_wrap(err, "preprocess");
        fail_at(path, path_len, "preprocess");
        goto done;
    }
    snprintf(out->preprocess, sizeof out->preprocess, "%s", preprocess_norm_name(norm.mode));

    if (classes && s->class_weight == CLASS_WEIGHT_MAP)
        for (int i = 0; i < s->n_class_weights; i++) {
            int found = 0;
            for (int c = 0; c < n_classes && !found; c++)
                found = !strcmp(classes[c], s->class_weight_names[i]);
            if (!found) {
                char where[160];
                snprintf(where, sizeof where, "class_weight.%s", s->class_weight_names[i]);
                error_set(err, "%s: the dataset has no class '%s' (it has %d classes)", where,
                          s->class_weight_names[i], n_classes);
                fail_at(path, path_len, where);
                goto done;
            }
        }

    ResnetConfig cfg = {out->variant, n_classes > 0 ? n_classes : 2, s->head_hidden,
                        s->head_dropout};
    if (resnet_create(&m, &cfg, err)) {
        fail_at(path, path_len, "");
        goto done;
    }
    if (weights_path && weights_load(m, weights_path, 0, err)) {
        error_wrap(err, "weights");
        fail_at(path, path_len, "weights");
        goto done;
    }
    for (int i = 0; i < s->n_phases; i++)
        if (select_trainable(m, s->phases[i].train, s->phases[i].bn, NULL, err)) {
            char where[64];
            snprintf(where, sizeof where, "phases[%d].train", i);
            error_wrap(err, "%s", where);
            fail_at(path, path_len, where);
            goto done;
        }

    if (memory_estimate(s, m, &out->memory_bytes, err)) {
        fail_at(path, path_len, "input_size");
        goto done;
    }
    out->memory_limit = jobcheck_memory_limit();
    if (out->memory_limit > 0 && out->memory_bytes > out->memory_limit) {
        error_set(err, "batch_size: training %d images of %dx%d at a time needs about %.1f GiB "
                  "of memory, more than the %.1f GiB this machine offers: lower batch_size or "
                  "input_size", s->batch_size, s->input_size, s->input_size,
                  out->memory_bytes / 1073741824.0, out->memory_limit / 1073741824.0);
        fail_at(path, path_len, "batch_size");
        goto done;
    }
    rc = 0;
done:
    resnet_free(m);
    weights_info_free(&info);
    return rc;
}

int jobcheck_run(const JobSpec *s, const char *weights_path, const char *const *classes,
                 int n_classes, JobResolved *out, char *path, size_t path_len, Error *err)
{
    return check(s, weights_path, NULL, classes, n_classes, out, path, path_len, err);
}

int jobcheck_run_declared(const JobSpec *s, const JobDeclared *decl, const char *const *classes,
                          int n_classes, JobResolved *out, char *path, size_t path_len,
                          Error *err)
{
    return check(s, NULL, decl, classes, n_classes, out, path, path_len, err);
}
