/*
 * metrics.h: per-epoch classification metrics for K classes.
 *
 * A Confusion accumulates the K x K confusion matrix of a pass over a split,
 * batch by batch (argmax of each row of probabilities or logits against the true
 * label). metrics_compute derives from it what the daemon reports per epoch, with
 * scikit-learn's definitions:
 *   accuracy            trace / total                       (accuracy_score)
 *   balanced accuracy   mean recall over the classes with support > 0
 *                                                           (balanced_accuracy_score)
 *   precision, recall,  per class, zero_division=0: a class never predicted has
 *   F1, support         precision 0, a class without support recall 0, and
 *                       F1 = 2 tp / (support + predicted), 0 when both are 0
 *                       (precision_recall_fscore_support(average=None, zero_division=0))
 *   predicted           the histogram of predicted classes (the column sums)
 *   majority share      largest support / total: the accuracy of always answering
 *                       the most frequent class, the floor accuracy must beat
 * tests/reference/make_metrics_reference.py computes the same numbers in numpy.
 *
 * Nothing here is shared between threads: a Confusion belongs to one caller.
 */
#ifndef RESNETD_METRICS_H
#define RESNETD_METRICS_H

#include <stdint.h>

#include "error.h"

/* The matrix is k*k int64: 4096 classes is 128 MiB, a sane upper bound for a
 * fine-tuning head, and keeps k*k far from overflowing. */
#define METRICS_MAX_CLASSES 4096

typedef struct {
    int k;
    int64_t *matrix;     /* [k][k] row-major, [true][pred]; owns the one allocation */
    int64_t *support;    /* [k] view into the same block: row sums (true class counts) */
    int64_t *predicted;  /* [k] view: column sums (predicted class counts) */
    int64_t total;       /* rows counted (labels in 0..k-1) */
    int64_t bad_labels;  /* rows skipped because their label was outside 0..k-1 */
} Confusion;

typedef struct {
    int k;
    int64_t total;
    double accuracy;
    double balanced_accuracy;
    double majority_share;
    double *precision;   /* [k]; owns the one allocation of all five arrays */
    double *recall;      /* [k] view */
    double *f1;          /* [k] view */
    int64_t *support;    /* [k] view: true class counts */
    int64_t *predicted;  /* [k] view: histogram of predicted classes */
} EpochMetrics;

/* Allocates a zeroed accumulator for k classes (1 <= k <= METRICS_MAX_CLASSES).
 * c is owned by the caller and released with metrics_confusion_free, which is
 * safe to call after a failed init. Returns 0, or -1 with err set. */
int metrics_confusion_init(Confusion *c, int k, Error *err);

/* Adds n rows. labels: [n] true classes; probs_or_logits: [n][k] row-major scores
 * (any monotone scale: argmax is all that is used). Both are borrowed for the
 * call. The predicted class of a row is its first maximum: ties go to the lowest
 * index, as numpy/torch argmax. NaN scores never win; a row of NaN predicts
 * class 0. A row whose label is outside 0..k-1 is not counted but tallied in
 * bad_labels, and metrics_compute then refuses the matrix. */
void metrics_confusion_add(Confusion *c, const int *labels, const float *probs_or_logits, int n);

/* Zeroes the counts for the next epoch, keeping the allocation. */
void metrics_confusion_reset(Confusion *c);

/* Frees the matrix; accepts NULL and a zeroed or already freed Confusion. */
void metrics_confusion_free(Confusion *c);

/* Fills out from c (borrowed). out's arrays are allocated here and owned by the
 * caller (metrics_free); on failure out is left zeroed, nothing to free.
 * Fails when c counted no rows or skipped rows with invalid labels. */
int metrics_compute(const Confusion *c, EpochMetrics *out, Error *err);

/* Frees out's arrays; accepts NULL and a zeroed or already freed EpochMetrics. */
void metrics_free(EpochMetrics *out);

/* Keras/scikit-learn 'balanced' class weights: w[c] = N / (k * counts[c]), with
 * N = sum of counts, so that every class carries the same total weight; a class
 * with count 0 gets weight 0 (sklearn refuses such a class; here it simply has
 * no samples to weigh). k is the number of classes of the head, absent ones
 * included, like compute_class_weight('balanced', classes=arange(k), y).
 * counts: [k], borrowed, each >= 0. w_out: [k], written. Returns the sum of the
 * weights (computed in double before rounding to float), 0 when N is 0. */
double metrics_class_weights_balanced(const int *counts, int k, float *w_out);

#endif
