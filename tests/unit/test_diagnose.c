/*
 * test_diagnose.c: core/diagnose.c's rules on hand-made inputs, each on both
 * sides of its threshold: the epoch rules over short histories, the dataset
 * rules over reports, the preflight rules over input statistics; each code is
 * raised once per job; the evidence is valid JSON with the numbers that
 * triggered it; the rule table has unique codes. Symptoms that are normal early
 * in a run wait: a one-epoch transient is not raised, the same condition held on
 * consecutive epochs past the start is, and the start is longer from random
 * weights than when fine-tuning; each fix names the action for the job's
 * situation (from scratch or fine-tuning). (tests/e2e/test_diagnosis.py runs
 * real scenarios end to end.)
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "diagnose.h"

typedef struct {
    int n;
    Finding f[32];
} Sink;

static void collect(void *ctx, const Finding *f)
{
    Sink *s = ctx;
    assert_true(s->n < 32);
    s->f[s->n++] = *f;
}

static const Finding *find(const Sink *s, const char *code)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->f[i].code, code))
            return &s->f[i];
    return NULL;
}

/* The evidence's number at key (fails when missing or not JSON). */
static double ev(const Finding *f, const char *key)
{
    json_error_t je;
    json_t *j = json_loads(f->evidence, 0, &je);
    if (!j)
        fail_msg("%s: evidence is not JSON: %s (%s)", f->code, f->evidence, je.text);
    json_t *v = json_object_get(j, key);
    if (!json_is_number(v))
        fail_msg("%s: evidence has no number '%s': %s", f->code, key, f->evidence);
    double d = json_number_value(v);
    json_decref(j);
    return d;
}

/* A job of `classes` balanced classes, unweighted, with `spe` steps per epoch. */
static void start(Diagnosis *d, int classes, int pretrained, int spe)
{
    diag_init(d, &(DiagJob){.n_classes = classes, .imbalance = 1.0, .pretrained = pretrained,
                            .steps_per_epoch = spe});
}

/* Feeds epochs h[0..n-1]; returns the number of findings raised. */
static int feed(Diagnosis *d, const EpochSummary *h, int n, Sink *s)
{
    int found = 0;
    for (int i = 0; i < n; i++)
        found += diag_epoch(d, &h[i], collect, s);
    return found;
}

static EpochSummary epoch(int e, int phase, int pe, double tl, double ta, double vl, double va)
{
    EpochSummary s;
    memset(&s, 0, sizeof s);
    s.epoch = e;
    s.phase = phase;
    s.phase_epoch = pe;
    s.train_loss = tl;
    s.train_acc = ta;
    s.val_loss = vl;
    s.val_acc = va;
    s.val_balanced_acc = va;
    s.trainable[5] = 1;
    s.top_pred_share = 0.4;
    s.top_pred_support_share = 0.34;
    s.majority_share = 0.34;
    s.bn_train_loss = s.bn_infer_loss = NAN;
    return s;
}

/* Fails unless text contains needle (a fix names its situation's action). */
static void assert_contains(const char *text, const char *needle, int want)
{
    if ((strstr(text, needle) != NULL) != want)
        fail_msg("'%s' %s '%s'", text, want ? "lacks" : "should not contain", needle);
}

static void test_table(void **state)
{
    (void)state;
    assert_true(diag_rule_count >= 20 && diag_rule_count <= 64);
    for (int i = 0; i < diag_rule_count; i++)
        for (int j = i + 1; j < diag_rule_count; j++)
            assert_string_not_equal(diag_rules[i].code, diag_rules[j].code);
    assert_string_equal(diag_severity_name(DIAG_ERROR), "error");
    int seen = 0;
    for (int i = 0; i < diag_rule_count; i++)
        if (!strcmp(diag_rules[i].code, "BN_FROZEN_RANDOM")) {
            assert_int_equal(diag_rules[i].severity, DIAG_WARNING);
            assert_string_equal(diag_rules[i].stage, "phase");
            seen++;
        }
    assert_int_equal(seen, 1);
}

