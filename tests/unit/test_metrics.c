/*
 * test_metrics.c: core/metrics.c against numpy restatements of scikit-learn's
 * definitions (tests/reference/make_metrics_reference.py writes
 * metrics_reference.json), against small cases worked by hand, and the argmax tie
 * rule, reset and error paths.
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define TOL 1e-12

/* |got - want| <= TOL * max(1, |want|) */
static void assert_near(double got, double want, const char *what, int idx)
{
    double scale = fabs(want) > 1 ? fabs(want) : 1;
    if (!(fabs(got - want) <= TOL * scale))
        fail_msg("%s[%d]: got %.17g want %.17g", what, idx, got, want);
}

static json_t *get_array(json_t *obj, const char *key, size_t len, const char *name)
{
    json_t *a = json_object_get(obj, key);
    if (!json_is_array(a) || json_array_size(a) != len)
        fail_msg("%s: %s is not an array of %zu", name, key, len);
    return a;
}

static double get_number(json_t *obj, const char *key, const char *name)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        fail_msg("%s: %s is not a number", name, key);
    return json_number_value(v);
}

static void check_doubles(json_t *obj, const char *key, const double *got, int k, const char *name)
{
    json_t *a = get_array(obj, key, (size_t)k, name);
    char what[128];
    snprintf(what, sizeof what, "%s %s", name, key);
    for (int j = 0; j < k; j++)
        assert_near(got[j], json_number_value(json_array_get(a, (size_t)j)), what, j);
}

static void check_ints(json_t *obj, const char *key, const int64_t *got, size_t len, const char *name)
{
    json_t *a = get_array(obj, key, len, name);
    for (size_t j = 0; j < len; j++) {
        json_int_t want = json_integer_value(json_array_get(a, j));
        if (got[j] != want)
            fail_msg("%s %s[%zu]: got %lld want %lld", name, key, j, (long long)got[j],
                     (long long)want);
    }
}

/* One reference case: the rows go in as uneven batches (1, 7, 64, rest) so
 * accumulation across calls is exercised. */
