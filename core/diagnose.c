/*
 * diagnose.c: the rules (see diagnose.h; every threshold is explained in
 * docs/diagnosis.md).
 */
#include "diagnose.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const DiagRule diag_rules[] = {
    {"DATA_LEAKAGE", DIAG_WARNING, "dataset", "identical images in train and val"},
    {"DATA_IMBALANCE", DIAG_INFO, "dataset", "classes of very different sizes"},
    {"DATA_SPLIT_MISMATCH", DIAG_WARNING, "dataset",
     "train and val pixels differ beyond what sampling explains"},
    {"DATA_SPLIT_FORMAT", DIAG_WARNING, "dataset",
     "train and val differ in colour type or image size"},
    {"DATA_DARK_OR_SCALED", DIAG_WARNING, "dataset",
     "images nearly black: pixels stored already scaled to 0..1?"},
    {"PREPROC_MISMATCH", DIAG_ERROR, "preflight",
     "the preprocessing differs from the one the weights declare"},
    {"PREPROC_DOUBLE_SCALE", DIAG_ERROR, "preflight",
     "the tensors fed to the model span about 1/255 of what the mode gives"},
    {"HEAD_COLLAPSE", DIAG_WARNING, "preflight",
     "the weights' own head puts nearly every image in one class"},
    {"CLASS_IMBALANCE_UNWEIGHTED", DIAG_WARNING, "preflight",
     "imbalanced classes trained without class weights"},
    {"RESOLUTION_UPSCALED", DIAG_INFO, "preflight",
     "images much smaller than the input size"},
    {"RESOLUTION_1X1", DIAG_WARNING, "preflight",
     "input so small that the last feature map is 1x1"},
    {"OVERFIT_BATCH_FAILED", DIAG_ERROR, "preflight",
     "the model cannot even learn one batch by heart"},
    {"BN_SMALL_BATCH", DIAG_WARNING, "preflight",
     "BatchNorm in train mode with a small batch"},
    {"LR_DIVERGED", DIAG_ERROR, "epoch", "the loss is not a number or keeps rising"},
    {"LR_DESTROYS_PRETRAINED", DIAG_WARNING, "epoch",
     "validation collapsed when pretrained layers started to move fast"},
    {"LR_TOO_LOW", DIAG_WARNING, "epoch", "a plateau with tiny weight updates"},
    {"OVERFITTING", DIAG_WARNING, "epoch", "train accuracy far above val, val loss rising"},
    {"NO_LEARNING", DIAG_ERROR, "epoch",
     "the train loss stays at log(classes): nothing is learned"},
    {"ACCURACY_IS_MAJORITY", DIAG_WARNING, "epoch",
     "val accuracy equals the largest class's share"},
    {"PREDICTIONS_COLLAPSE", DIAG_WARNING, "epoch", "nearly every prediction is one class"},
    {"BALANCED_GAP", DIAG_WARNING, "epoch", "balanced accuracy far below accuracy"},
    {"BN_TRAIN_INFER_GAP", DIAG_WARNING, "epoch",
     "the same batch scores very differently in BN train and inference mode"},
};
const int diag_rule_count = (int)(sizeof diag_rules / sizeof diag_rules[0]);

const char *diag_severity_name(DiagSeverity s)
{
    return s == DIAG_ERROR ? "error" : s == DIAG_WARNING ? "warning" : "info";
}

static int rule_index(const char *code)
{
    for (int i = 0; i < diag_rule_count; i++)
        if (!strcmp(diag_rules[i].code, code))
            return i;
    return -1;
}

