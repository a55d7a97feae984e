/*
 * jobspec.h: the fine-tuning job specification (the user's contract), parsed and
 * validated in one place.
 *
 * Every field is checked; unknown fields are errors; an error names the JSON path
 * of the offending field and what was expected, e.g.
 *   "phases[1].optimizer.lr: must be a number > 0".
 * See docs/jobs.md for every field with an example.
 */
#ifndef RESNETD_JOBSPEC_H
#define RESNETD_JOBSPEC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "optim.h"
#include "preprocess.h"
#include "select.h"

#define JOBSPEC_MAX_PHASES 8
#define JOBSPEC_MAX_CLASS_WEIGHTS 1024
#define JOBSPEC_PATH_MAX 128

typedef enum { LR_CONSTANT, LR_STEP, LR_COSINE, LR_PLATEAU } LrScheduleType;

typedef struct {
    LrScheduleType type;
    int warmup_epochs;      /* linear warmup from lr/10 over these epochs (any type) */
    int step_epochs;        /* step: multiply by gamma every step_epochs */
    float gamma;            /* step */
    float min_lr;           /* cosine: final lr; plateau: floor */
    float factor;           /* plateau: multiply lr by factor ... */
    int patience;           /* plateau: ... after this many epochs without val_loss improving */
} LrSchedule;

typedef struct {
    char name[64];
    int epochs;                 /* >= 1 */
    char train[64];             /* trainable selector: head, all, stage:N, from:BLOCK, keras_last:N */
    BnMode bn;                  /* "bn": "auto" (default: batch statistics for trainable
                                 * layers not loaded from the weights file), "frozen" or
                                 * "train" (select.h) */
    OptimConfig optimizer;
    LrSchedule lr_schedule;
} PhaseSpec;

typedef enum { CLASS_WEIGHT_NONE, CLASS_WEIGHT_BALANCED, CLASS_WEIGHT_MAP } ClassWeightMode;

typedef struct {
    char name[128];
    char dataset[1024];         /* a registered dataset id, or a folder path (resnetd train) */
    char weights[1024];         /* a weights file, or "random" */
    char variant[16];           /* "" (default: the weights', torchvision for random
                                 * ones), "torchvision" or "keras": the architecture
                                 * for random weights and "imagenet"; must agree with
                                 * a weights file's */
    int input_size;             /* default 224 */
    int batch_size;             /* default 32 */
    uint64_t seed;              /* default 0 */
    char preprocess[16];        /* "auto" (default), "caffe", "torch", "tf" or "custom" */
    Normalization custom;       /* when preprocess is "custom" */
    int preprocess_override;    /* allow a mode that contradicts the weights */
    ResizePolicy resize;        /* "squash" (default) or "crop" */
    Augment augment;
    int head_hidden;            /* head.hidden, 0 = none */
    float head_dropout;         /* head.dropout */
    ClassWeightMode class_weight;
    int n_class_weights;        /* CLASS_WEIGHT_MAP: class name -> weight */
    char (*class_weight_names)[128];
    float *class_weight_values;
    float label_smoothing;      /* default 0 */
    double val_fraction;        /* for datasets without a val folder; default 0.2 */
    int n_phases;
    PhaseSpec phases[JOBSPEC_MAX_PHASES];
    int early_stopping;         /* enabled */
    char es_monitor[16];        /* "val_loss" (default), "val_accuracy", "val_balanced_accuracy" */
    int es_patience;            /* default 3 */
    double es_min_delta;        /* default 0 */
    int es_restore_best;        /* default 1 */
    int overfit_batch;          /* preflight.overfit_batch: the one-batch overfit check */
    int overfit_steps;          /* preflight.steps, default 50 */
} JobSpec;

/* Parses and validates json[0..len). On failure returns -1, err says why and
 * path (when not NULL) receives the JSON path of the field ("" for the whole
 * document). The spec owns its class-weight map: jobspec_free. */
int jobspec_parse(JobSpec *spec, const char *json, size_t len, char *path, size_t path_len,
                  Error *err);
void jobspec_free(JobSpec *spec);

/* Total epochs over all phases. */
int jobspec_total_epochs(const JobSpec *spec);

#endif
