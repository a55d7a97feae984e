/*
 * diagnose.h: why a fine-tuning run does not improve, with evidence.
 *
 * One table of rules (diag_rules): each has a stable code, a severity, the stage
 * it runs at and a one-line summary; docs/diagnosis.md explains every rule, its
 * threshold and why. Rules run at four stages:
 *   dataset    when a dataset is scanned (registration, and each job's scan)
 *   preflight  before a job's first epoch: the preprocessing against the
 *              weights, the tensors actually fed to the model, the original
 *              head on the user's images, class weighting, resolution
 *   phase      when a phase starts: its BatchNorm modes and the batch size
 *   epoch      after every epoch, over the job's history so far
 * A finding carries a message, its evidence as a JSON object of numbers, and a
 * suggested fix for the job's situation (from random weights or fine-tuning
 * pretrained ones). Each code is raised at most once per job (the first time its
 * condition holds), so a finding is an event, not a stream of repeats. Epoch
 * rules about symptoms that are normal early in a run (predictions on one
 * class, a BN train/inference gap, a loss still at log(classes)) wait until the
 * condition has held on consecutive epochs past the run's first optimizer steps.
 */
#ifndef RESNETD_DIAGNOSE_H
#define RESNETD_DIAGNOSE_H

#include <stdint.h>

#include "dataset.h"
#include "preprocess.h"

typedef enum { DIAG_INFO = 0, DIAG_WARNING = 1, DIAG_ERROR = 2 } DiagSeverity;

typedef struct {
    const char *code;       /* static, e.g. "PREPROC_DOUBLE_SCALE" */
    DiagSeverity severity;
    int epoch;              /* 0-based epoch it was seen after; -1 before training */
    char message[512];
    char evidence[1536];    /* JSON object */
    char fix[512];
} Finding;

typedef struct {
    const char *code;
    DiagSeverity severity;
    const char *stage;      /* "dataset", "preflight", "phase" or "epoch" */
    const char *summary;
} DiagRule;

extern const DiagRule diag_rules[];
extern const int diag_rule_count;

const char *diag_severity_name(DiagSeverity s);

/* Receives each new finding (borrowed for the call). */
typedef void (*DiagSink)(void *ctx, const Finding *f);

/* ---- dataset ---------------------------------------------------------- */

/* Leakage (identical images across splits), class imbalance, splits whose
 * pixel statistics differ beyond sampling, images nearly black or stored
 * already scaled to 0..1. Returns the number of findings. */
int diag_dataset(const Dataset *ds, DiagSink sink, void *ctx);

/* ---- preflight -------------------------------------------------------- */

typedef struct {
    const Dataset *ds;
    const Preprocess *p;         /* what the job uses */
    const char *declared;        /* the weights' preprocessing ("" or NULL: random weights) */
    int overridden;              /* the job forced a mode against the declared one */
    const InputStats *inputs;    /* tensors actually fed (first batches), NULL if unknown */
    int batch_size;
    int class_weighting;         /* the job weights classes (balanced or a map) */
    /* the weights' own head on a sample of the user's images: the share of the
     * most predicted original class (-1: not run, e.g. no head) */
    double head_top_share;
    int head_top_class, head_classes, head_sample;
    double head_batch_majority;  /* largest share of one user label in that batch */
    /* the one-batch overfit check: train accuracy reached (-1: not run) */
    double overfit_accuracy;
    int overfit_steps, overfit_batch;
} PreflightInput;

int diag_preflight(const PreflightInput *in, DiagSink sink, void *ctx);

/* ---- phases and epochs ------------------------------------------------ */

#define DIAG_STAGES 6 /* as TRAIN_STAGES: conv1, conv2..conv5, head */

/* One finished epoch. epoch counts from the job's start and phase_epoch from the
 * phase's (both 0-based, both kept by a resumed job), so the rules know how many
 * optimizer steps the job and the phase have taken by its end. */
typedef struct {
    int epoch, phase, phase_epoch;
    double train_loss, train_acc, val_loss, val_acc, val_balanced_acc;
    double weight_change[DIAG_STAGES];   /* since the job started */
    int trainable[DIAG_STAGES];          /* the stage has trainable layers this phase */
    int top_pred_class;                  /* most predicted val class */
    double top_pred_share;               /* its share of val predictions */
    double top_pred_support_share;       /* its share of val labels */
    double majority_share;               /* largest class's share of val labels */
    /* BN in train mode this phase: the loss of one fixed batch in train mode and
     * in inference mode (NAN when not measured) */
    double bn_train_loss, bn_infer_loss;
} EpochSummary;

/* What the phase and epoch rules know about the job. */
typedef struct {
    int n_classes;
    int class_weighting;       /* the job weights classes (balanced or a map) */
    double imbalance;          /* train split: largest / smallest class */
    int pretrained;            /* started from a weights file (1) or "random" (0): picks
                                * each fix, and how long a from-scratch start may look bad */
    int steps_per_epoch;       /* optimizer steps in a full epoch; values < 1 count as 1 */
} DiagJob;

typedef struct {
    DiagJob job;
    int n;                     /* epochs so far */
    int cap;
    EpochSummary *hist;
    unsigned char raised[64];  /* by rule index: raised already */
} Diagnosis;

/* job is copied. A Diagnosis is used by one thread at a time. */
void diag_init(Diagnosis *d, const DiagJob *job);
void diag_free(Diagnosis *d);

/* A phase starts (before its first epoch, which is `epoch` of the job):
 * BN_SMALL_BATCH when bn_batch_stats_layers BN layers use batch statistics with
 * batches under 16; BN_FROZEN_RANDOM when bn_frozen_random_layers trainable BN
 * layers that were not loaded from the weights file run in inference mode (an
 * explicit "bn": "frozen": their running statistics 0 and 1 never change).
 * Returns the number of findings (each code once per job, as the epoch rules). */
int diag_phase(Diagnosis *d, int phase, const char *phase_name, int bn_batch_stats_layers,
               int bn_frozen_random_layers, int batch_size, int epoch, DiagSink sink,
               void *ctx);

/* Adds the epoch to the history and runs the epoch rules. */
int diag_epoch(Diagnosis *d, const EpochSummary *e, DiagSink sink, void *ctx);

/* Marks a code as raised (a resumed job replays its stored findings). */
void diag_mark_raised(Diagnosis *d, const char *code);

#endif