static void run_reference_case(json_t *cs)
{
    const char *name = json_string_value(json_object_get(cs, "name"));
    assert_non_null(name);
    int k = (int)json_integer_value(json_object_get(cs, "k"));
    int n = (int)json_integer_value(json_object_get(cs, "n"));
    assert_true(k >= 1 && n >= 1);
    json_t *jl = get_array(cs, "labels", (size_t)n, name);
    json_t *js = get_array(cs, "scores", (size_t)n * k, name);
    json_t *jp = get_array(cs, "pred", (size_t)n, name);
    int *labels = malloc((size_t)n * sizeof *labels);
    float *scores = malloc((size_t)n * k * sizeof *scores);
    assert_non_null(labels);
    assert_non_null(scores);
    for (int i = 0; i < n; i++)
        labels[i] = (int)json_integer_value(json_array_get(jl, (size_t)i));
    for (size_t i = 0; i < (size_t)n * k; i++)
        scores[i] = (float)json_number_value(json_array_get(js, i));

    Confusion c;
    Error err = {{0}};
    assert_int_equal(metrics_confusion_init(&c, k, &err), 0);
    const int batches[] = {1, 7, 64};
    int done = 0;
    for (size_t b = 0; b < sizeof batches / sizeof *batches && done < n; b++) {
        int m = batches[b] < n - done ? batches[b] : n - done;
        metrics_confusion_add(&c, labels + done, scores + (size_t)done * k, m);
        done += m;
    }
    metrics_confusion_add(&c, labels + done, scores + (size_t)done * k, n - done);
    assert_int_equal(c.total, n);
    assert_int_equal(c.bad_labels, 0);
    check_ints(cs, "confusion", c.matrix, (size_t)k * k, name);

    /* numpy's argmax of each row, one row at a time (the tie rule, row by row) */
    for (int i = 0; i < n; i++) {
        Confusion one;
        assert_int_equal(metrics_confusion_init(&one, k, &err), 0);
        metrics_confusion_add(&one, labels + i, scores + (size_t)i * k, 1);
        int want = (int)json_integer_value(json_array_get(jp, (size_t)i));
        if (one.predicted[want] != 1)
            fail_msg("%s row %d: numpy's argmax is %d, C disagrees", name, i, want);
        metrics_confusion_free(&one);
    }

    EpochMetrics em;
    assert_int_equal(metrics_compute(&c, &em, &err), 0);
    assert_int_equal(em.k, k);
    assert_int_equal(em.total, n);
    assert_near(em.accuracy, get_number(cs, "accuracy", name), "accuracy", 0);
    assert_near(em.balanced_accuracy, get_number(cs, "balanced_accuracy", name),
                "balanced_accuracy", 0);
    assert_near(em.majority_share, get_number(cs, "majority_share", name), "majority_share", 0);
    check_doubles(cs, "precision", em.precision, k, name);
    check_doubles(cs, "recall", em.recall, k, name);
    check_doubles(cs, "f1", em.f1, k, name);
    check_ints(cs, "support", em.support, (size_t)k, name);
    check_ints(cs, "predicted", em.predicted, (size_t)k, name);

    int *counts = malloc((size_t)k * sizeof *counts);
    float *w = malloc((size_t)k * sizeof *w);
    assert_non_null(counts);
    assert_non_null(w);
    for (int j = 0; j < k; j++)
        counts[j] = (int)em.support[j];
    double sum = metrics_class_weights_balanced(counts, k, w);
    assert_near(sum, get_number(cs, "class_weights_sum", name), "class_weights_sum", 0);
    json_t *jw = get_array(cs, "class_weights", (size_t)k, name);
    for (int j = 0; j < k; j++) {
        float want = (float)json_number_value(json_array_get(jw, (size_t)j));
        if (w[j] != want)
            fail_msg("%s class_weights[%d]: got %.9g want %.9g", name, j, w[j], want);
    }
    printf("# %s: k %d, n %d, accuracy %.4f, balanced %.4f\n", name, k, n, em.accuracy,
           em.balanced_accuracy);

    free(counts);
    free(w);
    metrics_free(&em);
    metrics_confusion_free(&c);
    free(labels);
    free(scores);
}

static void test_vs_numpy_reference(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file(testutil_ref_path("metrics_reference.json"), 0, &jerr);
    if (!root)
        fail_msg("metrics_reference.json: %s", jerr.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_is_array(cases));
    assert_true(json_array_size(cases) >= 4);
    size_t i;
    json_t *cs;
    int saw_no_support = 0, saw_never_predicted = 0;
    json_array_foreach(cases, i, cs) {
        run_reference_case(cs);
        json_t *sup = json_object_get(cs, "support"), *pred = json_object_get(cs, "predicted");
        for (size_t j = 0; j < json_array_size(sup); j++) {
            saw_no_support |= json_integer_value(json_array_get(sup, j)) == 0;
            saw_never_predicted |= json_integer_value(json_array_get(pred, j)) == 0;
        }
    }
    /* the reference must cover both zero_division paths */
    assert_true(saw_no_support);
    assert_true(saw_never_predicted);
    json_decref(root);
}

/* Feeds a k x k matrix [true][pred] of small counts into c as one-hot logits
 * (the predicted class 2.5, the others -1). */
static void add_matrix(Confusion *c, const int *m, int k)
{
    float row[8];
    assert_true(k <= 8);
    for (int t = 0; t < k; t++)
        for (int p = 0; p < k; p++)
            for (int r = 0; r < m[t * k + p]; r++) {
                for (int j = 0; j < k; j++)
                    row[j] = j == p ? 2.5f : -1.0f;
                metrics_confusion_add(c, &t, row, 1);
            }
}

typedef struct {
    double accuracy, balanced, majority;
    double precision[3], recall[3], f1[3];
    int64_t support[3], predicted[3];
    float weights[3];
    double weights_sum;
} Hand;