static void test_divergence(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    start(&d, 3, 0, 15);
    EpochSummary e = epoch(0, 0, 0, NAN, 0.3, NAN, 0.3);
    assert_int_equal(diag_epoch(&d, &e, collect, &s), 1);
    assert_string_equal(s.f[0].code, "LR_DIVERGED");
    assert_int_equal(s.f[0].severity, DIAG_ERROR);
    assert_int_equal(s.f[0].epoch, 0);
    /* once per job */
    assert_int_equal(diag_epoch(&d, &e, collect, &s), 0);
    diag_free(&d);

    /* rising 3 epochs of 15 steps in a row by more than 5% each: yes; by 4%: no */
    double up6[4] = {1.0, 1.06, 1.13, 1.2}, up4[4] = {1.0, 1.04, 1.08, 1.12};
    for (int k = 0; k < 2; k++) {
        Sink t = {0};
        start(&d, 3, 0, 15);
        for (int i = 0; i < 4; i++) {
            e = epoch(i, 0, i, k == 0 ? up6[i] : up4[i], 0.5, 1.0, 0.5);
            diag_epoch(&d, &e, collect, &t);
        }
        const Finding *f = find(&t, "LR_DIVERGED");
        assert_int_equal(f != NULL, k == 0);
        if (f)
            assert_int_equal((int)ev(f, "rising_epochs"), 3);
        diag_free(&d);
    }
    /* epochs of one step: each loss is one batch's, so 3 rises are noise; the loss
     * has to rise over 10 steps (10 epochs) */
    Sink one = {0};
    start(&d, 3, 0, 1);
    double loss = 1.0;
    for (int i = 0; i < 12; i++) {
        e = epoch(i, 0, i, loss, 0.5, 1.0, 0.5);
        diag_epoch(&d, &e, collect, &one);
        assert_int_equal(find(&one, "LR_DIVERGED") != NULL, i >= 10);
        loss *= 1.06;
    }
    const Finding *f = find(&one, "LR_DIVERGED");
    assert_int_equal(f->epoch, 10);
    assert_int_equal((int)ev(f, "rising_epochs"), 10);
    diag_free(&d);
    /* a finite blow-up: the head moved 95 times its norm in one epoch */
    Sink b = {0};
    start(&d, 3, 0, 15);
    e = epoch(0, 0, 0, 3e4, 0.3, 2e4, 0.3);
    e.weight_change[5] = 95;
    diag_epoch(&d, &e, collect, &b);
    f = find(&b, "LR_DIVERGED");
    assert_non_null(f);
    assert_true(fabs(ev(f, "max_relative_weight_change") - 95) < 1e-9);
    diag_free(&d);
    /* rising but tiny losses (a model that already fits): not divergence */
    Sink tiny = {0};
    start(&d, 3, 0, 15);
    double small[4] = {1.4e-6, 1.5e-6, 1.9e-6, 2.7e-6};
    for (int i = 0; i < 4; i++) {
        e = epoch(i, 0, i, small[i], 1.0, 0.2, 0.9);
        diag_epoch(&d, &e, collect, &tiny);
    }
    assert_null(find(&tiny, "LR_DIVERGED"));
    diag_free(&d);
}

static void test_unfreeze_destroys(void **state)
{
    (void)state;
    /* k 0..2 fine-tune pretrained weights; k 3 is k 0's history from random weights,
     * where there are no pretrained features to destroy */
    for (int k = 0; k < 4; k++) {
        Diagnosis d;
        Sink s = {0};
        start(&d, 3, k != 3, 15);
        EpochSummary a = epoch(0, 0, 0, 0.8, 0.7, 0.7, 0.75);
        EpochSummary b = epoch(1, 1, 0, 1.5, 0.4, 1.6, 0.35);
        b.trainable[4] = 1;                    /* conv5 unfrozen in phase 1 */
        b.weight_change[4] = k == 1 ? 0.005 : 0.3; /* k 1: moved too little to blame */
        if (k == 2)
            b.val_acc = 0.74;                  /* k 2: val did not drop */
        b.val_loss = k == 2 ? 0.72 : 1.6;
        diag_epoch(&d, &a, collect, &s);
        diag_epoch(&d, &b, collect, &s);
        const Finding *f = find(&s, "LR_DESTROYS_PRETRAINED");
        assert_int_equal(f != NULL, k == 0);
        if (f) {
            assert_int_equal(f->epoch, 1); /* at once: the moved weights do not come back */
            assert_true(fabs(ev(f, "val_acc_before") - 0.75) < 1e-9);
            assert_true(fabs(ev(f, "val_acc_after") - 0.35) < 1e-9);
            assert_true(fabs(ev(f, "max_relative_weight_change") - 0.3) < 1e-9);
        }
        diag_free(&d);
    }
}

static void test_too_low_and_overfitting(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    /* a plateau: loss within 1%, weights moving 1e-5 per epoch */
    start(&d, 4, 1, 15);
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, 0.9 - 0.001 * i, 0.6, 0.95, 0.55);
        e.weight_change[5] = 1e-5 * (i + 1);
        diag_epoch(&d, &e, collect, &s);
    }
    const Finding *f = find(&s, "LR_TOO_LOW");
    assert_non_null(f);
    assert_int_equal(f->epoch, 2);
    assert_true(ev(f, "weight_change_per_epoch") < 1e-4);
    diag_free(&d);
    /* the same plateau with the weights moving 1e-3 per epoch: not the rate's fault */
    Sink t = {0};
    start(&d, 4, 1, 15);
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, 0.9 - 0.001 * i, 0.6, 0.95, 0.55);
        e.weight_change[5] = 1e-3 * (i + 1);
        diag_epoch(&d, &e, collect, &t);
    }
    assert_null(find(&t, "LR_TOO_LOW"));
    diag_free(&d);

    /* overfitting: train 0.95 against val 0.6 and val loss up twice */
    double vl[3] = {0.8, 0.9, 1.1};
    for (int pretrained = 0; pretrained < 2; pretrained++) {
        Sink o = {0};
        start(&d, 3, pretrained, 15);
        for (int i = 0; i < 3; i++) {
            EpochSummary e = epoch(i, 0, i, 0.5 - 0.1 * i, 0.95, vl[i], 0.6);
            diag_epoch(&d, &e, collect, &o);
        }
        f = find(&o, "OVERFITTING");
        assert_non_null(f);
        assert_int_equal(f->epoch, 2);
        assert_true(fabs(ev(f, "best_val_loss") - 0.8) < 1e-9);
        assert_true(fabs(ev(f, "previous_train_acc") - 0.95) < 1e-9);
        diag_free(&d);
    }
    /* the same val losses with train accuracy far above val only in the last epoch:
     * one epoch is not yet overfitting */
    Sink once = {0};
    start(&d, 3, 1, 15);
    double ta[3] = {0.6, 0.7, 0.95};
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, 0.5 - 0.1 * i, ta[i], vl[i], 0.6);
        diag_epoch(&d, &e, collect, &once);
    }
    assert_null(find(&once, "OVERFITTING"));
    diag_free(&d);
    /* from random weights, epochs of one step: the first 30 steps are the start
     * (BN's running statistics still catching up), so the symptom waits for
     * epochs 29 and 30 */
    Sink early = {0};
    start(&d, 3, 0, 1);
    for (int i = 0; i < 31; i++) {
        EpochSummary e = epoch(i, 0, i, 0.5, 0.95, 0.8 + 0.01 * i, 0.6);
        diag_epoch(&d, &e, collect, &early);
        assert_int_equal(find(&early, "OVERFITTING") != NULL, i >= 30);
    }
    diag_free(&d);
}

