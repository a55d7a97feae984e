/*
 * test_schedule.c: core/schedule.c against torch.optim.lr_scheduler
 * (tests/reference/make_schedule_reference.py writes schedule_reference.json),
 * and edge cases worked by hand: one-epoch phases, warmup covering all but the
 * last epoch, the plateau min_lr floor, step with gamma 1, cosine end points,
 * NaN losses, and a checkpoint copy of the state resuming exactly.
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "schedule.h"

#define TOL 1e-6

/* |got - want| <= TOL * |want| */
static void assert_lr(float got, double want, const char *what, int epoch)
{
    if (!(fabs((double)got - want) <= TOL * fabs(want)))
        fail_msg("%s epoch %d: got %.9g want %.17g", what, epoch, (double)got, want);
}

static double get_number(json_t *obj, const char *key, const char *name)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        fail_msg("%s: %s is not a number", name, key);
    return json_number_value(v);
}

static LrSchedule make_cfg(LrScheduleType type, int warmup, int step_epochs, float gamma,
                           float min_lr, float factor, int patience)
{
    LrSchedule c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.warmup_epochs = warmup;
    c.step_epochs = step_epochs;
    c.gamma = gamma;
    c.min_lr = min_lr;
    c.factor = factor;
    c.patience = patience;
    return c;
}

static void test_vs_torch_reference(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file(testutil_ref_path("schedule_reference.json"), 0, &jerr);
    if (!root)
        fail_msg("schedule_reference.json: %s (run tests/reference/make_schedule_reference.py)",
                 jerr.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_is_array(cases) && json_array_size(cases) >= 10);
    static const char *const types[] = {"constant", "step", "cosine", "plateau"};
    int seen[4] = {0}, compared = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *type = json_string_value(json_object_get(cs, "type"));
        assert_non_null(name);
        assert_non_null(type);
        int t = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(type, types[k]) == 0)
                t = k;
        if (t < 0)
            fail_msg("%s: unknown type %s", name, type);
        seen[t]++;
        int epochs = (int)get_number(cs, "epochs", name);
        LrSchedule cfg = make_cfg((LrScheduleType)t, (int)get_number(cs, "warmup_epochs", name),
                                  (int)get_number(cs, "step_epochs", name),
                                  (float)get_number(cs, "gamma", name),
                                  (float)get_number(cs, "min_lr", name),
                                  (float)get_number(cs, "factor", name),
                                  (int)get_number(cs, "patience", name));
        float base_lr = (float)get_number(cs, "base_lr", name);
        json_t *lr = json_object_get(cs, "lr");
        json_t *loss = json_object_get(cs, "val_loss");
        assert_true(epochs >= 1 && json_array_size(lr) == (size_t)epochs &&
                    json_array_size(loss) == (size_t)epochs);

        LrScheduler s;
        schedule_init(&s, &cfg, base_lr, epochs);
        /* constant, step and cosine depend on the epoch alone: ask before any
         * epoch has ended, and in reverse order */
        if (cfg.type != LR_PLATEAU)
            for (int e = epochs - 1; e >= 0; e--)
                assert_lr(schedule_lr(&s, e), json_number_value(json_array_get(lr, (size_t)e)),
                          name, e);
        for (int e = 0; e < epochs; e++) {
            assert_lr(schedule_lr(&s, e), json_number_value(json_array_get(lr, (size_t)e)),
                      name, e);
            compared++;
            schedule_epoch_end(&s, json_number_value(json_array_get(loss, (size_t)e)));
        }
        assert_int_equal(s.epochs_done, epochs);
    }
    for (int k = 0; k < 4; k++)
        if (seen[k] < 2)
            fail_msg("reference has %d %s cases, want >= 2", seen[k], types[k]);
    printf("# %zu cases, %d epochs compared to torch\n", json_array_size(cases), compared);
    json_decref(root);
}

/* epochs = 1: every type gives base_lr for its only epoch. */
static void test_one_epoch(void **state)
{
    (void)state;
    for (int t = LR_CONSTANT; t <= LR_PLATEAU; t++) {
        LrSchedule cfg = make_cfg((LrScheduleType)t, 0, 1, 0.1f, 1e-3f, 0.5f, 1);
        LrScheduler s;
        schedule_init(&s, &cfg, 0.25f, 1);
        assert_true(schedule_lr(&s, 0) == 0.25f);
        schedule_epoch_end(&s, 1.0);
        assert_int_equal(s.epochs_done, 1);
    }
}

/* warmup_epochs = epochs - 1 = 4, base 0.1: 0.01, 0.0325, 0.055, 0.0775, then
 * the schedule's first value, base_lr, for every type. The plateau run reports
 * rising losses during warmup, which it must not see. */
static void test_warmup_only(void **state)
{
    (void)state;
    static const double want[5] = {0.01, 0.0325, 0.055, 0.0775, 0.1};
    for (int t = LR_CONSTANT; t <= LR_PLATEAU; t++) {
        LrSchedule cfg = make_cfg((LrScheduleType)t, 4, 1, 0.5f, 1e-3f, 0.5f, 1);
        LrScheduler s;
        schedule_init(&s, &cfg, 0.1f, 5);
        for (int e = 0; e < 5; e++) {
            assert_lr(schedule_lr(&s, e), want[e], "warmup", e);
            schedule_epoch_end(&s, 1.0 + e);
        }
        if (t == LR_PLATEAU) {
            assert_int_equal(s.bad_epochs, 0);
            assert_true(s.best == 5.0);
        }
    }
}

/* Plateau, base 1, factor 0.1, patience 1, floor 0.05, the same loss every
 * epoch: epoch 0 improves on +inf, epochs 1-2 do not, so epoch 3 runs at 0.1;
 * two more bad epochs give max(0.01, 0.05) = 0.05 from epoch 5, which stays. */
