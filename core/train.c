/*
 * train.c: the fine-tuning loop (see train.h for the contract).
 */
#include "train.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>

#include "jobcheck.h"
#include "loader.h"
#include "optim.h"
#include "resnet.h"
#include "safetensors.h"
#include "schedule.h"
#include "select.h"
#include "weights.h"

const char *const train_stage_names[TRAIN_STAGES] = {"conv1", "conv2", "conv3", "conv4",
                                                    "conv5", "head"};

/* Stage of layer i (see TRAIN_STAGES). */
static int layer_stage(const Resnet *m, int i)
{
    if (i == m->out_fc || i == m->hidden_fc)
        return 5;
    const char *n = m->layers[i].name;
    if (!strncmp(n, "layer", 5) && n[5] >= '1' && n[5] <= '4')
        return n[5] - '0';
    return 0;
}

/* Adds, per stage, the L2 norm of the current gradients of trainable parameters. */
static void add_grad_norms(const Resnet *m, double *acc)
{
    double sq[TRAIN_STAGES] = {0};
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        if (!m->layers[p->layer].trainable || p->role == PARAM_RUNNING_MEAN ||
            p->role == PARAM_RUNNING_VAR)
            continue;
        const float *g = m->grad_data + p->offset;
        double s = 0;
        for (size_t j = 0; j < p->numel; j++)
            s += (double)g[j] * g[j];
        sq[layer_stage(m, p->layer)] += s;
    }
    for (int k = 0; k < TRAIN_STAGES; k++)
        acc[k] += sqrt(sq[k]);
}

/* ||w - w0|| / ||w0|| per stage over weights and biases. */
static void weight_changes(const Resnet *m, const float *w0, double *out)
{
    double d[TRAIN_STAGES] = {0}, n[TRAIN_STAGES] = {0};
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        if (p->role == PARAM_RUNNING_MEAN || p->role == PARAM_RUNNING_VAR)
            continue;
        int k = layer_stage(m, p->layer);
        const float *w = m->param_data + p->offset, *v = w0 + p->offset;
        for (size_t j = 0; j < p->numel; j++) {
            double e = (double)w[j] - v[j];
            d[k] += e * e;
            n[k] += (double)v[j] * v[j];
        }
    }
    for (int k = 0; k < TRAIN_STAGES; k++)
        out[k] = n[k] > 0 ? sqrt(d[k] / n[k]) : 0.0;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Per-class loss weights from the spec (NULL for none), from the train counts. */
static int class_weights(const JobSpec *s, const Dataset *ds, float **out, Error *err)
{
    *out = NULL;
    if (s->class_weight == CLASS_WEIGHT_NONE)
        return 0;
    float *w = calloc((size_t)ds->n_classes, sizeof(float));
    if (!w)
        return error_set(err, "out of memory");
    if (s->class_weight == CLASS_WEIGHT_BALANCED) {
        int *counts = malloc((size_t)ds->n_classes * sizeof(int));
        if (!counts) {
            free(w);
            return error_set(err, "out of memory");
        }
        for (int c = 0; c < ds->n_classes; c++)
            counts[c] = ds->counts[c].count[SPLIT_TRAIN];
        metrics_class_weights_balanced(counts, ds->n_classes, w);
        free(counts);
    } else {
        for (int c = 0; c < ds->n_classes; c++)
            w[c] = 1.0f;
        for (int i = 0; i < s->n_class_weights; i++) {
            int c = dataset_class_index(ds, s->class_weight_names[i]);
            if (c < 0) {
                free(w);
                return error_set(err, "class_weight.%s: the dataset has no class '%s'",
                                 s->class_weight_names[i], s->class_weight_names[i]);
            }
            w[c] = s->class_weight_values[i];
        }
    }
    *out = w;
    return 0;
}

/* Builds the model: seeded random init, then the backbone from the weights file
 * (the head is always new: its classes are the dataset's). Resolves the
 * normalisation against what the weights declare. */
/* What the weights file said, for the preflight. */
typedef struct {
    char declared[16];   /* the preprocessing the weights declare ("" for random) */
    int overridden;
    int has_head, head_classes, head_hidden;
    ResnetVariant variant;
} WeightsFacts;

static int build_model(const JobSpec *s, int n_classes, Resnet **out, Normalization *norm,
                       WeightsFacts *facts, Error *err)
{
    WeightsInfo info = {0};
    memset(facts, 0, sizeof *facts);
    int random = !strcmp(s->weights, "random");
    if (!random && weights_probe(s->weights, &info, err))
        return -1;
    ResnetConfig cfg = {RESNET_TORCHVISION, n_classes, s->head_hidden, s->head_dropout};
    if (jobcheck_variant(s, random ? NULL : &info.variant, &cfg.variant, err)) {
        weights_info_free(&info);
        return -1;
    }
    int overridden = 0;
    const char *from;
    if (jobcheck_preprocess(s, random ? NULL : info.preprocess, norm, &overridden, &from, err)) {
        error_wrap(err, "preprocess");
        weights_info_free(&info);
        return -1;
    }
    if (!random) {
        snprintf(facts->declared, sizeof facts->declared, "%s", info.preprocess);
        facts->has_head = info.has_head;
        facts->head_classes = info.head_classes;
        facts->head_hidden = info.head_hidden;
        facts->variant = info.variant;
    }
    facts->overridden = overridden;
    if (resnet_create(out, &cfg, err)) {
        weights_info_free(&info);
        return -1;
    }
    resnet_init_random(*out, s->seed);
    if (!random) {
        if (weights_load(*out, s->weights, 0, err)) {
            resnet_free(*out);
            *out = NULL;
            weights_info_free(&info);
            return -1;
        }
        /* a new head whose draws depend on the backbone it sits on: weights that
         * resnetd pretrained with this seed must not get their own initial head back */
        resnet_init_head(*out, s->seed, resnet_backbone_fingerprint(*out));
    }
    rng_stream(&(*out)->dropout_rng, s->seed, RNG_DROPOUT, 0, 0);
    weights_info_free(&info);
    return 0;
}