/* Fills and emits one finding. evidence is a printf format for the JSON object. */
static void emit(DiagSink sink, void *ctx, const char *code, int epoch, const char *fix,
                 const char *message, const char *evidence_fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void emit(DiagSink sink, void *ctx, const char *code, int epoch, const char *fix,
                 const char *message, const char *evidence_fmt, ...)
{
    Finding f;
    memset(&f, 0, sizeof f);
    int r = rule_index(code);
    f.code = r >= 0 ? diag_rules[r].code : code;
    f.severity = r >= 0 ? diag_rules[r].severity : DIAG_WARNING;
    f.epoch = epoch;
    snprintf(f.message, sizeof f.message, "%s", message);
    snprintf(f.fix, sizeof f.fix, "%s", fix);
    va_list ap;
    va_start(ap, evidence_fmt);
    vsnprintf(f.evidence, sizeof f.evidence, evidence_fmt, ap);
    va_end(ap);
    if (sink)
        sink(ctx, &f);
}

/* A JSON number (null for NaN/inf), in a rotating static buffer. */
static const char *num(double v)
{
    static __thread char bufs[16][32];
    static __thread int next;
    char *b = bufs[next++ % 16];
    if (isfinite(v))
        snprintf(b, 32, "%.6g", v);
    else
        snprintf(b, 32, "null");
    return b;
}

/* ---- dataset ------------------------------------------------------------- */

int diag_dataset(const Dataset *ds, DiagSink sink, void *ctx)
{
    int n = 0;
    const DatasetReport *r = &ds->report;
    char msg[512];
    if (r->n_cross_duplicates > 0) {
        snprintf(msg, sizeof msg, "%d val image%s also in train (identical pixels): val "
                 "accuracy overstates what the model learned", r->n_cross_duplicates,
                 r->n_cross_duplicates == 1 ? " is" : "s are");
        emit(sink, ctx, "DATA_LEAKAGE", -1,
             "Remove the duplicates from one split (GET /api/datasets/ID lists the problem "
             "files), or split again after removing duplicates.",
             msg, "{\"duplicates\": %d, \"val_images\": %d}", r->n_cross_duplicates,
             r->total[SPLIT_VAL]);
        n++;
    }
    if (isfinite(r->imbalance[SPLIT_TRAIN]) && r->imbalance[SPLIT_TRAIN] >= 3.0) {
        int big = 0, small = 0;
        for (int c = 1; c < ds->n_classes; c++) {
            if (ds->counts[c].count[SPLIT_TRAIN] > ds->counts[big].count[SPLIT_TRAIN]) big = c;
            if (ds->counts[c].count[SPLIT_TRAIN] < ds->counts[small].count[SPLIT_TRAIN]) small = c;
        }
        snprintf(msg, sizeof msg, "the largest class ('%s', %d train images) is %.1fx the "
                 "smallest ('%s', %d)", ds->classes[big], ds->counts[big].count[SPLIT_TRAIN],
                 r->imbalance[SPLIT_TRAIN], ds->classes[small],
                 ds->counts[small].count[SPLIT_TRAIN]);
        emit(sink, ctx, "DATA_IMBALANCE", -1,
             "Train with \"class_weight\": \"balanced\", and judge runs by balanced accuracy.",
             msg, "{\"imbalance\": %s, \"largest\": %d, \"smallest\": %d}",
             num(r->imbalance[SPLIT_TRAIN]), ds->counts[big].count[SPLIT_TRAIN],
             ds->counts[small].count[SPLIT_TRAIN]);
        n++;
    }
    /* per-channel means: each split's mean is the mean of its images' means, so
     * its standard error is the spread of those / sqrt(images) */
    if (r->total[SPLIT_TRAIN] >= 10 && r->total[SPLIT_VAL] >= 10) {
        double worst = 0, worst_z = 0;
        int wc = 0;
        for (int c = 0; c < 3; c++) {
            double st = r->image_mean_std[SPLIT_TRAIN][c], sv = r->image_mean_std[SPLIT_VAL][c];
            double se = sqrt(st * st / r->total[SPLIT_TRAIN] + sv * sv / r->total[SPLIT_VAL]);
            double d = fabs(r->mean[SPLIT_TRAIN][c] - r->mean[SPLIT_VAL][c]);
            double z = se > 0 ? d / se : (d > 0 ? INFINITY : 0);
            if (d > worst) { worst = d; worst_z = z; wc = c; }
        }
        double ratio = r->std[SPLIT_TRAIN][wc] > 0 ? r->std[SPLIT_VAL][wc] / r->std[SPLIT_TRAIN][wc]
                                                   : 1.0;
        if ((worst > 8.0 && worst_z > 4.0) || ratio < 0.6 || ratio > 1.67) {
            static const char *const ch[3] = {"red", "green", "blue"};
            snprintf(msg, sizeof msg, "the %s channel averages %.1f in train and %.1f in val "
                     "(0..255 pixels, %.1f standard errors apart): the splits were prepared "
                     "differently", ch[wc], r->mean[SPLIT_TRAIN][wc], r->mean[SPLIT_VAL][wc],
                     worst_z);
            emit(sink, ctx, "DATA_SPLIT_MISMATCH", -1,
                 "Prepare train and val the same way (same export, same resizing, same colour "
                 "handling) before registering them; resnetd preprocesses both identically.",
                 msg, "{\"channel\": \"%s\", \"train_mean\": %s, \"val_mean\": %s, "
                 "\"train_std\": %s, \"val_std\": %s, \"train_image_mean_std\": %s, "
                 "\"val_image_mean_std\": %s, \"standard_errors\": %s}", ch[wc],
                 num(r->mean[SPLIT_TRAIN][wc]), num(r->mean[SPLIT_VAL][wc]),
                 num(r->std[SPLIT_TRAIN][wc]), num(r->std[SPLIT_VAL][wc]),
                 num(r->image_mean_std[SPLIT_TRAIN][wc]), num(r->image_mean_std[SPLIT_VAL][wc]),
                 num(worst_z));
            n++;
        }
    }
    /* colour type and size: a share of grayscale files that differs by more than
     * half, or median shorter sides more than 1.5x apart */
    if (r->total[SPLIT_TRAIN] > 0 && r->total[SPLIT_VAL] > 0) {
        double gt = (double)r->gray[SPLIT_TRAIN] / r->total[SPLIT_TRAIN];
        double gv = (double)r->gray[SPLIT_VAL] / r->total[SPLIT_VAL];
        int at = r->side_median[SPLIT_TRAIN], av = r->side_median[SPLIT_VAL];
        double ratio = at > 0 && av > 0 ? (double)(at > av ? at : av) / (at < av ? at : av) : 1;
        if (fabs(gt - gv) > 0.5 || ratio > 1.5) {
            snprintf(msg, sizeof msg, "train and val were stored differently: %.0f%% of train "
                     "and %.0f%% of val are grayscale files, and their median shorter sides are "
                     "%d and %d pixels", 100 * gt, 100 * gv, at, av);
            emit(sink, ctx, "DATA_SPLIT_FORMAT", -1,
                 "Export both splits the same way (colour type and resolution); a model "
                 "validated on differently prepared images is judged on a different task.",
                 msg, "{\"train_gray_share\": %s, \"val_gray_share\": %s, "
                 "\"train_side_median\": %d, \"val_side_median\": %d}", num(gt), num(gv), at,
                 av);
            n++;
        }
    }
    double mean = 0, sd = 0;
    int splits = 0;
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (!r->total[s])
            continue;
        splits++;
        for (int c = 0; c < 3; c++) {
            mean += r->mean[s][c] / 3;
            sd += r->std[s][c] / 3;
        }
    }
    if (splits) {
        mean /= splits;
        sd /= splits;
    }
    if (splits && mean < 4.0 && sd < 4.0) {
        snprintf(msg, sizeof msg, "the pixels average %.2f with spread %.2f on a 0..255 scale: "
                 "the images are nearly black, as images stored already scaled to 0..1 are",
                 mean, sd);
        emit(sink, ctx, "DATA_DARK_OR_SCALED", -1,
             "Store images as ordinary 8-bit pixels (0..255); resnetd applies the weights' "
             "scaling itself.",
             msg, "{\"pixel_mean\": %s, \"pixel_std\": %s, \"expected_mean_about\": 110}",
             num(mean), num(sd));
        n++;
    }
    return n;
}