static void test_no_learning(void **state)
{
    (void)state;
    const double logk = log(3.0);
    Diagnosis d;
    /* 3 epochs of 15 steps at log(3) */
    Sink n = {0};
    start(&d, 3, 1, 15);
    for (int i = 0; i < 3; i++) {
        EpochSummary e = epoch(i, 0, i, logk + 0.01 * i, 0.33, logk, 0.33);
        e.weight_change[5] = 0.1 * (i + 1);
        diag_epoch(&d, &e, collect, &n);
    }
    const Finding *f = find(&n, "NO_LEARNING");
    assert_non_null(f);
    assert_int_equal(f->severity, DIAG_ERROR);
    assert_int_equal(f->epoch, 2);
    assert_true(fabs(ev(f, "log_classes") - logk) < 1e-5);
    assert_int_equal((int)ev(f, "classes"), 3);
    assert_int_equal((int)ev(f, "epochs"), 3);
    assert_int_equal((int)ev(f, "steps"), 45);
    diag_free(&d);
    /* two epochs at log(3), one that learned, two more at log(3): the run of
     * stuck epochs starts again */
    Sink broken = {0};
    start(&d, 3, 1, 15);
    double tl[5] = {logk, logk, 0.8, logk, logk};
    for (int i = 0; i < 5; i++) {
        EpochSummary e = epoch(i, 0, i, tl[i], 0.33, logk, 0.33);
        e.weight_change[5] = 0.1 * (i + 1);
        diag_epoch(&d, &e, collect, &broken);
    }
    assert_null(find(&broken, "NO_LEARNING"));
    diag_free(&d);
    /* epochs of one step: the first epochs of a run that learns sit at log(3)
     * too, so the loss has to stay there for 30 steps */
    Sink one = {0};
    start(&d, 3, 0, 1);
    for (int i = 0; i < 30; i++) {
        EpochSummary e = epoch(i, 0, i, logk * (1 + 0.01 * (i % 3)), 0.33, logk, 0.33);
        e.weight_change[5] = 0.1 * (i + 1);
        diag_epoch(&d, &e, collect, &one);
        assert_int_equal(find(&one, "NO_LEARNING") != NULL, i >= 29);
    }
    f = find(&one, "NO_LEARNING");
    assert_int_equal(f->epoch, 29);
    assert_int_equal((int)ev(f, "steps"), 30);
    assert_int_equal((int)ev(f, "epochs"), 30);
    diag_free(&d);
}

static void test_imbalance_rules(void **state)
{
    (void)state;
    Diagnosis d;
    EpochSummary e = epoch(0, 0, 0, 0.4, 0.9, 0.35, 0.9);
    e.majority_share = 0.9;
    e.top_pred_class = 0;
    e.top_pred_share = 1.0;
    e.top_pred_support_share = 0.9; /* predicting the majority everywhere */
    e.val_balanced_acc = 0.5;
    /* one epoch of it is the transient of a new model learning the class
     * frequencies first; the next epoch the same is not */
    Sink s = {0};
    start(&d, 2, 1, 15);
    assert_int_equal(diag_epoch(&d, &e, collect, &s), 0);
    e.epoch = e.phase_epoch = 1;
    e.val_acc = 0.91;
    diag_epoch(&d, &e, collect, &s);
    const Finding *f = find(&s, "ACCURACY_IS_MAJORITY");
    assert_non_null(f);
    assert_int_equal(f->epoch, 1);
    assert_true(fabs(ev(f, "previous_val_acc") - 0.9) < 1e-9);
    assert_contains(f->fix, "Use \"class_weight\": \"balanced\"", 1);
    f = find(&s, "BALANCED_GAP");
    assert_non_null(f);
    assert_true(fabs(ev(f, "previous_balanced_acc") - 0.5) < 1e-9);
    assert_null(find(&s, "PREDICTIONS_COLLAPSE")); /* the class is 90% of labels */
    diag_free(&d);
    /* the same with the classes weighted already: the fix does not ask for it */
    Sink w = {0};
    diag_init(&d, &(DiagJob){.n_classes = 2, .class_weighting = 1, .imbalance = 9.0,
                             .pretrained = 1, .steps_per_epoch = 15});
    e.epoch = e.phase_epoch = 0;
    diag_epoch(&d, &e, collect, &w);
    e.epoch = e.phase_epoch = 1;
    diag_epoch(&d, &e, collect, &w);
    f = find(&w, "ACCURACY_IS_MAJORITY");
    assert_non_null(f);
    assert_contains(f->fix, "already weighted", 1);
    assert_contains(f->fix, "Use \"class_weight\"", 0);
    diag_free(&d);
    /* a single epoch of balanced accuracy far below accuracy: not raised */
    Sink g = {0};
    start(&d, 3, 1, 15);
    for (int i = 0; i < 4; i++) {
        EpochSummary x = epoch(i, 0, i, 0.6, 0.8, 0.6, 0.75);
        x.val_balanced_acc = i == 2 ? 0.5 : 0.72;
        diag_epoch(&d, &x, collect, &g);
    }
    assert_null(find(&g, "BALANCED_GAP"));
    diag_free(&d);
}