static void check_hand(const int *m, int k, const Hand *h)
{
    Confusion c;
    Error err = {{0}};
    assert_int_equal(metrics_confusion_init(&c, k, &err), 0);
    add_matrix(&c, m, k);
    for (int i = 0; i < k * k; i++)
        assert_int_equal(c.matrix[i], m[i]);
    EpochMetrics em;
    assert_int_equal(metrics_compute(&c, &em, &err), 0);
    assert_near(em.accuracy, h->accuracy, "accuracy", 0);
    assert_near(em.balanced_accuracy, h->balanced, "balanced_accuracy", 0);
    assert_near(em.majority_share, h->majority, "majority_share", 0);
    int counts[3];
    float w[3];
    for (int j = 0; j < k; j++) {
        assert_near(em.precision[j], h->precision[j], "precision", j);
        assert_near(em.recall[j], h->recall[j], "recall", j);
        assert_near(em.f1[j], h->f1[j], "f1", j);
        assert_int_equal(em.support[j], h->support[j]);
        assert_int_equal(em.predicted[j], h->predicted[j]);
        counts[j] = (int)em.support[j];
    }
    assert_near(metrics_class_weights_balanced(counts, k, w), h->weights_sum, "weights_sum", 0);
    for (int j = 0; j < k; j++)
        assert_true(w[j] == h->weights[j]);
    metrics_free(&em);
    metrics_confusion_free(&c);
}

/* [[2, 1], [0, 2]]: tp (2, 2), support (3, 2), predicted (2, 3). */
static void test_hand_2x2(void **state)
{
    (void)state;
    const int m[] = {2, 1,
                     0, 2};
    Hand h = {
        .accuracy = 4.0 / 5, .balanced = (2.0 / 3 + 1.0) / 2, .majority = 3.0 / 5,
        .precision = {1.0, 2.0 / 3}, .recall = {2.0 / 3, 1.0}, .f1 = {0.8, 0.8},
        .support = {3, 2}, .predicted = {2, 3},
        .weights = {(float)(5.0 / 6), 1.25f}, .weights_sum = 5.0 / 6 + 1.25,
    };
    check_hand(m, 2, &h);
}

/* [[5, 1, 0], [2, 3, 1], [0, 0, 4]]: every class supported and predicted. */
static void test_hand_3x3(void **state)
{
    (void)state;
    const int m[] = {5, 1, 0,
                     2, 3, 1,
                     0, 0, 4};
    Hand h = {
        .accuracy = 12.0 / 16, .balanced = (5.0 / 6 + 0.5 + 1.0) / 3, .majority = 6.0 / 16,
        .precision = {5.0 / 7, 3.0 / 4, 4.0 / 5}, .recall = {5.0 / 6, 0.5, 1.0},
        .f1 = {10.0 / 13, 6.0 / 10, 8.0 / 9},
        .support = {6, 6, 4}, .predicted = {7, 4, 5},
        .weights = {(float)(16.0 / 18), (float)(16.0 / 18), (float)(16.0 / 12)},
        .weights_sum = 16.0 / 18 * 2 + 16.0 / 12,
    };
    check_hand(m, 3, &h);
}

/* [[3, 1, 0], [0, 0, 0], [2, 1, 0]]: class 1 has no support (recall 0, left out of
 * the balanced accuracy, weight 0), class 2 is never predicted (precision 0). */
static void test_hand_3x3_zero_division(void **state)
{
    (void)state;
    const int m[] = {3, 1, 0,
                     0, 0, 0,
                     2, 1, 0};
    Hand h = {
        .accuracy = 3.0 / 7, .balanced = (3.0 / 4 + 0.0) / 2, .majority = 4.0 / 7,
        .precision = {3.0 / 5, 0.0, 0.0}, .recall = {3.0 / 4, 0.0, 0.0},
        .f1 = {6.0 / 9, 0.0, 0.0},
        .support = {4, 0, 3}, .predicted = {5, 2, 0},
        .weights = {(float)(7.0 / 12), 0.0f, (float)(7.0 / 9)},
        .weights_sum = 7.0 / 12 + 7.0 / 9,
    };
    check_hand(m, 3, &h);
}