/* ---- preflight ----------------------------------------------------------- */

/* Width of the inputs a mode is meant to produce (max - min over a channel),
 * averaged over channels. A channel spans 255 * rescale before its mean and std,
 * unless its mean says otherwise: a mean of pixels that span 0..W is at most W
 * (ImageNet's sit near W / 2), so a mean far outside 0..255 * rescale belongs
 * to a wider scale, about 0..2|mean|. That is the custom mode with rescale 1/255
 * and caffe's means (about 100): its numbers were written for 0..255 pixels, and
 * 1/255 in front of them is the double scaling. For the presets 2|mean| <=
 * 255 * rescale, so their widths stay 255 (caffe), 4.4 (torch) and 2 (tf).
 * *from_mean is set when a mean decided the width of some channel. */
static double mode_width(const Normalization *n, int *from_mean)
{
    double w = 0;
    *from_mean = 0;
    for (int c = 0; c < 3; c++) {
        double sd = n->std[c] > 0 ? n->std[c] : 1;
        double span = 255.0 * n->rescale, implied = 2.0 * fabs((double)n->mean[c]);
        if (implied > span) {
            span = implied;
            *from_mean = 1;
        }
        w += span / sd / 3;
    }
    return w;
}

int diag_preflight(const PreflightInput *in, DiagSink sink, void *ctx)
{
    int n = 0;
    char msg[512];
    const char *mode = preprocess_norm_name(in->p->norm.mode);
    if (in->declared && in->declared[0] && in->overridden) {
        snprintf(msg, sizeof msg, "the job preprocesses as '%s' but the weights were trained "
                 "with '%s': every input is off the distribution the backbone learned", mode,
                 in->declared);
        emit(sink, ctx, "PREPROC_MISMATCH", -1,
             "Use \"preprocess\": \"auto\" (the weights' own mode) unless you are certain.",
             msg, "{\"in_use\": \"%s\", \"declared\": \"%s\"}", mode, in->declared);
        n++;
    }
    if (in->inputs && in->inputs->count > 0) {
        double mean[3], sd[3], width = 0, sd_avg = 0;
        input_stats_get(in->inputs, mean, sd);
        for (int c = 0; c < 3; c++) {
            width += (in->inputs->max[c] - in->inputs->min[c]) / 3.0;
            sd_avg += sd[c] / 3;
        }
        int from_mean;
        double expected = mode_width(&in->p->norm, &from_mean);
        /* width 0 is constant inputs (blank images: DATA_DARK_OR_SCALED), not scaling */
        if (expected > 0 && width > 0 && width < expected / 25.0) {
            snprintf(msg, sizeof msg, "the tensors fed to the model span %.3g (per channel, "
                     "max - min) where '%s' preprocessing of 0..255 images spans about %.3g: "
                     "the pixels were scaled down before this preprocessing (divided by 255 "
                     "twice, or stored already scaled)", width, mode, expected);
            emit(sink, ctx, "PREPROC_DOUBLE_SCALE", -1,
                 "Give resnetd ordinary 0..255 images and the weights' own preprocessing "
                 "(\"auto\"); drop any rescale=1/255 in front of caffe-style mean subtraction.",
                 msg, "{\"mode\": \"%s\", \"observed_width\": %s, \"expected_width\": %s, "
                 "\"expected_from\": \"%s\", \"ratio\": %s, \"min\": [%s, %s, %s], "
                 "\"max\": [%s, %s, %s], \"std\": %s}",
                 mode, num(width), num(expected), from_mean ? "mean" : "rescale",
                 num(expected / width),
                 num(in->inputs->min[0]), num(in->inputs->min[1]), num(in->inputs->min[2]),
                 num(in->inputs->max[0]), num(in->inputs->max[1]), num(in->inputs->max[2]),
                 num(sd_avg));
            n++;
        }
    }
    /* (a batch that is mostly one of the user's classes may rightly land in one
     * original class: only a varied batch counts) */
    if (in->head_top_share >= 0 && in->head_sample >= 8 && in->head_classes >= 2 &&
        in->head_top_share >= 0.8 && in->head_batch_majority < 0.6) {
        snprintf(msg, sizeof msg, "the weights' own %d-class head puts %.0f%% of %d of your "
                 "images into its class %d: the inputs look alike to the backbone, which "
                 "usually means the preprocessing is wrong for these weights",
                 in->head_classes, 100 * in->head_top_share, in->head_sample,
                 in->head_top_class);
        emit(sink, ctx, "HEAD_COLLAPSE", -1,
             "Check the preprocessing (\"auto\" uses the weights' own) and that images are "
             "ordinary 0..255 pictures.",
             msg, "{\"top_class\": %d, \"top_share\": %s, \"sample\": %d, \"head_classes\": %d, "
             "\"batch_majority_label_share\": %s}", in->head_top_class, num(in->head_top_share),
             in->head_sample, in->head_classes, num(in->head_batch_majority));
        n++;
    }
    const Dataset *ds = in->ds;
    if (isfinite(ds->report.imbalance[SPLIT_TRAIN]) && ds->report.imbalance[SPLIT_TRAIN] >= 3.0 &&
        !in->class_weighting) {
        snprintf(msg, sizeof msg, "the train split is imbalanced %.1f:1 and the job weights "
                 "every image the same: the model can score well by favouring the large "
                 "classes", ds->report.imbalance[SPLIT_TRAIN]);
        emit(sink, ctx, "CLASS_IMBALANCE_UNWEIGHTED", -1,
             "Add \"class_weight\": \"balanced\" to the job, and watch balanced accuracy.",
             msg, "{\"imbalance\": %s, \"class_weight\": \"none\"}",
             num(ds->report.imbalance[SPLIT_TRAIN]));
        n++;
    }
    int size = in->p->size;
    int native = ds->report.width_median < ds->report.height_median ? ds->report.width_median
                                                                   : ds->report.height_median;
    if (native > 0 && native * 2 <= size) {
        snprintf(msg, sizeof msg, "the images' median native size is %dx%d and the input is "
                 "%dx%d: each is upscaled %.1fx, adding no detail", ds->report.width_median,
                 ds->report.height_median, size, size, (double)size / native);
        emit(sink, ctx, "RESOLUTION_UPSCALED", -1,
             "Use an input_size closer to the images' size (it also trains faster).",
             msg, "{\"median_width\": %d, \"median_height\": %d, \"input_size\": %d}",
             ds->report.width_median, ds->report.height_median, size);
        n++;
    }
    if (size < 64) {
        snprintf(msg, sizeof msg, "at %dx%d input the last feature map is 1x1: the backbone "
                 "sees each image as one position, and pretrained features lose their "
                 "spatial layout", size, size);
        emit(sink, ctx, "RESOLUTION_1X1", -1,
             "Use input_size 64 or more (224 for ImageNet weights) unless speed matters more.",
             msg, "{\"input_size\": %d, \"feature_map\": 1}", size);
        n++;
    }
    if (in->overfit_accuracy >= 0 && in->overfit_accuracy < 0.9) {
        snprintf(msg, sizeof msg, "after %d steps on one batch of %d images the model "
                 "classifies only %.0f%% of that batch correctly: labels, inputs or the "
                 "trainable part are broken", in->overfit_steps, in->overfit_batch,
                 100 * in->overfit_accuracy);
        emit(sink, ctx, "OVERFIT_BATCH_FAILED", -1,
             "Look at the labels (class folders), the preprocessing, and what \"train\" "
             "selects; a model that can learn must memorise one batch.",
             msg, "{\"steps\": %d, \"batch\": %d, \"accuracy\": %s}", in->overfit_steps,
             in->overfit_batch, num(in->overfit_accuracy));
        n++;
    }
    return n;
}