/* An epoch whose val predictions are `share` class `cls` (a third of the labels). */
static EpochSummary collapsed(int e, int cls, double share)
{
    EpochSummary x = epoch(e, 0, e, 1.0, 0.4, 1.0, 0.34);
    x.top_pred_class = cls;
    x.top_pred_share = share;
    x.top_pred_support_share = 0.33;
    return x;
}

static void test_predictions_collapse(void **state)
{
    (void)state;
    Diagnosis d;
    /* issue 12's run: from random weights, 15 steps an epoch, predictions on one
     * class in epochs 1 and 2, spread by epoch 3: the start, not a finding */
    Sink t = {0};
    start(&d, 3, 0, 15);
    for (int i = 0; i < 6; i++) {
        EpochSummary x = collapsed(i, 2, i < 2 ? 0.95 : 0.4);
        diag_epoch(&d, &x, collect, &t);
    }
    assert_null(find(&t, "PREDICTIONS_COLLAPSE"));
    diag_free(&d);
    /* the same collapse persisting: raised once epochs 2 and 3 (both past 30
     * steps) show it, and the class may change between them */
    Sink p = {0};
    start(&d, 3, 0, 15);
    for (int i = 0; i < 4; i++) {
        EpochSummary x = collapsed(i, i == 2 ? 0 : 2, 0.95);
        diag_epoch(&d, &x, collect, &p);
        assert_int_equal(find(&p, "PREDICTIONS_COLLAPSE") != NULL, i >= 2);
    }
    const Finding *f = find(&p, "PREDICTIONS_COLLAPSE");
    assert_int_equal(f->epoch, 2);
    assert_int_equal((int)ev(f, "class"), 0);
    assert_int_equal((int)ev(f, "previous_class"), 2);
    assert_true(fabs(ev(f, "prediction_share") - 0.95) < 1e-9);
    diag_free(&d);
    /* one collapsed epoch in the middle of a run: not raised */
    Sink mid = {0};
    start(&d, 3, 1, 15);
    for (int i = 0; i < 6; i++) {
        EpochSummary x = collapsed(i, 1, i == 3 ? 0.9 : 0.5);
        diag_epoch(&d, &x, collect, &mid);
    }
    assert_null(find(&mid, "PREDICTIONS_COLLAPSE"));
    diag_free(&d);
    /* epochs of one step: the start is 10 steps when fine-tuning, 30 from random
     * weights; the first epoch ending past it and the next must both collapse */
    for (int pretrained = 0; pretrained < 2; pretrained++) {
        const int first = pretrained ? 10 : 30;
        Sink one = {0};
        start(&d, 3, pretrained, 1);
        for (int i = 0; i <= first; i++) {
            EpochSummary x = collapsed(i, 1, 0.9);
            diag_epoch(&d, &x, collect, &one);
            assert_int_equal(find(&one, "PREDICTIONS_COLLAPSE") != NULL, i >= first);
        }
        diag_free(&d);
    }
}

/* An epoch of phase `phase` whose fixed batch scores `train` and `infer`. */
static EpochSummary bn_epoch(int e, int phase, int pe, double train, double infer)
{
    EpochSummary x = epoch(e, phase, pe, 0.5, 0.8, 0.6, 0.75);
    x.bn_train_loss = train;
    x.bn_infer_loss = infer;
    return x;
}

