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
    {"BN_SMALL_BATCH", DIAG_WARNING, "phase", "BatchNorm in train mode with a small batch"},
    {"BN_FROZEN_RANDOM", DIAG_WARNING, "phase",
     "BatchNorm frozen in randomly initialised layers: statistics 0 and 1 forever"},
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

/* ---- phases and epochs --------------------------------------------------- */

/* How long a run may look bad before the rules judge it, in optimizer steps (each
 * threshold is explained in docs/diagnosis.md, "Early epochs"):
 * START_STEPS_*  the val-side rules (OVERFITTING, ACCURACY_IS_MAJORITY,
 *                PREDICTIONS_COLLAPSE, BALANCED_GAP) judge only epochs that end
 *                this far into the job. From random weights, BN's running
 *                statistics (momentum 0.1) still hold 0.9^30 = 4% of their initial
 *                0 and 1 after 30 steps, and a random network learns the class
 *                frequencies before the classes; a new head on pretrained features
 *                has only its own first steps to take.
 * BN_SETTLE_STEPS BN_TRAIN_INFER_GAP judges epochs that end this far into the
 *                phase (the running statistics restart catching up in each phase).
 * STUCK_STEPS    NO_LEARNING: the loss at log(classes) over 3 epochs and this many
 *                steps (epochs of one or two steps are too short to judge).
 * RISE_STEPS     LR_DIVERGED: rises in 3 epochs and over this many steps (the loss
 *                of a one-step epoch is one batch's, noisy enough to rise 3 times). */
#define START_STEPS_SCRATCH 30
#define START_STEPS_FINETUNE 10
#define BN_SETTLE_STEPS 30
#define STUCK_STEPS 30
#define RISE_STEPS 10