int diag_phase(int phase, const char *phase_name, int bn_batch_stats_layers, int batch_size,
               int epoch, DiagSink sink, void *ctx)
{
    if (bn_batch_stats_layers <= 0 || batch_size >= 16)
        return 0;
    char msg[512];
    snprintf(msg, sizeof msg, "phase %d (\"%s\") trains %d BatchNorm layers in train mode with "
             "batches of %d: their statistics are noisy and the running averages drift from "
             "what inference sees", phase + 1, phase_name, bn_batch_stats_layers, batch_size);
    emit(sink, ctx, "BN_SMALL_BATCH", epoch,
         "Keep BN frozen (\"bn\": \"frozen\", the default) when fine-tuning, or use batches "
         "of 16 or more.",
         msg, "{\"phase\": %d, \"bn_layers_in_train_mode\": %d, \"batch_size\": %d}", phase,
         bn_batch_stats_layers, batch_size);
    return 1;
}

/* ---- epochs -------------------------------------------------------------- */

void diag_init(Diagnosis *d, int n_classes, int class_weighting, double imbalance)
{
    memset(d, 0, sizeof *d);
    d->n_classes = n_classes;
    d->class_weighting = class_weighting;
    d->imbalance = imbalance;
}

void diag_free(Diagnosis *d)
{
    free(d->hist);
    memset(d, 0, sizeof *d);
}