static void test_bn_gap(void **state)
{
    (void)state;
    Diagnosis d;
    /* within max(0.2, half the train-mode loss), however long: fine */
    Sink s = {0};
    start(&d, 3, 0, 15);
    for (int i = 0; i < 6; i++) {
        EpochSummary x = bn_epoch(i, 0, i, 0.5, 0.6);
        diag_epoch(&d, &x, collect, &s);
    }
    assert_null(find(&s, "BN_TRAIN_INFER_GAP"));
    diag_free(&d);
    /* issue 12's run: a gap in the phase's epochs 1 and 2 (15 and 30 steps), gone by
     * epoch 3: the running statistics catching up, not a finding */
    Sink t = {0};
    start(&d, 3, 0, 15);
    for (int i = 0; i < 5; i++) {
        EpochSummary x = bn_epoch(i, 0, i, 0.5, i < 2 ? 2.5 : 0.6);
        diag_epoch(&d, &x, collect, &t);
    }
    assert_null(find(&t, "BN_TRAIN_INFER_GAP"));
    diag_free(&d);
    /* persisting: raised at the phase's third epoch (epochs ending at 30 and 45
     * steps both show it) */
    Sink p = {0};
    start(&d, 3, 0, 15);
    for (int i = 0; i < 4; i++) {
        EpochSummary x = bn_epoch(i, 0, i, 0.5, 2.5);
        diag_epoch(&d, &x, collect, &p);
        assert_int_equal(find(&p, "BN_TRAIN_INFER_GAP") != NULL, i >= 2);
    }
    const Finding *f = find(&p, "BN_TRAIN_INFER_GAP");
    assert_int_equal(f->epoch, 2);
    assert_true(fabs(ev(f, "inference_mode_loss") - 2.5) < 1e-9);
    assert_true(fabs(ev(f, "previous_inference_mode_loss") - 2.5) < 1e-9);
    assert_int_equal((int)ev(f, "phase_steps"), 45);
    diag_free(&d);
    /* the wait restarts with each phase, and two epochs on either side of a phase
     * boundary are not two epochs of one phase (40 steps an epoch: every epoch is
     * past 30 steps) */
    Sink b = {0};
    start(&d, 3, 1, 40);
    EpochSummary h[4] = {bn_epoch(0, 0, 0, 0.5, 0.6), bn_epoch(1, 0, 1, 0.5, 2.5),
                         bn_epoch(2, 1, 0, 0.5, 2.5), bn_epoch(3, 1, 1, 0.5, 2.5)};
    for (int i = 0; i < 4; i++) {
        diag_epoch(&d, &h[i], collect, &b);
        assert_int_equal(find(&b, "BN_TRAIN_INFER_GAP") != NULL, i >= 3);
    }
    diag_free(&d);
}

static void test_phase_rules(void **state)
{
    (void)state;
    Diagnosis d;
    Sink p = {0};
    start(&d, 3, 1, 15);
    assert_int_equal(diag_phase(&d, 1, "unfreeze", 9, 0, 8, 4, collect, &p), 1);
    assert_string_equal(p.f[0].code, "BN_SMALL_BATCH");
    assert_int_equal(p.f[0].epoch, 4);
    assert_int_equal((int)ev(&p.f[0], "batch_size"), 8);
    assert_contains(p.f[0].fix, "Keep BN of the pretrained layers frozen", 1);
    /* once per job */
    assert_int_equal(diag_phase(&d, 2, "more", 9, 0, 8, 6, collect, &p), 0);
    diag_free(&d);
    start(&d, 3, 1, 15);
    assert_int_equal(diag_phase(&d, 1, "unfreeze", 9, 0, 16, 4, collect, &p), 0);
    assert_int_equal(diag_phase(&d, 1, "unfreeze", 0, 0, 2, 4, collect, &p), 0);
    diag_free(&d);
    Sink r = {0};
    start(&d, 3, 0, 15);
    assert_int_equal(diag_phase(&d, 0, "scratch", 53, 0, 8, 0, collect, &r), 1);
    assert_contains(r.f[0].fix, "has to run in train mode", 1);
    assert_contains(r.f[0].fix, "pretrained", 0);
    diag_free(&d);

    /* BN explicitly frozen in layers that were not loaded: the whole random
     * backbone of a from-scratch job, or a new head's hidden layer */
    for (int pretrained = 0; pretrained < 2; pretrained++) {
        Sink z = {0};
        start(&d, 3, pretrained, 15);
        int layers = pretrained ? 1 : 53;
        assert_int_equal(diag_phase(&d, 0, "first", 0, layers, 32, 0, collect, &z), 1);
        const Finding *f = find(&z, "BN_FROZEN_RANDOM");
        assert_non_null(f);
        assert_int_equal(f->severity, DIAG_WARNING);
        assert_int_equal(f->epoch, 0);
        assert_int_equal((int)ev(f, "bn_frozen_random_layers"), layers);
        assert_int_equal((int)ev(f, "phase"), 0);
        assert_contains(f->fix, "Drop \"bn\": \"frozen\"", 1);
        assert_contains(f->fix, "from random weights BN has to learn", !pretrained);
        assert_contains(f->fix, "keeps BN of the pretrained layers", pretrained);
        /* once per job; and none for a count of 0 */
        assert_int_equal(diag_phase(&d, 1, "second", 0, layers, 32, 3, collect, &z), 0);
        diag_free(&d);
        Sink none = {0};
        start(&d, 3, pretrained, 15);
        assert_int_equal(diag_phase(&d, 0, "first", 0, 0, 32, 0, collect, &none), 0);
        assert_int_equal(diag_phase(&d, 0, "first", 53, 0, 32, 0, collect, &none), 0);
        assert_null(find(&none, "BN_FROZEN_RANDOM"));
        diag_free(&d);
    }
}

/* Histories of 15-step epochs on which one rule fires, from random weights and
 * when fine-tuning alike. */
static int hist_diverged(EpochSummary *h)
{
    h[0] = epoch(0, 0, 0, NAN, 0.3, NAN, 0.3);
    return 1;
}

