/* metrics.c: see metrics.h. */
#include "metrics.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int metrics_confusion_init(Confusion *c, int k, Error *err)
{
    memset(c, 0, sizeof *c);
    if (k < 1 || k > METRICS_MAX_CLASSES)
        return error_set(err, "metrics: %d classes, need 1..%d", k, METRICS_MAX_CLASSES);
    size_t cells = (size_t)k * (size_t)k + 2 * (size_t)k;
    c->matrix = calloc(cells, sizeof *c->matrix);
    if (!c->matrix)
        return error_set(err, "metrics: out of memory for a %dx%d confusion matrix", k, k);
    c->k = k;
    c->support = c->matrix + (size_t)k * k;
    c->predicted = c->support + k;
    return 0;
}

/* First maximum of row [k]; NaN never compares greater, so it never wins. */
static int argmax_first(const float *row, int k)
{
    int best = -1;
    for (int j = 0; j < k; j++) {
        if (isnan(row[j]))
            continue;
        if (best < 0 || row[j] > row[best])
            best = j;
    }
    return best < 0 ? 0 : best;
}

void metrics_confusion_add(Confusion *c, const int *labels, const float *probs_or_logits, int n)
{
    const int k = c->k;
    for (int i = 0; i < n; i++) {
        int t = labels[i];
        if (t < 0 || t >= k) {
            c->bad_labels++;
            continue;
        }
        int p = argmax_first(probs_or_logits + (size_t)i * k, k);
        c->matrix[(size_t)t * k + p]++;
        c->support[t]++;
        c->predicted[p]++;
        c->total++;
    }
}

void metrics_confusion_reset(Confusion *c)
{
    if (c->matrix)
        memset(c->matrix, 0, ((size_t)c->k * c->k + 2 * (size_t)c->k) * sizeof *c->matrix);
    c->total = 0;
    c->bad_labels = 0;
}

void metrics_confusion_free(Confusion *c)
{
    if (!c)
        return;
    free(c->matrix);
    memset(c, 0, sizeof *c);
}

/* a / b, or 0 when b is 0 (scikit-learn's zero_division=0). */
static double ratio0(int64_t a, int64_t b)
{
    return b == 0 ? 0.0 : (double)a / (double)b;
}

int metrics_compute(const Confusion *c, EpochMetrics *out, Error *err)
{
    memset(out, 0, sizeof *out);
    if (c->bad_labels > 0)
        return error_set(err, "metrics: %lld rows had a label outside 0..%d",
                         (long long)c->bad_labels, c->k - 1);
    if (c->total == 0)
        return error_set(err, "metrics: no rows counted");
    const int k = c->k;
    /* three double arrays then two int64 arrays: both 8 bytes, one allocation */
    double *block = malloc((size_t)k * (3 * sizeof(double) + 2 * sizeof(int64_t)));
    if (!block)
        return error_set(err, "metrics: out of memory for %d classes", k);
    out->k = k;
    out->total = c->total;
    out->precision = block;
    out->recall = block + k;
    out->f1 = block + 2 * (size_t)k;
    out->support = (int64_t *)(block + 3 * (size_t)k);
    out->predicted = out->support + k;
    memcpy(out->support, c->support, (size_t)k * sizeof *out->support);
    memcpy(out->predicted, c->predicted, (size_t)k * sizeof *out->predicted);

    int64_t correct = 0, largest = 0;
    double recall_sum = 0;
    int supported = 0;
    for (int j = 0; j < k; j++) {
        int64_t tp = c->matrix[(size_t)j * k + j];
        correct += tp;
        out->precision[j] = ratio0(tp, c->predicted[j]);
        out->recall[j] = ratio0(tp, c->support[j]);
        /* sklearn's form of 2pr/(p+r): no rounding of p and r in between */
        out->f1[j] = ratio0(2 * tp, c->support[j] + c->predicted[j]);
        if (c->support[j] > 0) {
            recall_sum += out->recall[j];
            supported++;
        }
        if (c->support[j] > largest)
            largest = c->support[j];
    }
    out->accuracy = (double)correct / (double)c->total;
    out->balanced_accuracy = recall_sum / supported; /* total > 0: some class has support */
    out->majority_share = (double)largest / (double)c->total;
    return 0;
}

void metrics_free(EpochMetrics *out)
{
    if (!out)
        return;
    free(out->precision);
    memset(out, 0, sizeof *out);
}

double metrics_class_weights_balanced(const int *counts, int k, float *w_out)
{
    int64_t n = 0;
    for (int j = 0; j < k; j++) {
        assert(counts[j] >= 0);
        n += counts[j];
    }
    double sum = 0;
    for (int j = 0; j < k; j++) {
        double w = counts[j] > 0 ? (double)n / ((double)k * (double)counts[j]) : 0.0;
        w_out[j] = (float)w;
        sum += w;
    }
    return sum;
}