void diag_mark_raised(Diagnosis *d, const char *code)
{
    int r = rule_index(code);
    if (r >= 0)
        d->raised[r] = 1;
}

/* Emits once per job. */
static int once(Diagnosis *d, const char *code)
{
    int r = rule_index(code);
    if (r < 0 || d->raised[r])
        return 0;
    d->raised[r] = 1;
    return 1;
}

int diag_epoch(Diagnosis *d, const EpochSummary *e, DiagSink sink, void *ctx)
{
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 16;
        EpochSummary *h = realloc(d->hist, (size_t)cap * sizeof *h);
        if (!h)
            return 0;
        d->hist = h;
        d->cap = cap;
    }
    d->hist[d->n++] = *e;
    const EpochSummary *h = d->hist;
    const int n = d->n, k = d->n_classes;
    const double logk = log((double)k);
    int found = 0;
    char msg[512];

    /* divergence: not a number, a rise in each of the last 3 epochs of the phase, or
     * trainable weights that moved more than 20 times their initial norm. The last
     * catches a blow-up whose loss stays finite (1e3 .. 1e28) and jumps around instead
     * of rising steadily (SGD lr 10, Adam lr 5): such runs move their weights 95 to
     * 1e7 times their norm within the first epoch, while training that works moves
     * a new head by < 1 and pretrained stages by a few percent. */
    static const char *const stage_names[DIAG_STAGES] = {"conv1", "conv2", "conv3", "conv4",
                                                         "conv5", "head"};
    /* (a rise among losses far below log(classes), a model that already fits, is
     * noise around zero, not divergence) */
    int rising = n >= 4 && h[n - 4].phase == e->phase && e->train_loss > 0.1 * logk;
    for (int i = n - 3; rising && i < n; i++)
        rising = h[i].train_loss > h[i - 1].train_loss * 1.05;
    double blown = 0;
    int blown_stage = -1;
    for (int s = 0; s < DIAG_STAGES; s++)
        if (e->trainable[s] && isfinite(e->weight_change[s]) && e->weight_change[s] > blown) {
            blown = e->weight_change[s];
            blown_stage = s;
        }
    const int nonfinite = !isfinite(e->train_loss) || !isfinite(e->val_loss);
    if ((nonfinite || rising || blown > 20) && once(d, "LR_DIVERGED")) {
        if (nonfinite)
            snprintf(msg, sizeof msg, "epoch %d: the loss is %s: the updates blew the weights "
                     "up", e->epoch + 1, isfinite(e->train_loss) ? "finite in train but not "
                     "in val" : "not a number");
        else if (blown > 20)
            snprintf(msg, sizeof msg, "epoch %d: the %s weights moved %.3g times their initial "
                     "norm (train loss %.4g): the updates blew the weights up", e->epoch + 1,
                     stage_names[blown_stage], blown, e->train_loss);
        else
            snprintf(msg, sizeof msg, "the train loss rose in each of the last 3 epochs "
                     "(%.4g -> %.4g -> %.4g -> %.4g): the learning rate is too high",
                     h[n - 4].train_loss, h[n - 3].train_loss, h[n - 2].train_loss,
                     e->train_loss);
        emit(sink, ctx, "LR_DIVERGED", e->epoch,
             "Lower the phase's learning rate (10x is a good first step), or add a warmup.",
             msg, "{\"epoch\": %d, \"train_loss\": %s, \"val_loss\": %s, \"previous\": [%s, %s, "
             "%s], \"max_relative_weight_change\": %s}", e->epoch, num(e->train_loss),
             num(e->val_loss), num(n >= 4 ? h[n - 4].train_loss : NAN),
             num(n >= 3 ? h[n - 3].train_loss : NAN), num(n >= 2 ? h[n - 2].train_loss : NAN),
             num(blown));
        found++;
    }

    /* unfreezing at too high a rate: the first epoch of a phase that trains stages the
     * previous one did not, val drops, and those stages moved a lot */
    if (n >= 2 && e->phase_epoch == 0 && h[n - 2].phase != e->phase) {
        const EpochSummary *p = &h[n - 2];
        double moved = 0;
        int newly = 0;
        for (int s = 0; s < DIAG_STAGES - 1; s++)
            if (e->trainable[s] && !p->trainable[s]) {
                newly++;
                if (e->weight_change[s] > moved)
                    moved = e->weight_change[s];
            }
        double drop = p->val_acc - e->val_acc;
        if (newly && moved > 0.01 && (drop > 0.1 || e->val_loss > 1.5 * p->val_loss) &&
            once(d, "LR_DESTROYS_PRETRAINED")) {
            snprintf(msg, sizeof msg, "in the first epoch after unfreezing, val accuracy fell "
                     "from %.3f to %.3f while the newly trainable pretrained layers changed by "
                     "%.1f%% of their norm: the learning rate is wrecking the pretrained "
                     "features", p->val_acc, e->val_acc, 100 * moved);
            emit(sink, ctx, "LR_DESTROYS_PRETRAINED", e->epoch,
                 "Unfreeze with a learning rate 10-100x below the head phase's (e.g. SGD 1e-4 "
                 "or Adam 1e-5), keep BN frozen, and consider a warmup.",
                 msg, "{\"val_acc_before\": %s, \"val_acc_after\": %s, \"val_loss_before\": %s,"
                 " \"val_loss_after\": %s, \"max_relative_weight_change\": %s}",
                 num(p->val_acc), num(e->val_acc), num(p->val_loss), num(e->val_loss),
                 num(moved));
            found++;
        }
    }

    /* a plateau with tiny updates: 3 epochs of this phase, loss within 1%, the
     * trainable stages' weights moving less than 1e-4 of their norm per epoch */
    if (n >= 3 && h[n - 3].phase == e->phase && isfinite(e->train_loss)) {
        double lo = INFINITY, hi = -INFINITY, step = 0;
        for (int i = n - 3; i < n; i++) {
            lo = fmin(lo, h[i].train_loss);
            hi = fmax(hi, h[i].train_loss);
        }
        for (int s = 0; s < DIAG_STAGES; s++)
            if (e->trainable[s])
                step = fmax(step, (e->weight_change[s] - h[n - 3].weight_change[s]) / 2);
        if ((hi - lo) <= 0.01 * hi && step < 1e-4 && once(d, "LR_TOO_LOW")) {
            snprintf(msg, sizeof msg, "over the last 3 epochs the train loss stayed within %.2f%% "
                     "(%.4g..%.4g) and the trainable weights moved %.2g of their norm per "
                     "epoch: the learning rate is too low to make progress",
                     100 * (hi - lo) / hi, lo, hi, step);
            emit(sink, ctx, "LR_TOO_LOW", e->epoch,
                 "Raise the learning rate (3-10x), or check that the optimizer is the intended "
                 "one.",
                 msg, "{\"train_loss_min\": %s, \"train_loss_max\": %s, "
                 "\"weight_change_per_epoch\": %s}", num(lo), num(hi), num(step));
            found++;
        }
    }

    /* overfitting: train accuracy 0.25 above val and val loss up two epochs running */
    if (n >= 3 && e->train_acc - e->val_acc > 0.25 && e->val_loss > h[n - 2].val_loss &&
        h[n - 2].val_loss > h[n - 3].val_loss && once(d, "OVERFITTING")) {
        double best = INFINITY;
        for (int i = 0; i < n; i++)
            best = fmin(best, h[i].val_loss);
        snprintf(msg, sizeof msg, "train accuracy %.3f against val %.3f, and val loss rose two "
                 "epochs running to %.4g (best %.4g): the model memorises the train split",
                 e->train_acc, e->val_acc, e->val_loss, best);
        emit(sink, ctx, "OVERFITTING", e->epoch,
             "Use early stopping with restore_best, augmentation (hflip, random_resized_crop), "
             "dropout in the head, or train fewer layers.",
             msg, "{\"train_acc\": %s, \"val_acc\": %s, \"val_loss\": %s, \"best_val_loss\": %s}",
             num(e->train_acc), num(e->val_acc), num(e->val_loss), num(best));
        found++;
    }

    /* no learning: the loss of uniform guessing, three epochs in a row */
    if (n >= 3 && k >= 2) {
        int stuck = 1;
        for (int i = n - 3; i < n && stuck; i++)
            stuck = isfinite(h[i].train_loss) && fabs(h[i].train_loss - logk) < 0.05 * logk;
        if (stuck && once(d, "NO_LEARNING")) {
            snprintf(msg, sizeof msg, "the train loss has been %.4g, %.4g, %.4g: log(%d classes) "
                     "= %.4g is what guessing uniformly scores, so nothing is being learned",
                     h[n - 3].train_loss, h[n - 2].train_loss, e->train_loss, k, logk);
            emit(sink, ctx, "NO_LEARNING", e->epoch,
                 "Check the labels and the inputs (run with \"preflight\": {\"overfit_batch\": "
                 "true}), that something is trainable, and the learning rate.",
                 msg, "{\"train_loss\": %s, \"log_classes\": %s, \"classes\": %d}",
                 num(e->train_loss), num(logk), k);
            found++;
        }
    }

    /* accuracy that is just the majority share */
    if (e->majority_share >= 1.0 / k + 0.15 && fabs(e->val_acc - e->majority_share) < 0.03 &&
        once(d, "ACCURACY_IS_MAJORITY")) {
        snprintf(msg, sizeof msg, "val accuracy %.3f is the largest class's share of val "
                 "(%.3f): always answering that class scores the same", e->val_acc,
                 e->majority_share);
        emit(sink, ctx, "ACCURACY_IS_MAJORITY", e->epoch,
             "Use \"class_weight\": \"balanced\" and judge by balanced accuracy.",
             msg, "{\"val_acc\": %s, \"majority_share\": %s, \"balanced_acc\": %s}",
             num(e->val_acc), num(e->majority_share), num(e->val_balanced_acc));
        found++;
    }

    /* predictions collapsing onto one class */
    if (e->top_pred_share > 0.8 && e->top_pred_support_share < 0.6 && k >= 2 &&
        once(d, "PREDICTIONS_COLLAPSE")) {
        snprintf(msg, sizeof msg, "%.0f%% of val predictions are class %d, which is %.0f%% of "
                 "val labels", 100 * e->top_pred_share, e->top_pred_class,
                 100 * e->top_pred_support_share);
        emit(sink, ctx, "PREDICTIONS_COLLAPSE", e->epoch,
             "Balance the classes (\"class_weight\": \"balanced\"), lower the learning rate, or "
             "check the preprocessing.",
             msg, "{\"class\": %d, \"prediction_share\": %s, \"label_share\": %s}",
             e->top_pred_class, num(e->top_pred_share), num(e->top_pred_support_share));
        found++;
    }

    if (isfinite(e->val_balanced_acc) && e->val_acc - e->val_balanced_acc > 0.15 &&
        once(d, "BALANCED_GAP")) {
        snprintf(msg, sizeof msg, "val accuracy %.3f but balanced accuracy %.3f: the small "
                 "classes are mostly wrong", e->val_acc, e->val_balanced_acc);
        emit(sink, ctx, "BALANCED_GAP", e->epoch,
             "Use \"class_weight\": \"balanced\"; look at per-class recall "
             "(/api/jobs/ID/classes).",
             msg, "{\"val_acc\": %s, \"balanced_acc\": %s}", num(e->val_acc),
             num(e->val_balanced_acc));
        found++;
    }

    if (isfinite(e->bn_train_loss) && isfinite(e->bn_infer_loss) &&
        fabs(e->bn_infer_loss - e->bn_train_loss) > fmax(0.2, 0.5 * e->bn_train_loss) &&
        once(d, "BN_TRAIN_INFER_GAP")) {
        snprintf(msg, sizeof msg, "one fixed batch scores loss %.4g with BatchNorm in train mode "
                 "and %.4g in inference mode: the running statistics do not match the batches, "
                 "so validation sees a different network", e->bn_train_loss, e->bn_infer_loss);
        emit(sink, ctx, "BN_TRAIN_INFER_GAP", e->epoch,
             "Keep BN frozen (\"bn\": \"frozen\") when fine-tuning pretrained layers, or use "
             "larger batches.",
             msg, "{\"train_mode_loss\": %s, \"inference_mode_loss\": %s}",
             num(e->bn_train_loss), num(e->bn_infer_loss));
        found++;
    }
    return found;
}