static int better(const char *monitor, double value, double best, double min_delta)
{
    if (!strcmp(monitor, "val_loss"))
        return value < best - min_delta;
    return value > best + min_delta;
}

static double monitored(const char *monitor, const EpochReport *r)
{
    if (!strcmp(monitor, "val_accuracy"))
        return r->val_accuracy;
    if (!strcmp(monitor, "val_balanced_accuracy"))
        return r->val_balanced_accuracy;
    return r->val_loss;
}

/* ---- frozen-prefix activation cache ------------------------------------------
 * When everything below unit U is frozen (and so runs BN in inference mode) and
 * augmentation is off, the input of U is a fixed function of the image: it is
 * captured during the phase's first pass over each image and later epochs (and
 * validation) start the forward at U. */
typedef struct {
    int unit;             /* -1: off */
    size_t floats;        /* per image */
    float *data;          /* [dataset items][floats]: malloc'd, or a mapped file */
    size_t mapped;        /* bytes mapped from the spill file (0: in memory) */
    unsigned char *have;  /* per item */
    int have_count[SPLIT_COUNT];
    float *batch;         /* [batch][floats] */
    int *order, *labels;
} ActCache;

static void act_cache_free(ActCache *c)
{
    if (c->mapped)
        munmap(c->data, c->mapped);
    else
        free(c->data);
    free(c->have); free(c->batch); free(c->order); free(c->labels);
    memset(c, 0, sizeof *c);
    c->unit = -1;
}

/* Maps a new file of `bytes` in dir, already unlinked so that it disappears
 * with the mapping (also when the process dies). Blocks are reserved up front:
 * a full disk shows here, not as a fault in the middle of an epoch. */
static float *spill_map(const char *dir, size_t bytes)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) ||
        (double)vfs.f_bavail * vfs.f_frsize < (double)bytes + (double)(1u << 30))
        return NULL;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/activation-cache-XXXXXX", dir) >= (int)sizeof path)
        return NULL;
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    unlink(path);
    void *p = MAP_FAILED;
    if (posix_fallocate(fd, 0, (off_t)bytes) == 0)
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

/* Sets the cache up for the phase (off when not possible or nothing can hold it). */
static void act_cache_phase(ActCache *c, const Resnet *m, const Dataset *ds, int augment,
                            int batch, size_t budget, const char *spill_dir)
{
    int unit = resnet_lowest_trainable_unit(m);
    act_cache_free(c);
    if (augment || unit < 0 || budget == 0)
        return;
    size_t floats = resnet_unit_input_floats(m, unit);
    size_t bytes = floats * (size_t)ds->n_items * sizeof(float);
    if (bytes <= budget) {
        c->data = malloc(bytes);
    } else if (spill_dir) {
        c->data = spill_map(spill_dir, bytes);
        c->mapped = c->data ? bytes : 0;
    }
    c->have = calloc((size_t)ds->n_items, 1);
    c->batch = malloc(floats * (size_t)batch * sizeof(float));
    c->order = malloc((size_t)ds->n_items * sizeof(int));
    c->labels = malloc((size_t)batch * sizeof(int));
    if (!c->data || !c->have || !c->batch || !c->order || !c->labels) {
        act_cache_free(c); /* no room: run uncached */
        return;
    }
    c->unit = unit;
    c->floats = floats;
}

/* Keeps the inputs of the cache's unit from the forward just run on items. */
static void act_cache_capture(ActCache *c, const Resnet *m, const Dataset *ds, const int *items,
                              int n)
{
    if (c->unit < 0)
        return;
    const float *src = resnet_unit_input(m, c->unit);
    for (int i = 0; i < n; i++) {
        int it = items[i];
        if (c->have[it])
            continue;
        memcpy(c->data + (size_t)it * c->floats, src + (size_t)i * c->floats,
               c->floats * sizeof(float));
        c->have[it] = 1;
        c->have_count[ds->items[it].split]++;
    }
}

static int act_cache_complete(const ActCache *c, const Loader *l, int split)
{
    return c->unit >= 0 && c->have_count[split] == loader_size(l);
}

/* Forward of images order[first..first+n) from the cache; labels into c->labels. */
static void act_cache_forward(ActCache *c, Resnet *m, const Dataset *ds, int first, int n,
                              int training)
{
    for (int i = 0; i < n; i++) {
        int it = c->order[first + i];
        memcpy(c->batch + (size_t)i * c->floats, c->data + (size_t)it * c->floats,
               c->floats * sizeof(float));
        c->labels[i] = ds->items[it].label;
    }
    resnet_forward_from(m, c->unit, c->batch, n, training);
}

/* One pass over the val split in inference mode. */
static int validate(Resnet *m, Loader *val, const Dataset *ds, ActCache *cache, int epoch,
                    const float *cw, float smoothing, Confusion *conf, double *loss,
                    int64_t *full_forwards, Error *err)
{
    Batch b;
    int rc = 0;
    double sum = 0;
    int64_t n = 0;
    metrics_confusion_reset(conf);
    if (act_cache_complete(cache, val, SPLIT_VAL)) {
        int total = loader_size(val), bs = m->batch;
        loader_epoch_order(val, epoch, cache->order);
        for (int first = 0; first < total; first += bs) {
            int nb = total - first < bs ? total - first : bs;
            act_cache_forward(cache, m, ds, first, nb, 0);
            sum += resnet_loss(m, cache->labels, cw, smoothing) * nb;
            n += nb;
            metrics_confusion_add(conf, cache->labels, m->logits, nb);
        }
    } else {
        if (loader_start_epoch(val, epoch, err))
            return -1;
        while ((rc = loader_next(val, &b, err)) == 1) {
            resnet_forward(m, b.x, b.n, 0);
            *full_forwards += b.n;
            act_cache_capture(cache, m, ds, b.items, b.n);
            sum += resnet_loss(m, b.labels, cw, smoothing) * b.n;
            n += b.n;
            metrics_confusion_add(conf, b.labels, m->logits, b.n);
        }
    }
    if (rc < 0)
        return -1;
    *loss = n ? sum / n : NAN;
    return 0;
}