static void test_plateau_min_lr_floor(void **state)
{
    (void)state;
    LrSchedule cfg = make_cfg(LR_PLATEAU, 0, 1, 0.1f, 0.05f, 0.1f, 1);
    LrScheduler s;
    schedule_init(&s, &cfg, 1.0f, 20);
    for (int e = 0; e < 20; e++) {
        double want = e < 3 ? 1.0 : e < 5 ? (double)0.1f : (double)0.05f;
        assert_lr(schedule_lr(&s, e), want, "plateau floor", e);
        schedule_epoch_end(&s, 2.0);
    }
    assert_true(schedule_lr(&s, 20) == 0.05f);
}

/* NaN never improves (torch's comparison is false), so it counts as a bad epoch;
 * a later finite loss still improves on the best finite one. */
static void test_plateau_nan(void **state)
{
    (void)state;
    LrSchedule cfg = make_cfg(LR_PLATEAU, 0, 1, 0.1f, 0, 0.5f, 2);
    LrScheduler s;
    schedule_init(&s, &cfg, 0.01f, 10);
    schedule_epoch_end(&s, 1.0);
    schedule_epoch_end(&s, NAN);
    schedule_epoch_end(&s, NAN);
    assert_int_equal(s.bad_epochs, 2);
    schedule_epoch_end(&s, 0.5);
    assert_int_equal(s.bad_epochs, 0);
    assert_true(s.best == 0.5);
    schedule_epoch_end(&s, NAN);
    schedule_epoch_end(&s, NAN);
    schedule_epoch_end(&s, NAN);
    assert_lr(schedule_lr(&s, 7), 0.005, "plateau nan", 7);
}

/* gamma 1: step never changes the lr, whatever step_epochs is. */
static void test_step_gamma1(void **state)
{
    (void)state;
    for (int step = 1; step <= 3; step++) {
        LrSchedule cfg = make_cfg(LR_STEP, 0, step, 1.0f, 0, 0.1f, 2);
        LrScheduler s;
        schedule_init(&s, &cfg, 0.03f, 50);
        for (int e = 0; e < 50; e++)
            assert_true(schedule_lr(&s, e) == 0.03f);
    }
}

/* Step by hand: base 0.8, step 2, gamma 0.5, after 1 warmup epoch. */
static void test_step_hand(void **state)
{
    (void)state;
    static const double want[8] = {0.08, 0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1};
    LrSchedule cfg = make_cfg(LR_STEP, 1, 2, 0.5f, 0, 0.1f, 2);
    LrScheduler s;
    schedule_init(&s, &cfg, 0.8f, 8);
    for (int e = 0; e < 8; e++)
        assert_lr(schedule_lr(&s, e), want[e], "step hand", e);
}

/* Cosine, T_max = 8: t = 0 is base, t = 4 the midpoint (base + min) / 2, and the
 * last epoch t = 7 is min + (base - min) (1 + cos(7 pi / 8)) / 2, above min_lr. */
static void test_cosine_points(void **state)
{
    (void)state;
    LrSchedule cfg = make_cfg(LR_COSINE, 2, 1, 0.1f, 0.001f, 0.1f, 2);
    LrScheduler s;
    schedule_init(&s, &cfg, 0.1f, 10);
    double base = 0.1f, lo = 0.001f;
    assert_lr(schedule_lr(&s, 2), base, "cosine start", 2);
    assert_lr(schedule_lr(&s, 6), (base + lo) / 2, "cosine mid", 6);
    assert_lr(schedule_lr(&s, 9), lo + (base - lo) * (1 + cos(7 * M_PI / 8)) / 2, "cosine end", 9);
    assert_true(schedule_lr(&s, 9) > 0.001f);
    for (int e = 3; e < 10; e++)
        assert_true(schedule_lr(&s, e) < schedule_lr(&s, e - 1));
}

/* A checkpoint copies the plain struct's bytes; the restored copy continues
 * exactly like the original. */
static void test_checkpoint_restore(void **state)
{
    (void)state;
    static const double losses[16] = {1, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.84,
                                      0.84, 0.84, 0.84, 0.8, 0.8, 0.8, 0.8, 0.8};
    LrSchedule cfg = make_cfg(LR_PLATEAU, 1, 1, 0.1f, 1e-4f, 0.5f, 1);
    LrScheduler s, restored;
    schedule_init(&s, &cfg, 0.01f, 16);
    unsigned char saved[sizeof s];
    for (int e = 0; e < 16; e++) {
        if (e == 6) {
            memcpy(saved, &s, sizeof s);
            memset(&restored, 0xAB, sizeof restored);
            memcpy(&restored, saved, sizeof restored);
        }
        if (e >= 6) {
            assert_true(schedule_lr(&restored, e) == schedule_lr(&s, e));
            schedule_epoch_end(&restored, losses[e]);
        }
        schedule_epoch_end(&s, losses[e]);
    }
    assert_true(restored.lr == s.lr && restored.best == s.best);
    assert_int_equal(restored.bad_epochs, s.bad_epochs);
    assert_int_equal(restored.epochs_done, s.epochs_done);
    assert_true(schedule_lr(&s, 16) < 0.01f);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_torch_reference),
        cmocka_unit_test(test_one_epoch),
        cmocka_unit_test(test_warmup_only),
        cmocka_unit_test(test_plateau_min_lr_floor),
        cmocka_unit_test(test_plateau_nan),
        cmocka_unit_test(test_step_gamma1),
        cmocka_unit_test(test_step_hand),
        cmocka_unit_test(test_cosine_points),
        cmocka_unit_test(test_checkpoint_restore),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