static int hist_too_low(EpochSummary *h)
{
    for (int i = 0; i < 3; i++) {
        h[i] = epoch(i, 0, i, 0.9 - 0.001 * i, 0.6, 0.95, 0.55);
        h[i].weight_change[5] = 1e-5 * (i + 1);
    }
    return 3;
}

static int hist_overfit(EpochSummary *h)
{
    for (int i = 0; i < 4; i++)
        h[i] = epoch(i, 0, i, 0.5 - 0.1 * i, 0.95, 0.8 + 0.1 * i, 0.6);
    return 4;
}

static int hist_no_learning(EpochSummary *h)
{
    for (int i = 0; i < 3; i++) {
        h[i] = epoch(i, 0, i, log(3.0) + 0.01 * i, 0.33, log(3.0), 0.33);
        h[i].weight_change[5] = 0.1 * (i + 1);
    }
    return 3;
}

static int hist_majority(EpochSummary *h)
{
    for (int i = 0; i < 4; i++) {
        h[i] = epoch(i, 0, i, 0.8, 0.6, 0.9, 0.6);
        h[i].majority_share = 0.6;
    }
    return 4;
}

static int hist_collapse(EpochSummary *h)
{
    for (int i = 0; i < 4; i++)
        h[i] = collapsed(i, 2, 0.95);
    return 4;
}

static int hist_balanced_gap(EpochSummary *h)
{
    for (int i = 0; i < 4; i++) {
        h[i] = epoch(i, 0, i, 0.6, 0.8, 0.6, 0.75);
        h[i].val_balanced_acc = 0.5;
    }
    return 4;
}

static int hist_bn_gap(EpochSummary *h)
{
    for (int i = 0; i < 4; i++)
        h[i] = bn_epoch(i, 0, i, 0.5, 2.5);
    return 4;
}

