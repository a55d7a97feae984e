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

#include "loader.h"
#include "optim.h"
#include "resnet.h"
#include "schedule.h"
#include "select.h"
#include "weights.h"

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
static int build_model(const JobSpec *s, int n_classes, Resnet **out, Normalization *norm,
                       Error *err)
{
    WeightsInfo info = {0};
    int random = !strcmp(s->weights, "random");
    if (!random && weights_probe(s->weights, &info, err))
        return -1;
    ResnetConfig cfg = {random ? RESNET_TORCHVISION : info.variant, n_classes, s->head_hidden,
                        s->head_dropout};
    int overridden = 0;
    const char *declared = random ? NULL : info.preprocess;
    int rc;
    if (!strcmp(s->preprocess, "custom")) {
        *norm = s->custom;
        rc = preprocess_resolve_norm(norm, NULL, declared, s->preprocess_override, &overridden,
                                     err);
    } else {
        rc = preprocess_resolve_norm(norm, s->preprocess, declared, s->preprocess_override,
                                     &overridden, err);
    }
    if (rc) {
        error_wrap(err, "preprocess");
        weights_info_free(&info);
        return -1;
    }
    if (resnet_create(out, &cfg, err)) {
        weights_info_free(&info);
        return -1;
    }
    resnet_init_random(*out, s->seed);
    if (!random && weights_load(*out, s->weights, 0, err)) {
        resnet_free(*out);
        *out = NULL;
        weights_info_free(&info);
        return -1;
    }
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

/* One pass over the val split in inference mode. */
static int validate(Resnet *m, Loader *val, int epoch, const float *cw, float smoothing,
                    Confusion *conf, double *loss, Error *err)
{
    Batch b;
    int rc;
    double sum = 0;
    int64_t n = 0;
    metrics_confusion_reset(conf);
    if (loader_start_epoch(val, epoch, err))
        return -1;
    while ((rc = loader_next(val, &b, err)) == 1) {
        resnet_forward(m, b.x, b.n, 0);
        sum += resnet_loss(m, b.labels, cw, smoothing) * b.n;
        n += b.n;
        metrics_confusion_add(conf, b.labels, m->logits, b.n);
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

int train_run(const JobSpec *s, const TrainCallbacks *cb, TrainResult *res, Error *err)
{
    Dataset ds = {0};
    Resnet *m = NULL;
    Loader *train = NULL, *val = NULL;
    float *cw = NULL, *best_params = NULL;
    Confusion conf = {0};
    EpochMetrics em = {0};
    int rc = -1;
    memset(res, 0, sizeof *res);

    DatasetOptions dopt = dataset_default_options();
    dopt.val_fraction = s->val_fraction;
    dopt.seed = s->seed;
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
    if (build_model(s, ds.n_classes, &m, &p.norm, err))
        goto done;
    if (class_weights(s, &ds, &cw, err))
        goto done;
    LoaderOptions lo = loader_default_options();
    lo.batch = s->batch_size;
    lo.seed = s->seed;
    lo.shuffle = 1;
    lo.augment = s->augment.hflip || s->augment.crop_max > 0;
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
    if (!best_params) {
        error_set(err, "out of memory");
        goto done;
    }

    const int total = jobspec_total_epochs(s);
    int epoch = 0;
    for (int pi = 0; pi < s->n_phases && !res->cancelled; pi++) {
        const PhaseSpec *ph = &s->phases[pi];
        char where[96];
        snprintf(where, sizeof where, "phases[%d].train", pi);
        if (select_trainable(m, ph->train, ph->bn_train, NULL, err)) {
            error_wrap(err, "%s", where);
            goto done;
        }
        if (cb && cb->on_phase) {
            char desc[256];
            select_describe(m, desc, sizeof desc);
            cb->on_phase(cb->ctx, pi, ph, desc);
        }
        Optimizer opt;
        if (optim_init(&opt, &ph->optimizer, m, err))
            goto done;
        LrScheduler sched;
        schedule_init(&sched, &ph->lr_schedule, ph->optimizer.lr, ph->epochs);
        double best = NAN;
        int bad_epochs = 0, have_best = 0;
        for (int pe = 0; pe < ph->epochs; pe++, epoch++) {
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
            int steps = loader_batches_per_epoch(train), step = 0, lrc;
            Batch b;
            if (loader_start_epoch(train, epoch, err)) {
                optim_free(&opt);
                goto done;
            }
            while ((lrc = loader_next(train, &b, err)) == 1) {
                resnet_zero_grad(m);
                resnet_forward(m, b.x, b.n, 1);
                double loss = resnet_loss(m, b.labels, cw, s->label_smoothing);
                resnet_backward(m);
                optim_step(&opt, m, r.lr);
                loss_sum += loss * b.n;
                seen += b.n;
                for (int i = 0; i < b.n; i++) {
                    const float *z = m->logits + (size_t)i * ds.n_classes;
                    int arg = 0;
                    for (int c = 1; c < ds.n_classes; c++)
                        if (z[c] > z[arg]) arg = c;
                    correct += arg == b.labels[i];
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
                optim_free(&opt);
                goto done;
            }
            if (res->cancelled)
                break;
            r.train_loss = seen ? loss_sum / seen : NAN;
            r.train_accuracy = seen ? (double)correct / seen : NAN;
            if (validate(m, val, epoch, cw, s->label_smoothing, &conf, &r.val_loss, err) ||
                metrics_compute(&conf, &em, err)) {
                optim_free(&opt);
                goto done;
            }
            r.val_accuracy = em.accuracy;
            r.val_balanced_accuracy = em.balanced_accuracy;
            r.val = &em;
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
            if (cb && cb->on_epoch)
                cb->on_epoch(cb->ctx, &r);
            metrics_free(&em);
            if (s->early_stopping && bad_epochs >= s->es_patience) {
                epoch++; /* numbering stays contiguous: the next phase follows on */
                break;
            }
        }
        optim_free(&opt);
        if (s->early_stopping && s->es_restore_best && have_best && !res->cancelled)
            memcpy(m->param_data, best_params, m->n_floats * sizeof(float));
    }
    if (cb && cb->on_done)
        cb->on_done(cb->ctx, m, &ds, &p);
    rc = 0;
done:
    metrics_free(&em);
    metrics_confusion_free(&conf);
    free(best_params);
    free(cw);
    loader_free(train);
    loader_free(val);
    resnet_free(m);
    dataset_free(&ds);
    return rc;
}
