/*
 * train.h: the fine-tuning loop (core; knows nothing of HTTP or SQLite).
 *
 * train_run executes a JobSpec: scans the dataset, builds the model (from a
 * weights file, whose backbone is loaded and whose head is replaced, or from
 * seeded random weights), then runs each phase: selects the trainable layers,
 * starts a fresh optimizer (as recompiling in Keras does), and trains epoch by
 * epoch with the phase's learning-rate schedule, validating after each epoch.
 * Progress is reported through callbacks; a cancel flag is checked between
 * batches. Early stopping applies within a phase: when it triggers, the phase
 * ends (restoring its best weights if asked) and the next phase starts.
 *
 * When a phase trains only from some block up and augmentation is off, the
 * frozen part's output is computed once per image and reused: in memory within
 * the budget, beyond it in a file in TrainOptions.spill_dir (unlinked at once,
 * so nothing is left behind), and uncached when neither fits. The frozen part
 * runs with each BatchNorm folded into its convolution (resnet_fold_frozen),
 * in training and validation alike.
 */
#ifndef RESNETD_TRAIN_H
#define RESNETD_TRAIN_H

#include "dataset.h"
#include "diagnose.h"
#include "error.h"
#include "jobspec.h"
#include "metrics.h"
#include "preprocess.h"

/* Stages for per-stage statistics: the stem, Keras's conv2..conv5 (torchvision's
 * layer1..layer4) and the head. */
#define TRAIN_STAGES 6
extern const char *const train_stage_names[TRAIN_STAGES];

typedef struct {
    int phase;                 /* 0-based */
    const char *phase_name;
    int epoch;                 /* 0-based over the whole job */
    int phase_epoch;           /* 0-based within the phase */
    int epochs_total;
    float lr;
    double train_loss, train_accuracy;
    double val_loss, val_accuracy, val_balanced_accuracy;
    const EpochMetrics *val;   /* per-class metrics of this epoch (borrowed) */
    double seconds, images_per_second;
    int best;                  /* this epoch is the phase's best so far (monitored metric) */
    /* per stage: mean over the epoch's steps of the L2 norm of the gradient of its
     * trainable parameters (0 when frozen), and ||w - w_start|| / ||w_start|| of its
     * weights and biases since the job started */
    double grad_norm[TRAIN_STAGES];
    double weight_change[TRAIN_STAGES];
    const Confusion *confusion; /* val confusion matrix of this epoch (borrowed) */
    /* images run through the whole network this epoch (train and val); 0 when
     * every image started from the frozen-prefix cache */
    int64_t full_forwards;
    int cached;                 /* the phase uses the frozen-prefix cache */
} EpochReport;

typedef struct {
    void *ctx;
    /* a phase starts: describe says what is trainable */
    void (*on_phase)(void *ctx, int phase, const PhaseSpec *ph, const char *describe);
    /* after every training batch */
    void (*on_step)(void *ctx, int epoch, int step, int steps, double loss, float lr);
    /* after every epoch's validation, before that epoch's checkpoint is written
     * (so a store that records the row first never misses an epoch; a resumed
     * job reports the epochs after the checkpoint again) */
    void (*on_epoch)(void *ctx, const EpochReport *r);
    /* when non-NULL and set, training stops after the current batch */
    const volatile int *cancel;
    /* at the end (also after a cancel), with the trained model, the dataset and the
     * preprocessing in force (all borrowed for the call); e.g. to train_export */
    void (*on_done)(void *ctx, const struct Resnet *m, const Dataset *ds, const Preprocess *p);
    /* once, after the dataset is scanned, the model built and a checkpoint
     * loaded, before the first phase (borrowed for the call): the class names,
     * the model as it will start (its new head as drawn, or a checkpoint's), the
     * preprocessing in force, and the first epoch and step that will run (0 and
     * 0, or where a resumed checkpoint left off) */
    void (*on_start)(void *ctx, const Dataset *ds, const struct Resnet *m, const Preprocess *p,
                     int first_epoch, int first_step);
    /* a diagnosis finding (diagnose.h): dataset and preflight findings before the
     * first epoch (not again when resuming), phase findings at a phase's start,
     * epoch findings right after that epoch's on_epoch */
    void (*on_finding)(void *ctx, const Finding *f);
} TrainCallbacks;

typedef struct {
    int epochs_run;
    int cancelled;
    int n_classes;
} TrainResult;

/* Writes the fine-tuned model as safetensors (the variant's own naming), with
 * metadata a predictor needs: "classes" (JSON array of the class names, label
 * order), "preprocess" (mode name; for custom also "preprocess_custom" as JSON
 * {"rescale", "mean", "std", "channels"}), "input_size", "resize". Atomic. */
int train_export(const struct Resnet *m, const Dataset *ds, const Preprocess *p, const char *path,
                 Error *err);

typedef struct {
    /* After an epoch the whole training state (parameters, optimizer, schedule,
     * early-stopping state, counters, dropout generator) is written here atomically
     * (temporary file, fsync, rename). NULL: no checkpoints. */
    const char *checkpoint_path;
    /* Write it only when at least this many seconds have passed since the job
     * started or last wrote one (a ResNet50 checkpoint with Adam's moments is
     * about 280 MB: a second or more, where a cached head epoch takes 0.1 s);
     * 0: after every epoch. A stop mid-epoch (checkpoint_on_cancel) always writes. */
    double checkpoint_interval_s;
    /* Continue from checkpoint_path when it exists. A resumed job computes what the
     * uninterrupted one would have (shuffles and augmentation are seeded by job
     * seed and epoch). A checkpoint of another job is an error. */
    int resume;
    /* Frozen-prefix activation cache (see train.c): memory budget in bytes (0: the
     * default TRAIN_ACTIVATION_CACHE_DEFAULT); no_activation_cache turns it off. */
    size_t activation_cache_bytes;
    int no_activation_cache;
    /* Folder for the part of the cache beyond the memory budget (a job's own
     * folder); NULL: never spill. The file is only used when the file system
     * has room for it with 1 GiB to spare. */
    const char *spill_dir;
    /* Largest image accepted, in pixels (0: the dataset scan's default). */
    uint64_t max_pixels;
    /* When non-NULL and set as the cancel flag stops an epoch part-way, a
     * checkpoint of that point is written (a daemon shutting down): resuming
     * continues with the next batch, as if never stopped. */
    const volatile int *checkpoint_on_cancel;
} TrainOptions;

#define TRAIN_ACTIVATION_CACHE_DEFAULT ((size_t)2 << 30)

/* Runs the job (opt may be NULL). Returns 0 when it ran to the end (or was
 * cancelled: see result->cancelled), -1 with the reason otherwise. */
int train_run(const JobSpec *spec, const TrainOptions *opt, const TrainCallbacks *cb,
              TrainResult *result, Error *err);

#endif