static void test_fixes_follow_situation(void **state)
{
    (void)state;
    static const struct {
        const char *code;
        int (*history)(EpochSummary *h);
        const char *scratch, *finetune; /* in that situation's fix only */
    } cases[] = {
        {"LR_DIVERGED", hist_diverged, "with BN in train mode", "unfrozen pretrained layers"},
        {"LR_TOO_LOW", hist_too_low, "from random weights", "unfrozen pretrained layers"},
        {"OVERFITTING", hist_overfit, "start from pretrained weights",
         "Train fewer pretrained layers"},
        {"NO_LEARNING", hist_no_learning, "BN of the random layers trains",
         "preprocessing is the weights' own"},
        {"ACCURACY_IS_MAJORITY", hist_majority, "start from pretrained weights",
         "unfreeze the last stage"},
        {"PREDICTIONS_COLLAPSE", hist_collapse, "steady BN's statistics",
         "Lower the head's learning rate"},
        {"BALANCED_GAP", hist_balanced_gap, "start from pretrained weights",
         "a head on pretrained features"},
        {"BN_TRAIN_INFER_GAP", hist_bn_gap, "do not freeze it",
         "Keep BN of the pretrained layers frozen"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int pretrained = 0; pretrained < 2; pretrained++) {
            Diagnosis d;
            Sink s = {0};
            EpochSummary h[8];
            start(&d, 3, pretrained, 15);
            feed(&d, h, cases[c].history(h), &s);
            const Finding *f = find(&s, cases[c].code);
            if (!f)
                fail_msg("%s not raised (pretrained %d)", cases[c].code, pretrained);
            assert_contains(f->fix, cases[c].scratch, !pretrained);
            assert_contains(f->fix, cases[c].finetune, pretrained);
            diag_free(&d);
        }
}

/* A healthy fine-tune (head, then stage:5 at a low rate): a new head's first
 * epoch that predicts mostly one class is the only oddity, and nothing is raised. */
static void test_healthy_finetune_is_quiet(void **state)
{
    (void)state;
    Diagnosis d;
    Sink s = {0};
    start(&d, 3, 1, 15);
    assert_int_equal(diag_phase(&d, 0, "head", 0, 0, 8, 0, collect, &s), 0);
    double tl[5] = {0.95, 0.7, 0.6, 0.5, 0.45}, vl[5] = {0.85, 0.7, 0.62, 0.58, 0.55};
    double ta[5] = {0.6, 0.72, 0.78, 0.82, 0.84}, va[5] = {0.55, 0.7, 0.75, 0.78, 0.8};
    for (int i = 0; i < 5; i++) {
        const int phase = i < 3 ? 0 : 1;
        if (i == 3)
            assert_int_equal(diag_phase(&d, 1, "stage5", 0, 0, 8, 3, collect, &s), 0);
        EpochSummary e = epoch(i, phase, phase ? i - 3 : i, tl[i], ta[i], vl[i], va[i]);
        e.weight_change[5] = 0.3 + 0.1 * i;
        if (phase) {
            e.trainable[4] = 1;
            e.weight_change[4] = 0.0007 * (i - 2);
        }
        if (i == 0) {
            e.top_pred_class = 1;
            e.top_pred_share = 0.85;
        }
        assert_int_equal(diag_epoch(&d, &e, collect, &s), 0);
    }
    assert_int_equal(s.n, 0);
    diag_free(&d);
}

/* A 3-class dataset with the given report numbers. */
static void fake_dataset(Dataset *ds, ClassCounts *counts, char **names, int dup,
                         double train_mean, double val_mean, double sd, double image_sd)
{
    memset(ds, 0, sizeof *ds);
    ds->n_classes = 3;
    ds->classes = names;
    ds->counts = counts;
    ds->report.total[SPLIT_TRAIN] = counts[0].count[0] + counts[1].count[0] + counts[2].count[0];
    ds->report.total[SPLIT_VAL] = counts[0].count[1] + counts[1].count[1] + counts[2].count[1];
    int lo = counts[0].count[0], hi = lo;
    for (int c = 1; c < 3; c++) {
        if (counts[c].count[0] < lo) lo = counts[c].count[0];
        if (counts[c].count[0] > hi) hi = counts[c].count[0];
    }
    ds->report.imbalance[SPLIT_TRAIN] = (double)hi / lo;
    ds->report.n_cross_duplicates = dup;
    for (int c = 0; c < 3; c++) {
        ds->report.mean[SPLIT_TRAIN][c] = train_mean;
        ds->report.mean[SPLIT_VAL][c] = val_mean;
        ds->report.std[SPLIT_TRAIN][c] = ds->report.std[SPLIT_VAL][c] = sd;
        ds->report.image_mean_std[SPLIT_TRAIN][c] = ds->report.image_mean_std[SPLIT_VAL][c] =
            image_sd;
    }
    ds->report.side_median[SPLIT_TRAIN] = ds->report.side_median[SPLIT_VAL] = 40;
    ds->report.width_median = ds->report.height_median = 40;
}

static void test_dataset_rules(void **state)
{
    (void)state;
    char *names[3] = {"a", "b", "c"};
    ClassCounts even[3] = {{{40, 10}}, {{40, 10}}, {{40, 10}}};
    ClassCounts skew[3] = {{{120, 30}}, {{40, 10}}, {{10, 3}}};
    Dataset ds;
    Sink s = {0};
    fake_dataset(&ds, even, names, 0, 100, 101, 60, 20);
    assert_int_equal(diag_dataset(&ds, collect, &s), 0);
    fake_dataset(&ds, skew, names, 2, 100, 120, 60, 20); /* 20 levels: 5.9 standard errors */
    diag_dataset(&ds, collect, &s);
    const Finding *f = find(&s, "DATA_LEAKAGE");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "duplicates"), 2);
    f = find(&s, "DATA_IMBALANCE");
    assert_non_null(f);
    assert_true(fabs(ev(f, "imbalance") - 12.0) < 1e-9);
    assert_int_equal((int)ev(f, "smallest"), 10);
    f = find(&s, "DATA_SPLIT_MISMATCH");
    assert_non_null(f);
    assert_true(fabs(ev(f, "val_mean") - 120) < 1e-9);
    assert_true(fabs(ev(f, "standard_errors") - 20 / sqrt(400.0 / 170 + 400.0 / 43)) < 1e-3);
    assert_true(ev(f, "standard_errors") > 4.0);
    /* 40 levels apart with images whose own means spread by 60 is 3.9 standard
     * errors: within sampling */
    Sink w = {0};
    fake_dataset(&ds, skew, names, 0, 100, 140, 60, 60);
    diag_dataset(&ds, collect, &w);
    assert_null(find(&w, "DATA_SPLIT_MISMATCH"));
    /* nearly black, as images saved after dividing by 255 are */
    Sink k = {0};
    fake_dataset(&ds, even, names, 0, 0.5, 0.5, 0.3, 0.1);
    diag_dataset(&ds, collect, &k);
    f = find(&k, "DATA_DARK_OR_SCALED");
    assert_non_null(f);
    assert_true(ev(f, "pixel_mean") < 1);
    assert_null(find(&k, "DATA_SPLIT_FORMAT"));
    /* colour train, grayscale val; then same colour but 32 against 64 pixels */
    Sink g = {0};
    fake_dataset(&ds, even, names, 0, 100, 100, 60, 20);
    ds.report.gray[SPLIT_VAL] = ds.report.total[SPLIT_VAL];
    diag_dataset(&ds, collect, &g);
    f = find(&g, "DATA_SPLIT_FORMAT");
    assert_non_null(f);
    assert_true(fabs(ev(f, "val_gray_share") - 1.0) < 1e-9);
    assert_true(fabs(ev(f, "train_gray_share")) < 1e-9);
    Sink z = {0};
    fake_dataset(&ds, even, names, 0, 100, 100, 60, 20);
    ds.report.side_median[SPLIT_TRAIN] = 32;
    ds.report.side_median[SPLIT_VAL] = 64;
    diag_dataset(&ds, collect, &z);
    f = find(&z, "DATA_SPLIT_FORMAT");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "val_side_median"), 64);
    Sink same = {0};
    ds.report.side_median[SPLIT_VAL] = 44; /* 1.375x: within */
    diag_dataset(&ds, collect, &same);
    assert_null(find(&same, "DATA_SPLIT_FORMAT"));
}