int train_export(const Resnet *m, const Dataset *ds, const Preprocess *p, const char *path,
                 Error *err)
{
    int rc = -1;
    char *classes = NULL, *custom = NULL;
    json_t *arr = json_array(), *obj = NULL;
    for (int c = 0; arr && c < ds->n_classes; c++)
        json_array_append_new(arr, json_string(ds->classes[c]));
    classes = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    if (p->norm.mode == NORM_CUSTOM) {
        const Normalization *n = &p->norm;
        obj = json_pack("{s:f, s:[f,f,f], s:[f,f,f], s:s}", "rescale", (double)n->rescale,
                        "mean", (double)n->mean[0], (double)n->mean[1], (double)n->mean[2],
                        "std", (double)n->std[0], (double)n->std[1], (double)n->std[2],
                        "channels", n->bgr ? "bgr" : "rgb");
        custom = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    }
    if (!classes || (p->norm.mode == NORM_CUSTOM && !custom)) {
        error_set(err, "%s: out of memory", path);
        goto done;
    }
    char size[16];
    snprintf(size, sizeof size, "%d", p->size);
    const char *meta[] = {"classes", classes, "input_size", size,
                          "resize", p->resize == RESIZE_CROP ? "crop" : "squash",
                          "preprocess_custom", custom};
    WeightsNaming naming = m->cfg.variant == RESNET_KERAS ? NAMING_KERAS : NAMING_TORCH;
    rc = weights_save(m, path, naming, WEIGHTS_PARAMS, preprocess_norm_name(p->norm.mode), meta,
                      custom ? 4 : 3, err);
done:
    free(classes);
    free(custom);
    json_decref(arr);
    json_decref(obj);
    return rc;
}

/* ---- checkpoints ---------------------------------------------------------- */

/* What a checkpoint holds besides the parameters: where the job is, the phase's
 * early-stopping state, and (when loaded) the optimizer and schedule state. */
typedef struct {
    int phase, phase_epoch_next, epoch_next, epochs_run;
    double best;
    int bad_epochs, have_best, stopped;
    float *opt_m, *opt_v, *opt_started; /* loaded, owned */
    int64_t opt_step;
    LrScheduler sched;
    /* an epoch stopped part-way: the next step, and the sums so far */
    int step_next;
    double loss_sum, seconds;
    int64_t seen, correct, full_forwards;
    double grad_norm[TRAIN_STAGES];
} Checkpoint;

static void checkpoint_free(Checkpoint *ck)
{
    free(ck->opt_m);
    free(ck->opt_v);
    free(ck->opt_started);
    ck->opt_m = ck->opt_v = ck->opt_started = NULL;
}

/* The job's shape: a checkpoint resumes only the job that wrote it. */
static void fingerprint(char *out, size_t len, const JobSpec *s, const Resnet *m)
{
    size_t o = (size_t)snprintf(out, len, "v1 variant=%d classes=%d hidden=%d batch=%d size=%d "
                                "seed=%llu floats=%zu phases=", m->cfg.variant,
                                m->cfg.num_classes, m->cfg.hidden, s->batch_size, s->input_size,
                                (unsigned long long)s->seed, m->n_floats);
    for (int i = 0; i < s->n_phases && o < len; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%d:%s:%d", i ? "," : "", s->phases[i].epochs,
                              s->phases[i].train, (int)s->phases[i].optimizer.type);
}

static int checkpoint_save(const char *path, const JobSpec *s, const Resnet *m,
                           const Optimizer *optim, const LrScheduler *sched, const Checkpoint *ck,
                           const float *best_params, Error *err)
{
    float *started = malloc((size_t)m->n_params * sizeof(float));
    if (!started)
        return error_set(err, "checkpoint: out of memory");
    for (int i = 0; i < m->n_params; i++)
        started[i] = optim->started[i] ? 1.0f : 0.0f;
    StEntry e[5];
    int n = 0;
#define ENTRY(nm, ptr, count) (e[n].name = (nm), e[n].ndim = 1, e[n].shape[0] = (int64_t)(count), \
                               e[n].data = (ptr), n++)
    ENTRY("params", m->param_data, m->n_floats);
    ENTRY("optim.m", optim->m, optim->n);
    if (optim->v) ENTRY("optim.v", optim->v, optim->n);
    ENTRY("optim.started", started, m->n_params);
    if (best_params) ENTRY("best_params", best_params, m->n_floats);
#undef ENTRY
    char fp[1024], v[13][32], partial[512];
    int pn = snprintf(partial, sizeof partial, "%d %.17g %.17g %lld %lld %lld", ck->step_next,
                      ck->loss_sum, ck->seconds, (long long)ck->seen, (long long)ck->correct,
                      (long long)ck->full_forwards);
    for (int k = 0; k < TRAIN_STAGES; k++)
        pn += snprintf(partial + pn, sizeof partial - (size_t)pn, " %.17g", ck->grad_norm[k]);
    fingerprint(fp, sizeof fp, s, m);
    snprintf(v[0], sizeof v[0], "%d", ck->phase);
    snprintf(v[1], sizeof v[1], "%d", ck->phase_epoch_next);
    snprintf(v[2], sizeof v[2], "%d", ck->epoch_next);
    snprintf(v[3], sizeof v[3], "%d", ck->epochs_run);
    snprintf(v[4], sizeof v[4], "%.17g", ck->best);
    snprintf(v[5], sizeof v[5], "%d", ck->bad_epochs);
    snprintf(v[6], sizeof v[6], "%d", ck->have_best);
    snprintf(v[7], sizeof v[7], "%d", ck->stopped);
    snprintf(v[8], sizeof v[8], "%lld", (long long)optim->step);
    snprintf(v[9], sizeof v[9], "%.17g", sched->lr);
    snprintf(v[10], sizeof v[10], "%d %d", sched->bad_epochs, sched->epochs_done);
    snprintf(v[11], sizeof v[11], "%.17g", sched->best);
    snprintf(v[12], sizeof v[12], "%llu", (unsigned long long)m->dropout_rng.state);
    const char *meta[] = {"resnetd_checkpoint", fp, "phase", v[0], "phase_epoch_next", v[1],
                          "epoch_next", v[2], "epochs_run", v[3], "es_best", v[4],
                          "es_bad_epochs", v[5], "es_have_best", v[6], "es_stopped", v[7],
                          "optim_step", v[8], "sched_lr", v[9], "sched_counts", v[10],
                          "sched_best", v[11], "dropout_rng", v[12], "partial_epoch", partial};
    int rc = safetensors_write(path, e, n, meta, (int)(sizeof meta / sizeof meta[0]) / 2, err);
    free(started);
    if (rc)
        error_wrap(err, "checkpoint");
    return rc;
}