void diag_init(Diagnosis *d, const DiagJob *job)
{
    memset(d, 0, sizeof *d);
    d->job = *job;
    if (d->job.steps_per_epoch < 1)
        d->job.steps_per_epoch = 1;
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

/* The situation's fix: from random weights, or fine-tuning pretrained ones. */
static const char *fix_for(const Diagnosis *d, const char *scratch, const char *finetune)
{
    return d->job.pretrained ? finetune : scratch;
}

/* The fix of a rule about small classes, in buf: weight the classes (unless the
 * job does already) and `measure`, then the situation's own step. */
static const char *class_fix(const Diagnosis *d, char *buf, size_t len, const char *measure,
                             const char *scratch, const char *finetune)
{
    snprintf(buf, len, "%s%s; %s",
             d->job.class_weighting ? "The classes are already weighted: "
                                    : "Use \"class_weight\": \"balanced\" and ",
             measure, fix_for(d, scratch, finetune));
    return buf;
}

int diag_phase(Diagnosis *d, int phase, const char *phase_name, int bn_batch_stats_layers,
               int bn_frozen_random_layers, int batch_size, int epoch, DiagSink sink,
               void *ctx)
{
    int found = 0;
    char msg[512];
    if (bn_frozen_random_layers > 0 && once(d, "BN_FROZEN_RANDOM")) {
        snprintf(msg, sizeof msg, "phase %d (\"%s\") trains %d BatchNorm layers that were "
                 "initialised randomly (not loaded from the weights file) with \"bn\": "
                 "\"frozen\": they normalise with running mean 0 and variance 1, which never "
                 "update, so these layers do not normalise at all", phase + 1, phase_name,
                 bn_frozen_random_layers);
        emit(sink, ctx, "BN_FROZEN_RANDOM", epoch,
             fix_for(d, "Drop \"bn\": \"frozen\" from this phase or set \"bn\": \"train\": "
                     "from random weights BN has to learn its statistics, and the default "
                     "(\"auto\") trains BN of every layer that was not loaded from a file.",
                     "Drop \"bn\": \"frozen\" from this phase: the default (\"auto\") keeps "
                     "BN of the pretrained layers loaded from the file frozen and trains it "
                     "in the layers that were not loaded, such as a new head's (\"bn\": "
                     "\"train\" would put the pretrained layers' BN in train mode too)."),
             msg, "{\"phase\": %d, \"bn_frozen_random_layers\": %d}", phase,
             bn_frozen_random_layers);
        found++;
    }
    if (bn_batch_stats_layers > 0 && batch_size < 16 && once(d, "BN_SMALL_BATCH")) {
        snprintf(msg, sizeof msg, "phase %d (\"%s\") trains %d BatchNorm layers in train mode "
                 "with batches of %d: their statistics are noisy and the running averages "
                 "drift from what inference sees", phase + 1, phase_name,
                 bn_batch_stats_layers, batch_size);
        emit(sink, ctx, "BN_SMALL_BATCH", epoch,
             fix_for(d, "Use batches of 16 or more: from random weights BN has to run in "
                     "train mode (frozen, its statistics would stay 0 and 1), so the batch "
                     "size is what to change.",
                     "Keep BN of the pretrained layers frozen (the default \"bn\": \"auto\" "
                     "does, \"train\" does not), or use batches of 16 or more."),
             msg, "{\"phase\": %d, \"bn_layers_in_train_mode\": %d, \"batch_size\": %d}", phase,
             bn_batch_stats_layers, batch_size);
        found++;
    }
    return found;
}

/* The epoch ends at least `steps` optimizer steps into the job (phase). */
static int job_steps_past(const Diagnosis *d, const EpochSummary *e, int steps)
{
    return (int64_t)(e->epoch + 1) * d->job.steps_per_epoch >= steps;
}

static int phase_steps_past(const Diagnosis *d, const EpochSummary *e, int steps)
{
    return (int64_t)(e->phase_epoch + 1) * d->job.steps_per_epoch >= steps;
}

typedef int (*EpochCondition)(const Diagnosis *d, const EpochSummary *e);

/* The condition held on each of the last `epochs` epochs (consecutive ones), all
 * past the start of the job: what a symptom that is normal early in a run needs
 * before it is reported. */
static int persisted(const Diagnosis *d, EpochCondition cond, int epochs)
{
    const int start = d->job.pretrained ? START_STEPS_FINETUNE : START_STEPS_SCRATCH;
    if (d->n < epochs)
        return 0;
    for (int i = d->n - epochs; i < d->n; i++) {
        const EpochSummary *e = &d->hist[i];
        if (!cond(d, e) || !job_steps_past(d, e, start) ||
            (i > d->n - epochs && e->epoch != d->hist[i - 1].epoch + 1))
            return 0;
    }
    return 1;
}

/* (each rule's condition on one epoch; the thresholds are in docs/diagnosis.md) */
static int train_far_above_val(const Diagnosis *d, const EpochSummary *e)
{
    (void)d;
    return e->train_acc - e->val_acc > 0.25;
}

static int accuracy_at_majority(const Diagnosis *d, const EpochSummary *e)
{
    return e->majority_share >= 1.0 / d->job.n_classes + 0.15 &&
           fabs(e->val_acc - e->majority_share) < 0.03;
}

static int predictions_collapsed(const Diagnosis *d, const EpochSummary *e)
{
    return d->job.n_classes >= 2 && e->top_pred_share > 0.8 && e->top_pred_support_share < 0.6;
}

static int balanced_far_below(const Diagnosis *d, const EpochSummary *e)
{
    (void)d;
    return isfinite(e->val_balanced_acc) && e->val_acc - e->val_balanced_acc > 0.15;
}

static int bn_modes_disagree(const EpochSummary *e)
{
    return isfinite(e->bn_train_loss) && isfinite(e->bn_infer_loss) &&
           fabs(e->bn_infer_loss - e->bn_train_loss) > fmax(0.2, 0.5 * e->bn_train_loss);
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
    const int n = d->n, k = d->job.n_classes, spe = d->job.steps_per_epoch;
    const double logk = log((double)k);
    /* the previous epoch when it is the one before this in the same phase */
    const EpochSummary *prev_in_phase =
        n >= 2 && h[n - 2].phase == e->phase && h[n - 2].phase_epoch == e->phase_epoch - 1
            ? &h[n - 2] : NULL;
    int found = 0;
    char msg[512], fix[512];

    /* divergence: not a number, a rise in each of the last 3 epochs of the phase
     * (more epochs when 3 are under RISE_STEPS steps), or trainable weights that
     * moved more than 20 times their initial norm. The last catches a blow-up whose
     * loss stays finite (1e3 .. 1e28) and jumps around instead of rising steadily
     * (SGD lr 10, Adam lr 5): such runs move their weights 95 to 1e7 times their
     * norm within the first epoch, while training that works moves a new head by
     * < 1 and pretrained stages by a few percent. None of these is an early
     * transient, so none waits. */
    static const char *const stage_names[DIAG_STAGES] = {"conv1", "conv2", "conv3", "conv4",
                                                         "conv5", "head"};
    const int rise_epochs = 3 > (RISE_STEPS + spe - 1) / spe ? 3 : (RISE_STEPS + spe - 1) / spe;
    int rises = 0;
    for (int i = n - 1; i >= 1 && h[i - 1].phase == e->phase &&
                        h[i].train_loss > h[i - 1].train_loss * 1.05; i--)
        rises++;
    /* (a rise among losses far below log(classes), a model that already fits, is
     * noise around zero, not divergence) */
    const int rising = rises >= rise_epochs && e->train_loss > 0.1 * logk;
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
            snprintf(msg, sizeof msg, "the train loss rose by more than 5%% in each of the last "
                     "%d epochs (%d steps; %.4g -> %.4g -> %.4g -> %.4g at the end): the "
                     "learning rate is too high", rises, rises * spe, h[n - 4].train_loss,
                     h[n - 3].train_loss, h[n - 2].train_loss, e->train_loss);
        emit(sink, ctx, "LR_DIVERGED", e->epoch,
             fix_for(d, "Lower the phase's learning rate (10x is a good first step) or add a "
                     "warmup (\"lr_schedule\": {\"warmup_epochs\": 1}); from random weights, "
                     "Adam at about 1e-3 with BN in train mode is a usual start.",
                     "Lower the phase's learning rate (10x is a good first step) or add a "
                     "warmup; a new head trains well at about Adam 1e-3, and unfrozen "
                     "pretrained layers want 10-100x less (Adam 1e-5, SGD 1e-4)."),
             msg, "{\"epoch\": %d, \"train_loss\": %s, \"val_loss\": %s, \"previous\": [%s, %s, "
             "%s], \"rising_epochs\": %d, \"max_relative_weight_change\": %s}", e->epoch,
             num(e->train_loss), num(e->val_loss), num(n >= 4 ? h[n - 4].train_loss : NAN),
             num(n >= 3 ? h[n - 3].train_loss : NAN), num(n >= 2 ? h[n - 2].train_loss : NAN),
             rises, num(blown));
        found++;
    }

    /* unfreezing pretrained layers at too high a rate: the first epoch of a phase
     * that trains stages the previous one did not, val drops, and those stages
     * moved a lot. It does not wait: the moved weights do not come back, even when
     * val recovers. From random weights there is nothing pretrained to destroy. */
    if (d->job.pretrained && n >= 2 && e->phase_epoch == 0 && h[n - 2].phase != e->phase) {
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
                 "or Adam 1e-5), keep BN of the pretrained layers frozen (the default), and "
                 "consider a warmup.",
                 msg, "{\"val_acc_before\": %s, \"val_acc_after\": %s, \"val_loss_before\": %s,"
                 " \"val_loss_after\": %s, \"max_relative_weight_change\": %s}",
                 num(p->val_acc), num(e->val_acc), num(p->val_loss), num(e->val_loss),
                 num(moved));
            found++;
        }
    }

    /* a plateau with tiny updates: 3 epochs of this phase, loss within 1%, the
     * trainable stages' weights moving less than 1e-4 of their norm per epoch (a
     * rate that is too low is too low from its first step: no wait) */
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
                 fix_for(d, "Raise the learning rate 3-10x (from random weights, Adam at about "
                         "1e-3 is a usual start), or check that the optimizer is the intended "
                         "one.",
                         "Raise the learning rate 3-10x (a new head: about Adam 1e-3; unfrozen "
                         "pretrained layers: about Adam 1e-5 or SGD 1e-4), or check that the "
                         "optimizer is the intended one."),
                 msg, "{\"train_loss_min\": %s, \"train_loss_max\": %s, "
                 "\"weight_change_per_epoch\": %s}", num(lo), num(hi), num(step));
            found++;
        }
    }

    /* overfitting: val loss up two epochs running while train accuracy stayed 0.25
     * above val, both epochs past the start of the job */
    if (n >= 3 && e->val_loss > h[n - 2].val_loss && h[n - 2].val_loss > h[n - 3].val_loss &&
        persisted(d, train_far_above_val, 2) && once(d, "OVERFITTING")) {
        double best = INFINITY;
        for (int i = 0; i < n; i++)
            best = fmin(best, h[i].val_loss);
        snprintf(msg, sizeof msg, "train accuracy %.3f against val %.3f (%.3f against %.3f the "
                 "epoch before), and val loss rose two epochs running to %.4g (best %.4g): the "
                 "model memorises the train split", e->train_acc, e->val_acc,
                 h[n - 2].train_acc, h[n - 2].val_acc, e->val_loss, best);
        emit(sink, ctx, "OVERFITTING", e->epoch,
             fix_for(d, "From random weights ResNet50's 23.5 million weights memorise a small "
                     "dataset: start from pretrained weights if any suit these images; "
                     "otherwise add augmentation (hflip, random_resized_crop) and use early "
                     "stopping with restore_best.",
                     "Train fewer pretrained layers (keep more of the backbone frozen), add "
                     "augmentation (hflip, random_resized_crop) or dropout in the head, and use "
                     "early stopping with restore_best."),
             msg, "{\"train_acc\": %s, \"val_acc\": %s, \"val_loss\": %s, \"best_val_loss\": %s, "
             "\"previous_train_acc\": %s, \"previous_val_acc\": %s}",
             num(e->train_acc), num(e->val_acc), num(e->val_loss), num(best),
             num(h[n - 2].train_acc), num(h[n - 2].val_acc));
        found++;
    }

    /* no learning: the loss of uniform guessing over the last 3 epochs or more, at
     * least STUCK_STEPS steps */
    int stuck = 0;
    for (int i = n - 1; k >= 2 && i >= 0 && isfinite(h[i].train_loss) &&
                        fabs(h[i].train_loss - logk) < 0.05 * logk; i--)
        stuck++;
    if (stuck >= 3 && (int64_t)stuck * spe >= STUCK_STEPS && once(d, "NO_LEARNING")) {
        snprintf(msg, sizeof msg, "the train loss has stayed within 5%% of log(%d classes) = "
                 "%.4g for %d epochs (%d steps), lately %.4g, %.4g, %.4g: that is what "
                 "guessing uniformly scores, so nothing is being learned", k, logk, stuck,
                 stuck * spe, h[n - 3].train_loss, h[n - 2].train_loss, e->train_loss);
        emit(sink, ctx, "NO_LEARNING", e->epoch,
             fix_for(d, "Check the labels and the inputs (run with \"preflight\": "
                     "{\"overfit_batch\": true}), that BN of the random layers trains (no "
                     "\"bn\": \"frozen\"), and the learning rate (from random weights, Adam at "
                     "about 1e-3).",
                     "Check the labels and the inputs (run with \"preflight\": "
                     "{\"overfit_batch\": true}), that the preprocessing is the weights' own "
                     "(\"auto\"), that \"train\" selects something, and the learning rate."),
             msg, "{\"train_loss\": %s, \"log_classes\": %s, \"classes\": %d, \"epochs\": %d, "
             "\"steps\": %d}", num(e->train_loss), num(logk), k, stuck, stuck * spe);
        found++;
    }

    /* accuracy that is just the majority share, on two epochs past the start */
    if (persisted(d, accuracy_at_majority, 2) && once(d, "ACCURACY_IS_MAJORITY")) {
        snprintf(msg, sizeof msg, "val accuracy %.3f (%.3f the epoch before) is the largest "
                 "class's share of val (%.3f): always answering that class scores the same",
                 e->val_acc, h[n - 2].val_acc, e->majority_share);
        emit(sink, ctx, "ACCURACY_IS_MAJORITY", e->epoch,
             class_fix(d, fix, sizeof fix, "judge by balanced accuracy",
                       "from random weights a small dataset teaches little beyond the class "
                       "frequencies, so start from pretrained weights if any suit these images.",
                       "if the head alone cannot separate the classes, unfreeze the last stage "
                       "(\"stage:5\") at a low rate."),
             msg, "{\"val_acc\": %s, \"majority_share\": %s, \"balanced_acc\": %s, "
             "\"previous_val_acc\": %s}", num(e->val_acc), num(e->majority_share),
             num(e->val_balanced_acc), num(h[n - 2].val_acc));
        found++;
    }

    /* predictions collapsing onto one class, on two epochs past the start (the
     * class may change between them: that is still a collapse) */
    if (persisted(d, predictions_collapsed, 2) && once(d, "PREDICTIONS_COLLAPSE")) {
        snprintf(msg, sizeof msg, "%.0f%% of val predictions are class %d, which is %.0f%% of "
                 "val labels (the epoch before, %.0f%% were class %d)", 100 * e->top_pred_share,
                 e->top_pred_class, 100 * e->top_pred_support_share,
                 100 * h[n - 2].top_pred_share, h[n - 2].top_pred_class);
        emit(sink, ctx, "PREDICTIONS_COLLAPSE", e->epoch,
             fix_for(d, "Lower the learning rate, check the preprocessing, and balance the "
                     "classes (\"class_weight\": \"balanced\"); from random weights, batches "
                     "of 16 or more steady BN's statistics.",
                     "Lower the head's learning rate, check that the preprocessing is the "
                     "weights' own (\"auto\"), and balance the classes (\"class_weight\": "
                     "\"balanced\")."),
             msg, "{\"class\": %d, \"prediction_share\": %s, \"label_share\": %s, "
             "\"previous_class\": %d, \"previous_prediction_share\": %s}",
             e->top_pred_class, num(e->top_pred_share), num(e->top_pred_support_share),
             h[n - 2].top_pred_class, num(h[n - 2].top_pred_share));
        found++;
    }

    if (persisted(d, balanced_far_below, 2) && once(d, "BALANCED_GAP")) {
        snprintf(msg, sizeof msg, "val accuracy %.3f but balanced accuracy %.3f (%.3f and %.3f "
                 "the epoch before): the small classes are mostly wrong", e->val_acc,
                 e->val_balanced_acc, h[n - 2].val_acc, h[n - 2].val_balanced_acc);
        emit(sink, ctx, "BALANCED_GAP", e->epoch,
             class_fix(d, fix, sizeof fix, "look at per-class recall (/api/jobs/ID/classes)",
                       "from random weights the small classes may have too few images to "
                       "learn from, so start from pretrained weights if any suit them.",
                       "a head on pretrained features learns a small class from few images, "
                       "so a few more of them, or augmentation, help most."),
             msg, "{\"val_acc\": %s, \"balanced_acc\": %s, \"previous_val_acc\": %s, "
             "\"previous_balanced_acc\": %s}", num(e->val_acc), num(e->val_balanced_acc),
             num(h[n - 2].val_acc), num(h[n - 2].val_balanced_acc));
        found++;
    }

    /* the BN gap on two consecutive epochs of the phase, both BN_SETTLE_STEPS into it */
    if (prev_in_phase && bn_modes_disagree(prev_in_phase) && bn_modes_disagree(e) &&
        phase_steps_past(d, prev_in_phase, BN_SETTLE_STEPS) && once(d, "BN_TRAIN_INFER_GAP")) {
        snprintf(msg, sizeof msg, "one fixed batch scores loss %.4g with BatchNorm in train mode "
                 "and %.4g in inference mode (%.4g and %.4g the epoch before), %d steps into "
                 "the phase: the running statistics do not match the batches, so validation "
                 "sees a different network", e->bn_train_loss, e->bn_infer_loss,
                 prev_in_phase->bn_train_loss, prev_in_phase->bn_infer_loss,
                 (e->phase_epoch + 1) * spe);
        emit(sink, ctx, "BN_TRAIN_INFER_GAP", e->epoch,
             fix_for(d, "Use batches of 16 or more: from random weights BN has to train (do "
                     "not freeze it), so larger batches are what bring its running statistics "
                     "in line with the batches'.",
                     "Keep BN of the pretrained layers frozen (the default \"bn\": \"auto\"; "
                     "not \"train\"), or use batches of 16 or more."),
             msg, "{\"train_mode_loss\": %s, \"inference_mode_loss\": %s, "
             "\"previous_train_mode_loss\": %s, \"previous_inference_mode_loss\": %s, "
             "\"phase_steps\": %d}", num(e->bn_train_loss), num(e->bn_infer_loss),
             num(prev_in_phase->bn_train_loss), num(prev_in_phase->bn_infer_loss),
             (e->phase_epoch + 1) * spe);
        found++;
    }
    return found;
}