static void test_preflight_rules(void **state)
{
    (void)state;
    char *names[3] = {"a", "b", "c"};
    ClassCounts even[3] = {{{40, 10}}, {{40, 10}}, {{40, 10}}};
    Dataset ds;
    fake_dataset(&ds, even, names, 0, 100, 100, 60, 20);
    Preprocess p;
    memset(&p, 0, sizeof p);
    p.size = 64;
    Error err;
    assert_int_equal(preprocess_norm_from_name(&p.norm, "caffe", &err), 0);
    /* caffe inputs of 0..1 pixels: a width of about 1 instead of 255 */
    InputStats st;
    input_stats_reset(&st);
    float px[6] = {-103.9f, -116.8f, -123.7f, -102.9f, -115.8f, -122.7f};
    input_stats_add(&st, px, 2);
    PreflightInput in;
    memset(&in, 0, sizeof in);
    in.ds = &ds;
    in.p = &p;
    in.declared = "caffe";
    in.inputs = &st;
    in.batch_size = 32;
    in.head_top_share = -1;
    in.overfit_accuracy = -1;
    Sink s = {0};
    diag_preflight(&in, collect, &s);
    const Finding *f = find(&s, "PREPROC_DOUBLE_SCALE");
    assert_non_null(f);
    assert_int_equal(f->severity, DIAG_ERROR);
    assert_int_equal(f->epoch, -1);
    assert_true(fabs(ev(f, "observed_width") - 1.0) < 1e-3);
    assert_true(fabs(ev(f, "expected_width") - 255.0) < 1e-3);
    assert_null(find(&s, "PREPROC_MISMATCH"));
    /* properly scaled caffe inputs span ~255: nothing */
    Sink ok = {0};
    float good[6] = {-103.9f, -116.8f, -123.7f, 151.1f, 138.2f, 131.3f};
    input_stats_reset(&st);
    input_stats_add(&st, good, 2);
    diag_preflight(&in, collect, &ok);
    assert_int_equal(ok.n, 0);
    /* a forced mode, a collapsed head, a failed overfit check, tiny inputs */
    Sink m = {0};
    in.declared = "torch";
    in.overridden = 1;
    in.head_top_share = 0.95;
    in.head_top_class = 7;
    in.head_classes = 1000;
    in.head_sample = 32;
    in.head_batch_majority = 0.34;
    in.overfit_accuracy = 0.34;
    in.overfit_steps = 50;
    in.overfit_batch = 32;
    p.size = 32;
    diag_preflight(&in, collect, &m);
    assert_non_null(find(&m, "PREPROC_MISMATCH"));
    f = find(&m, "HEAD_COLLAPSE");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "top_class"), 7);
    f = find(&m, "OVERFIT_BATCH_FAILED");
    assert_non_null(f);
    assert_true(fabs(ev(f, "accuracy") - 0.34) < 1e-9);
    assert_non_null(find(&m, "RESOLUTION_1X1"));
    assert_null(find(&m, "RESOLUTION_UPSCALED")); /* 40 native for 32 input */
    /* a batch that is 90% one class may land in one original class: no collapse */
    Sink one = {0};
    in.head_batch_majority = 0.9;
    diag_preflight(&in, collect, &one);
    assert_null(find(&one, "HEAD_COLLAPSE"));
    /* custom mode: rescale 1/255 in front of caffe's means expects 0..255 pixels
     * (means of ~100), so inputs one wide are double scaled */
    Sink cu = {0};
    in.overridden = 0;
    in.head_top_share = -1;
    in.overfit_accuracy = -1;
    p.norm.mode = NORM_CUSTOM;
    p.norm.rescale = 1.0f / 255;
    input_stats_reset(&st);
    input_stats_add(&st, px, 2);
    diag_preflight(&in, collect, &cu);
    f = find(&cu, "PREPROC_DOUBLE_SCALE");
    assert_non_null(f);
    assert_true(ev(f, "expected_width") > 200);
    /* constant inputs (all-black images) are not double scaling */
    Sink flat = {0};
    float black[6] = {-103.9f, -116.8f, -123.7f, -103.9f, -116.8f, -123.7f};
    input_stats_reset(&st);
    input_stats_add(&st, black, 2);
    diag_preflight(&in, collect, &flat);
    assert_null(find(&flat, "PREPROC_DOUBLE_SCALE"));
    p.norm.mode = NORM_CAFFE;
    p.norm.rescale = 1.0f;
    /* 20-pixel images fed at 64: upscaled 3.2x */
    Sink u = {0};
    ds.report.width_median = ds.report.height_median = 20;
    p.size = 64;
    in.overridden = 0;
    in.head_top_share = -1;
    in.overfit_accuracy = -1;
    diag_preflight(&in, collect, &u);
    f = find(&u, "RESOLUTION_UPSCALED");
    assert_non_null(f);
    assert_int_equal((int)ev(f, "input_size"), 64);
    assert_null(find(&u, "RESOLUTION_1X1"));
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_divergence),
        cmocka_unit_test(test_unfreeze_destroys),
        cmocka_unit_test(test_too_low_and_overfitting),
        cmocka_unit_test(test_no_learning),
        cmocka_unit_test(test_imbalance_rules),
        cmocka_unit_test(test_predictions_collapse),
        cmocka_unit_test(test_bn_gap),
        cmocka_unit_test(test_phase_rules),
        cmocka_unit_test(test_fixes_follow_situation),
        cmocka_unit_test(test_healthy_finetune_is_quiet),
        cmocka_unit_test(test_dataset_rules),
        cmocka_unit_test(test_preflight_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