static int meta_int(const SafeTensors *st, const char *key, long long lo, long long hi,
                    long long *out)
{
    const char *v = safetensors_meta(st, key);
    char *end;
    if (!v)
        return -1;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static int meta_double(const SafeTensors *st, const char *key, double *out)
{
    const char *v = safetensors_meta(st, key);
    char *end;
    if (!v)
        return -1;
    *out = strtod(v, &end);
    return end == v || *end ? -1 : 0;
}

/* Copies tensor name (numel floats) into dst; -1 when absent or of another size. */
static int read_exact(const SafeTensors *st, const char *name, size_t numel, float *dst,
                      Error *err)
{
    const StTensor *t = safetensors_find(st, name);
    if (!t || (size_t)safetensors_numel(t) != numel)
        return error_set(err, "tensor '%s' is missing or has the wrong size", name);
    return safetensors_read_f32(st, t, dst, err);
}

/* 1: loaded into m, best_params and ck; 0: no checkpoint at path; -1: unusable. */
static int checkpoint_load(const char *path, const JobSpec *s, Resnet *m, float *best_params,
                           Checkpoint *ck, Error *err)
{
    if (access(path, F_OK) != 0)
        return 0;
    SafeTensors st;
    if (safetensors_open(&st, path, err)) {
        error_wrap(err, "checkpoint %s is unusable", path);
        return -1;
    }
    char fp[1024];
    fingerprint(fp, sizeof fp, s, m);
    const char *have = safetensors_meta(&st, "resnetd_checkpoint");
    int rc = -1;
    long long x[9];
    memset(ck, 0, sizeof *ck);
    if (!have) {
        error_set(err, "checkpoint %s is not a resnetd checkpoint", path);
        goto done;
    }
    if (strcmp(have, fp)) {
        error_set(err, "checkpoint %s was written for a different job (%s; this job: %s)", path,
                  have, fp);
        goto done;
    }
    if (meta_int(&st, "phase", 0, s->n_phases - 1, &x[0]) ||
        meta_int(&st, "phase_epoch_next", 0, 100000, &x[1]) ||
        meta_int(&st, "epoch_next", 0, 10000000, &x[2]) ||
        meta_int(&st, "epochs_run", 0, 10000000, &x[3]) ||
        meta_int(&st, "es_bad_epochs", 0, 100000, &x[4]) ||
        meta_int(&st, "es_have_best", 0, 1, &x[5]) || meta_int(&st, "es_stopped", 0, 1, &x[6]) ||
        meta_int(&st, "optim_step", 0, INT64_MAX, &x[7]) ||
        meta_double(&st, "es_best", &ck->best) || meta_double(&st, "sched_lr", &ck->sched.lr) ||
        meta_double(&st, "sched_best", &ck->sched.best) ||
        !safetensors_meta(&st, "sched_counts") || !safetensors_meta(&st, "dropout_rng") ||
        sscanf(safetensors_meta(&st, "sched_counts"), "%d %d", &ck->sched.bad_epochs,
               &ck->sched.epochs_done) != 2 ||
        x[1] > s->phases[x[0]].epochs) {
        error_set(err, "checkpoint %s has missing or invalid counters", path);
        goto done;
    }
    const char *partial = safetensors_meta(&st, "partial_epoch");
    if (partial) {
        long long seen, correct, full;
        int off = 0;
        if (sscanf(partial, "%d %lf %lf %lld %lld %lld%n", &ck->step_next, &ck->loss_sum,
                   &ck->seconds, &seen, &correct, &full, &off) != 6 || ck->step_next < 0) {
            error_set(err, "checkpoint %s has an invalid partial_epoch", path);
            goto done;
        }
        ck->seen = seen;
        ck->correct = correct;
        ck->full_forwards = full;
        for (int k = 0; k < TRAIN_STAGES; k++) {
            int used = 0;
            if (sscanf(partial + off, "%lf%n", &ck->grad_norm[k], &used) != 1) {
                error_set(err, "checkpoint %s has an invalid partial_epoch", path);
                goto done;
            }
            off += used;
        }
    }
    ck->phase = (int)x[0];
    ck->phase_epoch_next = (int)x[1];
    ck->epoch_next = (int)x[2];
    ck->epochs_run = (int)x[3];
    ck->bad_epochs = (int)x[4];
    ck->have_best = (int)x[5];
    ck->stopped = (int)x[6];
    ck->opt_step = x[7];
    ck->opt_m = malloc(m->n_floats * sizeof(float));
    ck->opt_started = malloc((size_t)m->n_params * sizeof(float));
    if (safetensors_find(&st, "optim.v"))
        ck->opt_v = malloc(m->n_floats * sizeof(float));
    if (!ck->opt_m || !ck->opt_started || (safetensors_find(&st, "optim.v") && !ck->opt_v)) {
        error_set(err, "checkpoint: out of memory");
        goto done;
    }
    if (read_exact(&st, "optim.m", m->n_floats, ck->opt_m, err) ||
        (ck->opt_v && read_exact(&st, "optim.v", m->n_floats, ck->opt_v, err)) ||
        read_exact(&st, "optim.started", (size_t)m->n_params, ck->opt_started, err) ||
        (ck->have_best && read_exact(&st, "best_params", m->n_floats, best_params, err)) ||
        read_exact(&st, "params", m->n_floats, m->param_data, err)) {
        error_wrap(err, "checkpoint %s", path);
        goto done;
    }
    m->dropout_rng.state = strtoull(safetensors_meta(&st, "dropout_rng"), NULL, 10);
    rc = 1;
done:
    if (rc < 0)
        checkpoint_free(ck);
    safetensors_close(&st);
    return rc;
}

/* Puts the loaded optimizer and schedule state of the interrupted phase back. */
static void checkpoint_restore_phase(const Checkpoint *ck, Optimizer *o, LrScheduler *sched)
{
    memcpy(o->m, ck->opt_m, o->n * sizeof(float));
    if (o->v && ck->opt_v)
        memcpy(o->v, ck->opt_v, o->n * sizeof(float));
    for (int i = 0; i < o->n_params; i++)
        o->started[i] = ck->opt_started[i] != 0.0f;
    o->step = ck->opt_step;
    sched->lr = ck->sched.lr;
    sched->best = ck->sched.best;
    sched->bad_epochs = ck->sched.bad_epochs;
    sched->epochs_done = ck->sched.epochs_done;
}

/* ---- diagnosis inputs ------------------------------------------------------ */

/* The weights' own head on the preflight batch: share of its most predicted class. */
static void head_on_batch(const JobSpec *s, const WeightsFacts *f, const float *x, int n,
                          PreflightInput *pin)
{
    pin->head_top_share = -1;
    if (!f->has_head || f->head_classes < 2)
        return;
    ResnetConfig cfg = {f->variant, f->head_classes, f->head_hidden, 0.0f};
    Resnet *h = NULL;
    Error err;
    int *count = calloc((size_t)f->head_classes, sizeof *count);
    if (count && !resnet_create(&h, &cfg, &err) && !weights_load(h, s->weights, 1, &err) &&
        !resnet_plan_inference(h, n, s->input_size, &err)) {
        resnet_forward(h, x, n, 0);
        int top = 0;
        for (int i = 0; i < n; i++) {
            const float *z = h->logits + (size_t)i * f->head_classes;
            int arg = 0;
            for (int c = 1; c < f->head_classes; c++)
                if (z[c] > z[arg]) arg = c;
            if (++count[arg] > count[top]) top = arg;
        }
        pin->head_top_class = top;
        pin->head_top_share = (double)count[top] / n;
        pin->head_classes = f->head_classes;
        pin->head_sample = n;
    }
    free(count);
    resnet_free(h);
}

/* The one-batch overfit check: trains phase 0's selection on one batch for
 * s->overfit_steps steps, measures the batch's accuracy in inference mode, and
 * puts every parameter (and the dropout generator) back. */
static double overfit_batch(const JobSpec *s, Resnet *m, const float *x, const int *labels,
                            int n, Error *err)
{
    float *saved = malloc(m->n_floats * sizeof(float));
    if (!saved) {
        error_set(err, "out of memory");
        return -2;
    }
    memcpy(saved, m->param_data, m->n_floats * sizeof(float));
    Rng rng = m->dropout_rng;
    rng_stream(&m->dropout_rng, s->seed, RNG_PROBE, 0, 0);
    double acc = -2;
    Optimizer o;
    if (!select_trainable(m, s->phases[0].train, s->phases[0].bn, NULL, err) &&
        !optim_init(&o, &s->phases[0].optimizer, m, err)) {
        for (int i = 0; i < s->overfit_steps; i++) {
            resnet_zero_grad(m);
            resnet_forward(m, x, n, 1);
            resnet_loss(m, labels, NULL, 0.0f);
            resnet_backward(m);
            optim_step(&o, m, s->phases[0].optimizer.lr);
        }
        optim_free(&o);
        resnet_forward(m, x, n, 0);
        int correct = 0;
        for (int i = 0; i < n; i++) {
            const float *z = m->logits + (size_t)i * m->cfg.num_classes;
            int arg = 0;
            for (int c = 1; c < m->cfg.num_classes; c++)
                if (z[c] > z[arg]) arg = c;
            correct += arg == labels[i];
        }
        acc = (double)correct / n;
    }
    memcpy(m->param_data, saved, m->n_floats * sizeof(float));
    m->dropout_rng = rng;
    free(saved);
    return acc;
}

/* Dataset and preflight findings, from the first training batch. */
static int preflight(const JobSpec *s, Resnet *m, const Dataset *ds, const Preprocess *p,
                     const WeightsFacts *f, Loader *train, const TrainCallbacks *cb, Error *err)
{
    DiagSink sink = cb ? cb->on_finding : NULL;
    void *ctx = cb ? cb->ctx : NULL;
    diag_dataset(ds, sink, ctx);
    Batch b;
    if (loader_start_epoch(train, 0, err))
        return -1;
    int rc = loader_next(train, &b, err);
    if (rc < 0)
        return -1;
    PreflightInput pin;
    memset(&pin, 0, sizeof pin);
    pin.ds = ds;
    pin.p = p;
    pin.declared = f->declared;
    pin.overridden = f->overridden;
    pin.batch_size = s->batch_size;
    pin.class_weighting = s->class_weight != CLASS_WEIGHT_NONE;
    pin.head_top_share = -1;
    pin.overfit_accuracy = -1;
    InputStats st;
    input_stats_reset(&st);
    if (rc == 1) {
        size_t floats = (size_t)b.n * s->input_size * s->input_size * 3;
        float *x = malloc(floats * sizeof(float));
        int *labels = malloc((size_t)b.n * sizeof(int));
        if (!x || !labels) {
            free(x);
            free(labels);
            return error_set(err, "out of memory");
        }
        memcpy(x, b.x, floats * sizeof(float));
        memcpy(labels, b.labels, (size_t)b.n * sizeof(int));
        int n = b.n;
        input_stats_add(&st, x, (int64_t)n * s->input_size * s->input_size);
        pin.inputs = &st;
        head_on_batch(s, f, x, n, &pin);
        int *per = calloc((size_t)ds->n_classes, sizeof *per), most = 0;
        for (int i = 0; per && i < n; i++)
            if (labels[i] >= 0 && labels[i] < ds->n_classes && ++per[labels[i]] > most)
                most = per[labels[i]];
        free(per);
        pin.head_batch_majority = n ? (double)most / n : 1.0;
        if (s->overfit_batch) {
            pin.overfit_accuracy = overfit_batch(s, m, x, labels, n, err);
            pin.overfit_steps = s->overfit_steps;
            pin.overfit_batch = n;
        }
        free(x);
        free(labels);
        if (pin.overfit_accuracy < -1)
            return -1;
    }
    diag_preflight(&pin, sink, ctx);
    return 0;
}

/* Loss of one batch with BN in train mode and in inference mode, leaving the
 * model as it was (the train-mode forward would move the running statistics). */
static void bn_gap(Resnet *m, const float *x, const int *labels, int n, const float *cw,
                   float *scratch, double *train_loss, double *infer_loss)
{
    memcpy(scratch, m->param_data, m->n_floats * sizeof(float));
    Rng rng = m->dropout_rng;
    resnet_forward(m, x, n, 1);
    *train_loss = resnet_loss(m, labels, cw, 0.0f);
    memcpy(m->param_data, scratch, m->n_floats * sizeof(float));
    m->dropout_rng = rng;
    resnet_forward(m, x, n, 0);
    *infer_loss = resnet_loss(m, labels, cw, 0.0f);
}

int train_run(const JobSpec *s, const TrainOptions *opt, const TrainCallbacks *cb,
              TrainResult *res, Error *err)
{
    Dataset ds = {0};
    Resnet *m = NULL;
    Loader *train = NULL, *val = NULL;
    float *cw = NULL, *best_params = NULL, *start_params = NULL;
    Confusion conf = {0};
    EpochMetrics em = {0};
    Checkpoint ck;
    ActCache cache;
    Diagnosis diag;
    float *bn_x = NULL, *bn_scratch = NULL;
    int *bn_labels = NULL, bn_n = 0;
    int rc = -1;
    diag_init(&diag, &(DiagJob){.n_classes = 1});
    memset(&ck, 0, sizeof ck);
    memset(&cache, 0, sizeof cache);
    cache.unit = -1;
    memset(res, 0, sizeof *res);

    DatasetOptions dopt = dataset_default_options();
    dopt.val_fraction = s->val_fraction;
    dopt.seed = s->seed;
    if (opt && opt->max_pixels)
        dopt.max_pixels = opt->max_pixels;
    if (dataset_scan(&ds, s->dataset, &dopt, err)) {
        error_wrap(err, "dataset");
        goto done;
    }
    res->n_classes = ds.n_classes;
    Preprocess p;
    memset(&p, 0, sizeof p);
    p.size = s->input_size;
    p.resize = s->resize;
    p.augment = s->augment;
    WeightsFacts facts;
    if (build_model(s, ds.n_classes, &m, &p.norm, &facts, err))
        goto done;
    if (class_weights(s, &ds, &cw, err))
        goto done;
    LoaderOptions lo = loader_default_options();
    lo.batch = s->batch_size;
    lo.seed = s->seed;
    lo.shuffle = 1;
    lo.augment = s->augment.hflip || s->augment.crop_max > 0;
    const int lo_augment = lo.augment;
    if (loader_create(&train, &ds, SPLIT_TRAIN, &p, &lo, err))
        goto done;
    lo.shuffle = 0;
    lo.augment = 0;
    if (loader_create(&val, &ds, SPLIT_VAL, &p, &lo, err))
        goto done;
    if (resnet_plan(m, s->batch_size, s->input_size, err) ||
        metrics_confusion_init(&conf, ds.n_classes, err))
        goto done;
    best_params = malloc(m->n_floats * sizeof(float));
    start_params = malloc(m->n_floats * sizeof(float));
    if (!best_params || !start_params) {
        error_set(err, "out of memory");
        goto done;
    }

    memcpy(start_params, m->param_data, m->n_floats * sizeof(float));
    const int total = jobspec_total_epochs(s);
    double last_checkpoint = now_seconds();
    int resumed = 0;
    if (opt && opt->checkpoint_path && opt->resume) {
        int found = checkpoint_load(opt->checkpoint_path, s, m, best_params, &ck, err);
        if (found < 0)
            goto done;
        resumed = found;
        if (resumed)
            res->epochs_run = ck.epochs_run;
    }
    int epoch = resumed ? ck.epoch_next : 0;
    if (cb && cb->on_start)
        cb->on_start(cb->ctx, &ds, m, &p, epoch, resumed ? ck.step_next : 0);
    diag_free(&diag);
    diag_init(&diag, &(DiagJob){.n_classes = ds.n_classes,
                                .class_weighting = s->class_weight != CLASS_WEIGHT_NONE,
                                .imbalance = ds.report.imbalance[SPLIT_TRAIN],
                                .pretrained = strcmp(s->weights, "random") != 0,
                                .steps_per_epoch = loader_batches_per_epoch(train)});
    if (!resumed && preflight(s, m, &ds, &p, &facts, train, cb, err))
        goto done;
    bn_x = malloc((size_t)s->batch_size * s->input_size * s->input_size * 3 * sizeof(float));
    bn_labels = malloc((size_t)s->batch_size * sizeof(int));
    if (!bn_x || !bn_labels) {
        error_set(err, "out of memory");
        goto done;
    }
    for (int pi = resumed ? ck.phase : 0; pi < s->n_phases && !res->cancelled; pi++) {
        const PhaseSpec *ph = &s->phases[pi];
        const int resuming = resumed && pi == ck.phase;
        char where[96];
        snprintf(where, sizeof where, "phases[%d].train", pi);
        if (select_trainable(m, ph->train, ph->bn, NULL, err)) {
            error_wrap(err, "%s", where);
            goto done;
        }
        act_cache_phase(&cache, m, &ds, lo_augment, s->batch_size,
                        opt && opt->no_activation_cache ? 0
                        : opt && opt->activation_cache_bytes ? opt->activation_cache_bytes
                                                             : TRAIN_ACTIVATION_CACHE_DEFAULT,
                        opt ? opt->spill_dir : NULL);
        if (resnet_fold_frozen(m, err)) {
            error_wrap(err, "%s", where);
            goto done;
        }
        int bn_train_layers = 0;
        for (int i = 0; i < m->n_layers; i++)
            bn_train_layers += m->layers[i].kind == LAYER_BN && m->layers[i].batch_stats;
        bn_n = 0;
        if (!(resuming && (ck.phase_epoch_next > 0 || ck.step_next > 0)))
            diag_phase(&diag, pi, ph->name, bn_train_layers, select_frozen_random_bn(m),
                       s->batch_size, epoch, cb ? cb->on_finding : NULL, cb ? cb->ctx : NULL);
        if (cb && cb->on_phase) {
            char desc[320];
            select_describe(m, desc, sizeof desc);
            if (cache.unit >= 0) {
                size_t len = strlen(desc);
                snprintf(desc + len, sizeof desc - len,
                         "; frozen part computed once (cached at %s, %s %.1f MiB)",
                         cache.unit == RESNET_HEAD_UNIT ? "the head"
                                                        : m->layers[m->blocks[cache.unit].c1].keras_name,
                         cache.mapped ? "spilled to a file of" : "in memory,",
                         (double)cache.floats * ds.n_items * sizeof(float) / 1048576.0);
            }
            cb->on_phase(cb->ctx, pi, ph, desc);
        }
        Optimizer optim;
        if (optim_init(&optim, &ph->optimizer, m, err))
            goto done;
        LrScheduler sched;
        schedule_init(&sched, &ph->lr_schedule, ph->optimizer.lr, ph->epochs);
        double best = NAN;
        int bad_epochs = 0, have_best = 0, stopped = 0, pe = 0;
        if (resuming) {
            checkpoint_restore_phase(&ck, &optim, &sched);
            best = ck.best;
            bad_epochs = ck.bad_epochs;
            have_best = ck.have_best;
            stopped = ck.stopped;
            pe = ck.phase_epoch_next;
        }
        for (; pe < ph->epochs && !stopped; pe++, epoch++) {
            EpochReport r;
            memset(&r, 0, sizeof r);
            r.phase = pi;
            r.phase_name = ph->name;
            r.epoch = epoch;
            r.phase_epoch = pe;
            r.epochs_total = total;
            r.lr = schedule_lr(&sched, pe);
            double t0 = now_seconds(), loss_sum = 0;
            int64_t seen = 0, correct = 0;
            int steps = loader_batches_per_epoch(train), step = 0, lrc = 0;
            if (resuming && ck.step_next > 0) { /* this epoch stopped part-way */
                step = ck.step_next;
                loss_sum = ck.loss_sum;
                seen = ck.seen;
                correct = ck.correct;
                r.full_forwards = ck.full_forwards;
                memcpy(r.grad_norm, ck.grad_norm, sizeof r.grad_norm);
                t0 -= ck.seconds;
                ck.step_next = 0;
            }
            const int cached = act_cache_complete(&cache, train, SPLIT_TRAIN);
            const int total_train = loader_size(train);
            Batch b;
            if (cached)
                loader_epoch_order(train, epoch, cache.order);
            else if (loader_start_epoch_at(train, epoch, step, err)) {
                optim_free(&optim);
                goto done;
            }
            for (;;) {
                const int *labels;
                int nb;
                if (cached) {
                    int first = step * s->batch_size;
                    if (first >= total_train)
                        break;
                    nb = total_train - first < s->batch_size ? total_train - first
                                                             : s->batch_size;
                    resnet_zero_grad(m);
                    act_cache_forward(&cache, m, &ds, first, nb, 1);
                    labels = cache.labels;
                } else {
                    if ((lrc = loader_next(train, &b, err)) != 1)
                        break;
                    nb = b.n;
                    labels = b.labels;
                    resnet_zero_grad(m);
                    if (bn_train_layers && !bn_n) { /* the phase's fixed batch for the BN check */
                        memcpy(bn_x, b.x, (size_t)b.n * s->input_size * s->input_size * 3 *
                                              sizeof(float));
                        memcpy(bn_labels, b.labels, (size_t)b.n * sizeof(int));
                        bn_n = b.n;
                    }
                    resnet_forward(m, b.x, b.n, 1);
                    r.full_forwards += b.n;
                    act_cache_capture(&cache, m, &ds, b.items, b.n);
                }
                double loss = resnet_loss(m, labels, cw, s->label_smoothing);
                resnet_backward(m);
                add_grad_norms(m, r.grad_norm);
                optim_step(&optim, m, r.lr);
                loss_sum += loss * nb;
                seen += nb;
                for (int i = 0; i < nb; i++) {
                    const float *z = m->logits + (size_t)i * ds.n_classes;
                    int arg = 0;
                    for (int c = 1; c < ds.n_classes; c++)
                        if (z[c] > z[arg]) arg = c;
                    correct += arg == labels[i];
                }
                if (cb && cb->on_step)
                    cb->on_step(cb->ctx, epoch, step, steps, loss, r.lr);
                step++;
                if (cb && cb->cancel && *cb->cancel) {
                    res->cancelled = 1;
                    break;
                }
            }
            if (lrc < 0) {
                optim_free(&optim);
                goto done;
            }
            if (res->cancelled) {
                if (opt && opt->checkpoint_path && opt->checkpoint_on_cancel &&
                    *opt->checkpoint_on_cancel && step < steps) {
                    Checkpoint now;
                    memset(&now, 0, sizeof now);
                    now.phase = pi;
                    now.phase_epoch_next = pe;
                    now.epoch_next = epoch;
                    now.epochs_run = res->epochs_run;
                    now.best = best;
                    now.bad_epochs = bad_epochs;
                    now.have_best = have_best;
                    now.stopped = 0;
                    now.step_next = step;
                    now.loss_sum = loss_sum;
                    now.seconds = now_seconds() - t0;
                    now.seen = seen;
                    now.correct = correct;
                    now.full_forwards = r.full_forwards;
                    memcpy(now.grad_norm, r.grad_norm, sizeof now.grad_norm);
                    if (checkpoint_save(opt->checkpoint_path, s, m, &optim, &sched, &now,
                                        have_best ? best_params : NULL, err)) {
                        optim_free(&optim);
                        goto done;
                    }
                }
                break;
            }
            for (int k = 0; k < TRAIN_STAGES; k++)
                r.grad_norm[k] = step ? r.grad_norm[k] / step : 0.0;
            weight_changes(m, start_params, r.weight_change);
            r.train_loss = seen ? loss_sum / seen : NAN;
            r.train_accuracy = seen ? (double)correct / seen : NAN;
            if (validate(m, val, &ds, &cache, epoch, cw, s->label_smoothing, &conf, &r.val_loss,
                         &r.full_forwards, err) ||
                metrics_compute(&conf, &em, err)) {
                optim_free(&optim);
                goto done;
            }
            r.val_accuracy = em.accuracy;
            r.val_balanced_accuracy = em.balanced_accuracy;
            r.val = &em;
            r.confusion = &conf;
            r.cached = cache.unit >= 0;
            r.seconds = now_seconds() - t0;
            r.images_per_second = r.seconds > 0 ? seen / r.seconds : 0;
            double v = monitored(s->es_monitor, &r);
            if (!have_best || better(s->es_monitor, v, best, s->es_min_delta)) {
                best = v;
                have_best = 1;
                bad_epochs = 0;
                r.best = 1;
                memcpy(best_params, m->param_data, m->n_floats * sizeof(float));
            } else {
                bad_epochs++;
            }
            schedule_epoch_end(&sched, r.val_loss);
            res->epochs_run++;
            stopped = s->early_stopping && bad_epochs >= s->es_patience;
            if (cb && cb->on_epoch)
                cb->on_epoch(cb->ctx, &r);
            if (cb && cb->on_finding) {
                EpochSummary es;
                memset(&es, 0, sizeof es);
                es.epoch = epoch;
                es.phase = pi;
                es.phase_epoch = pe;
                es.train_loss = r.train_loss;
                es.train_acc = r.train_accuracy;
                es.val_loss = r.val_loss;
                es.val_acc = r.val_accuracy;
                es.val_balanced_acc = r.val_balanced_accuracy;
                memcpy(es.weight_change, r.weight_change, sizeof es.weight_change);
                for (int i = 0; i < m->n_layers; i++)
                    if (m->layers[i].trainable)
                        es.trainable[layer_stage(m, i)] = 1;
                int64_t tot = em.total > 0 ? em.total : 1, top = 0, maj = 0;
                for (int c = 0; c < em.k; c++) {
                    if (em.predicted[c] > em.predicted[top]) top = c;
                    if (em.support[c] > em.support[maj]) maj = c;
                }
                es.top_pred_class = (int)top;
                es.top_pred_share = em.k ? (double)em.predicted[top] / tot : 0;
                es.top_pred_support_share = em.k ? (double)em.support[top] / tot : 0;
                es.majority_share = em.k ? (double)em.support[maj] / tot : 0;
                es.bn_train_loss = es.bn_infer_loss = NAN;
                if (bn_train_layers && bn_n) {
                    if (!bn_scratch)
                        bn_scratch = malloc(m->n_floats * sizeof(float));
                    if (bn_scratch)
                        bn_gap(m, bn_x, bn_labels, bn_n, cw, bn_scratch, &es.bn_train_loss,
                               &es.bn_infer_loss);
                }
                diag_epoch(&diag, &es, cb->on_finding, cb->ctx);
            }
            if (opt && opt->checkpoint_path &&
                now_seconds() - last_checkpoint >= opt->checkpoint_interval_s) {
                Checkpoint now;
                memset(&now, 0, sizeof now);
                now.phase = pi;
                now.phase_epoch_next = pe + 1;
                now.epoch_next = epoch + 1;
                now.epochs_run = res->epochs_run;
                now.best = best;
                now.bad_epochs = bad_epochs;
                now.have_best = have_best;
                now.stopped = stopped;
                if (checkpoint_save(opt->checkpoint_path, s, m, &optim, &sched, &now,
                                    have_best ? best_params : NULL, err)) {
                    optim_free(&optim);
                    goto done;
                }
                last_checkpoint = now_seconds();
            }
            metrics_free(&em);
            /* when early stopping ends the phase, numbering stays contiguous */
        }
        optim_free(&optim);
        if (s->early_stopping && s->es_restore_best && have_best && !res->cancelled)
            memcpy(m->param_data, best_params, m->n_floats * sizeof(float));
    }
    if (cb && cb->on_done)
        cb->on_done(cb->ctx, m, &ds, &p);
    rc = 0;
done:
    diag_free(&diag);
    free(bn_x);
    free(bn_labels);
    free(bn_scratch);
    checkpoint_free(&ck);
    act_cache_free(&cache);
    metrics_free(&em);
    metrics_confusion_free(&conf);
    free(best_params);
    free(start_params);
    free(cw);
    loader_free(train);
    loader_free(val);
    resnet_free(m);
    dataset_free(&ds);
    return rc;
}