/* Ties go to the first maximum; NaN never wins; an all-NaN row predicts 0. */
static void test_argmax_ties(void **state)
{
    (void)state;
    const float inf = INFINITY, nan = NAN;
    const float rows[][4] = {
        {1, 1, 0, 0},          /* 0 */
        {0, 2, 2, 1},          /* 1 */
        {0.5f, 0.5f, 0.5f, 0.5f}, /* 0 */
        {nan, 1, 3, 3},        /* 2 */
        {nan, nan, nan, nan},  /* 0 */
        {-inf, -inf, -1, -1},  /* 2 */
        {-inf, -inf, -inf, -inf}, /* 0 */
        {0, 0, 0, inf},        /* 3 */
        {-0.0f, 0.0f, -1, -2}, /* 0: -0 == +0 */
    };
    const int want[] = {0, 1, 0, 2, 0, 2, 0, 3, 0};
    const int n = (int)(sizeof want / sizeof *want);
    Confusion c;
    assert_int_equal(metrics_confusion_init(&c, 4, NULL), 0);
    for (int i = 0; i < n; i++) {
        const int label = 3;
        metrics_confusion_add(&c, &label, rows[i], 1);
        int64_t hist[4] = {0};
        for (int j = 0; j <= i; j++)
            hist[want[j]]++;
        for (int p = 0; p < 4; p++) {
            if (c.predicted[p] != hist[p])
                fail_msg("row %d: predicted[%d] = %lld, want %lld", i, p,
                         (long long)c.predicted[p], (long long)hist[p]);
            assert_int_equal(c.matrix[3 * 4 + p], hist[p]);
        }
    }
    assert_int_equal(c.support[3], n);
    assert_int_equal(c.support[0] + c.support[1] + c.support[2], 0);
    metrics_confusion_free(&c);
}

static void test_reset(void **state)
{
    (void)state;
    const int m1[] = {1, 4, 2, 0, 3, 1, 5, 0, 2};
    const int m2[] = {2, 0, 0, 1, 1, 0, 0, 0, 3};
    Confusion c, fresh;
    assert_int_equal(metrics_confusion_init(&c, 3, NULL), 0);
    assert_int_equal(metrics_confusion_init(&fresh, 3, NULL), 0);
    add_matrix(&c, m1, 3);
    const int bad = 7;
    const float row[3] = {0, 1, 0};
    metrics_confusion_add(&c, &bad, row, 1);
    assert_int_equal(c.bad_labels, 1);
    assert_int_equal(c.total, 18);

    metrics_confusion_reset(&c);
    assert_int_equal(c.k, 3);
    assert_int_equal(c.total, 0);
    assert_int_equal(c.bad_labels, 0);
    for (int i = 0; i < 9; i++)
        assert_int_equal(c.matrix[i], 0);
    for (int j = 0; j < 3; j++) {
        assert_int_equal(c.support[j], 0);
        assert_int_equal(c.predicted[j], 0);
    }

    add_matrix(&c, m2, 3);
    add_matrix(&fresh, m2, 3);
    assert_memory_equal(c.matrix, fresh.matrix, 9 * sizeof *c.matrix);
    assert_memory_equal(c.support, fresh.support, 3 * sizeof *c.support);
    assert_memory_equal(c.predicted, fresh.predicted, 3 * sizeof *c.predicted);
    assert_int_equal(c.total, fresh.total);
    EpochMetrics a, b;
    assert_int_equal(metrics_compute(&c, &a, NULL), 0);
    assert_int_equal(metrics_compute(&fresh, &b, NULL), 0);
    assert_true(a.accuracy == b.accuracy && a.accuracy == 6.0 / 7);
    assert_true(a.balanced_accuracy == b.balanced_accuracy);
    metrics_free(&a);
    metrics_free(&b);
    metrics_confusion_free(&c);
    metrics_confusion_free(&fresh);
}

static void test_errors(void **state)
{
    (void)state;
    Error err = {{0}};
    Confusion c;
    assert_int_equal(metrics_confusion_init(&c, 0, &err), -1);
    assert_non_null(strstr(err.msg, "0 classes"));
    metrics_confusion_free(&c);  /* after a failed init */
    assert_int_equal(metrics_confusion_init(&c, METRICS_MAX_CLASSES + 1, &err), -1);
    assert_int_equal(metrics_confusion_init(&c, -3, NULL), -1);
    metrics_confusion_free(NULL);
    metrics_free(NULL);

    assert_int_equal(metrics_confusion_init(&c, 2, &err), 0);
    EpochMetrics em;
    err.msg[0] = 0;
    assert_int_equal(metrics_compute(&c, &em, &err), -1);  /* no rows */
    assert_non_null(strstr(err.msg, "no rows"));
    assert_null(em.precision);
    metrics_free(&em);

    const int labels[] = {0, -1, 1, 2};
    const float scores[] = {1, 0, 0, 1, 0, 1, 1, 0};
    metrics_confusion_add(&c, labels, scores, 4);
    assert_int_equal(c.total, 2);
    assert_int_equal(c.bad_labels, 2);
    assert_int_equal(c.matrix[0], 1);  /* (0 -> 0) */
    assert_int_equal(c.matrix[3], 1);  /* (1 -> 1) */
    assert_int_equal(metrics_compute(&c, &em, &err), -1);
    assert_non_null(strstr(err.msg, "2 rows had a label outside 0..1"));
    metrics_confusion_add(&c, labels, scores, 0);
    assert_int_equal(c.total, 2);
    metrics_confusion_free(&c);
    metrics_confusion_free(&c);  /* twice is harmless */

    /* one class: everything right, balanced accuracy 1 */
    assert_int_equal(metrics_confusion_init(&c, 1, &err), 0);
    const int zeros[3] = {0, 0, 0};
    const float any[3] = {-5, 0, 7};
    metrics_confusion_add(&c, zeros, any, 3);
    assert_int_equal(metrics_compute(&c, &em, &err), 0);
    assert_true(em.accuracy == 1.0 && em.balanced_accuracy == 1.0 && em.f1[0] == 1.0);
    assert_true(em.majority_share == 1.0);
    metrics_free(&em);
    metrics_free(&em);
    metrics_confusion_free(&c);
}

static void test_class_weights(void **state)
{
    (void)state;
    /* N = 100, k = 4: 100 / (4 n_c) */
    const int counts[] = {50, 0, 25, 25};
    float w[4];
    double sum = metrics_class_weights_balanced(counts, 4, w);
    assert_true(w[0] == 0.5f && w[1] == 0.0f && w[2] == 1.0f && w[3] == 1.0f);
    assert_true(sum == 2.5);
    /* a balanced set gets weight 1 everywhere */
    const int even[] = {7, 7, 7};
    sum = metrics_class_weights_balanced(even, 3, w);
    assert_true(w[0] == 1.0f && w[1] == 1.0f && w[2] == 1.0f && sum == 3.0);
    /* every class then carries the same total weight w_c n_c = N / k */
    const int skew[] = {1, 3, 1000, 17, 0};
    float ws[5];
    metrics_class_weights_balanced(skew, 5, ws);
    for (int j = 0; j < 5; j++)
        if (skew[j] > 0)
            assert_true(fabs((double)ws[j] * skew[j] - 1021.0 / 5) <= 1021.0 / 5 * 1e-7);
    assert_true(ws[4] == 0.0f);
    const int none[] = {0, 0};
    assert_true(metrics_class_weights_balanced(none, 2, w) == 0.0);
    assert_true(w[0] == 0.0f && w[1] == 0.0f);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_numpy_reference),
        cmocka_unit_test(test_hand_2x2),
        cmocka_unit_test(test_hand_3x3),
        cmocka_unit_test(test_hand_3x3_zero_division),
        cmocka_unit_test(test_argmax_ties),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_class_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
