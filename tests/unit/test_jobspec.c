/*
 * test_jobspec.c: the job specification parser: the DESIGN.md example, defaults,
 * and one bad input per rule, each reporting the JSON path of the field.
 */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "jobspec.h"

static const char *EXAMPLE =
    "{\"name\": \"flowers-ft\", \"dataset\": \"flowers\", \"weights\": \"resnet50-tv.safetensors\","
    " \"input_size\": 224, \"batch_size\": 32, \"seed\": 42, \"preprocess\": \"auto\","
    " \"augment\": {\"hflip\": true, \"random_resized_crop\": [0.5, 1.0]},"
    " \"head\": {\"hidden\": 1024, \"dropout\": 0.2}, \"class_weight\": \"balanced\","
    " \"phases\": ["
    "  {\"name\": \"head\", \"epochs\": 5, \"train\": \"head\","
    "   \"optimizer\": {\"type\": \"adam\", \"lr\": 1e-3}},"
    "  {\"name\": \"unfreeze\", \"epochs\": 10, \"train\": \"keras_last:50\", \"bn\": \"frozen\","
    "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 1e-4, \"momentum\": 0.9, \"weight_decay\": 1e-4},"
    "   \"lr_schedule\": {\"type\": \"cosine\", \"warmup_epochs\": 1}}"
    " ],"
    " \"early_stopping\": {\"monitor\": \"val_loss\", \"patience\": 3, \"restore_best\": true}}";

static void test_design_example(void **state)
{
    (void)state;
    JobSpec s;
    Error err;
    char path[JOBSPEC_PATH_MAX];
    if (jobspec_parse(&s, EXAMPLE, strlen(EXAMPLE), path, sizeof path, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(s.name, "flowers-ft");
    assert_string_equal(s.dataset, "flowers");
    assert_string_equal(s.weights, "resnet50-tv.safetensors");
    assert_int_equal(s.input_size, 224);
    assert_int_equal(s.batch_size, 32);
    assert_int_equal(s.seed, 42);
    assert_string_equal(s.preprocess, "auto");
    assert_int_equal(s.augment.hflip, 1);
    assert_true(s.augment.crop_min == 0.5f && s.augment.crop_max == 1.0f);
    assert_int_equal(s.head_hidden, 1024);
    assert_true(fabsf(s.head_dropout - 0.2f) < 1e-7f);
    assert_int_equal(s.class_weight, CLASS_WEIGHT_BALANCED);
    assert_int_equal(s.n_phases, 2);
    assert_string_equal(s.phases[0].train, "head");
    assert_int_equal(s.phases[0].optimizer.type, OPTIM_ADAM);
    assert_true(s.phases[0].optimizer.lr == 1e-3f);
    assert_true(s.phases[0].optimizer.beta2 == 0.999f);
    assert_int_equal(s.phases[0].lr_schedule.type, LR_CONSTANT);
    assert_string_equal(s.phases[1].train, "keras_last:50");
    assert_int_equal(s.phases[0].bn, BN_AUTO); /* no "bn": the default */
    assert_int_equal(s.phases[1].bn, BN_FROZEN);
    assert_int_equal(s.phases[1].optimizer.type, OPTIM_SGD);
    assert_true(s.phases[1].optimizer.momentum == 0.9f);
    assert_true(s.phases[1].optimizer.weight_decay == 1e-4f);
    assert_int_equal(s.phases[1].lr_schedule.type, LR_COSINE);
    assert_int_equal(s.phases[1].lr_schedule.warmup_epochs, 1);
    assert_int_equal(s.early_stopping, 1);
    assert_string_equal(s.es_monitor, "val_loss");
    assert_int_equal(s.es_patience, 3);
    assert_int_equal(jobspec_total_epochs(&s), 15);
    jobspec_free(&s);
}

static void test_defaults_and_custom(void **state)
{
    (void)state;
    const char *j = "{\"dataset\": \"/data/x\", \"weights\": \"random\","
                    " \"preprocess\": {\"mode\": \"custom\", \"rescale\": 0.00392,"
                    "  \"mean\": [0.5, 0.5, 0.5], \"std\": [0.25, 0.25, 0.25], \"channels\": \"bgr\"},"
                    " \"class_weight\": {\"cat\": 2, \"dog\": 0.5},"
                    " \"phases\": [{\"epochs\": 2, \"train\": \"all\", \"bn\": \"train\","
                    "   \"optimizer\": {\"type\": \"adamw\", \"lr\": 0.01, \"betas\": [0.8, 0.99]}}]}";
    JobSpec s;
    Error err;
    if (jobspec_parse(&s, j, strlen(j), NULL, 0, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(s.name, "job");
    assert_int_equal(s.input_size, 224);
    assert_int_equal(s.batch_size, 32);
    assert_int_equal(s.resize, RESIZE_SQUASH);
    assert_string_equal(s.preprocess, "custom");
    assert_int_equal(s.custom.mode, NORM_CUSTOM);
    assert_true(s.custom.rescale == 0.00392f && s.custom.bgr == 1 && s.custom.std[2] == 0.25f);
    assert_int_equal(s.class_weight, CLASS_WEIGHT_MAP);
    assert_int_equal(s.n_class_weights, 2);
    assert_string_equal(s.class_weight_names[0], "cat");
    assert_true(s.class_weight_values[1] == 0.5f);
    assert_string_equal(s.phases[0].name, "phase1");
    assert_int_equal(s.phases[0].bn, BN_TRAIN);
    assert_true(s.phases[0].optimizer.weight_decay == 0.01f); /* AdamW default */
    assert_true(s.phases[0].optimizer.beta1 == 0.8f);
    assert_int_equal(s.early_stopping, 0);
    assert_true(fabs(s.val_fraction - 0.2) < 1e-12);
    assert_int_equal(s.overfit_batch, 0);
    assert_int_equal(s.overfit_steps, 50);
    jobspec_free(&s);
}

typedef struct {
    const char *json;
    const char *path;
    const char *msg;
} Bad;

#define BASE "\"dataset\": \"d\", \"weights\": \"random\""
#define PH "\"phases\": [{\"epochs\": 1, \"train\": \"head\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}}]"

static void test_errors_name_the_path(void **state)
{
    (void)state;
    static const Bad bad[] = {
        {"{\"dataset\": ", "", "not valid JSON"},
        {"[1, 2]", "", "must be a JSON object"},
        {"{" BASE ", " PH ", \"colour\": 1}", "colour", "unknown field"},
        {"{\"weights\": \"random\", " PH "}", "dataset", "is required"},
        {"{" BASE ", \"input_size\": 16, " PH "}", "input_size", "from 32 to 4096 (got 16)"},
        {"{" BASE ", \"batch_size\": \"8\", " PH "}", "batch_size", "must be an integer"},
        {"{" BASE ", \"preprocess\": \"caffee\", " PH "}", "preprocess", "must be one of"},
        {"{" BASE ", \"preprocess\": \"custom\", " PH "}", "preprocess", "custom needs its numbers"},
        {"{" BASE ", \"preprocess\": {\"mode\": \"custom\", \"rescale\": 1, \"mean\": [0,0],"
         " \"std\": [1,1,1]}, " PH "}", "preprocess.mean", "3 numbers"},
        {"{" BASE ", \"preprocess\": {\"mode\": \"custom\", \"rescale\": 1, \"mean\": [0,0,0],"
         " \"std\": [1,0,1]}, " PH "}", "preprocess.std", "positive"},
        {"{" BASE ", \"resize\": \"stretch\", " PH "}", "resize", "\"squash\", \"crop\""},
        {"{" BASE ", \"augment\": {\"random_resized_crop\": [0.9, 0.5]}, " PH "}",
         "augment.random_resized_crop", "0 < min <= max <= 1"},
        {"{" BASE ", \"augment\": {\"vflip\": true}, " PH "}", "augment.vflip", "unknown field"},
        {"{" BASE ", \"head\": {\"dropout\": 1.0}, " PH "}", "head.dropout", "[0, 1)"},
        {"{" BASE ", \"class_weight\": \"auto\", " PH "}", "class_weight", "\"none\", \"balanced\""},
        {"{" BASE ", \"class_weight\": {\"cat\": -1}, " PH "}", "class_weight.cat", ">= 0"},
        {"{" BASE ", \"label_smoothing\": 1, " PH "}", "label_smoothing", "[0, 1)"},
        {"{" BASE ", \"phases\": []}", "phases", "non-empty array"},
        {"{" BASE ", \"phases\": [{\"train\": \"head\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}}]}",
         "phases[0].epochs", "is required"},
        {"{" BASE ", \"phases\": [" "{\"epochs\": 1, \"train\": \"head\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}},"
         "{\"epochs\": 1, \"train\": \"head\", \"optimizer\": {\"type\": \"adam\", \"lr\": 0}}]}",
         "phases[1].optimizer.lr", "must be a number in (0, 10] (got 0)"},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"layers:3\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}}]}",
         "phases[0].train", "unknown selector"},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"keras_last:200\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}}]}",
         "phases[0].train", "175"},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"stage:1\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}}]}",
         "phases[0].train", "2 to 5"},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"head\", \"bn\": \"on\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1}}]}",
         "phases[0].bn", "\"frozen\", \"train\""},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"head\", \"optimizer\": {\"type\": \"rmsprop\", \"lr\": 0.1}}]}",
         "phases[0].optimizer.type", "\"sgd\", \"adam\", \"adamw\""},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"head\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1, \"nesterov\": true}}]}",
         "phases[0].optimizer.nesterov", "momentum > 0"},
        {"{" BASE ", \"phases\": [{\"epochs\": 1, \"train\": \"head\", \"optimizer\": {\"type\": \"adam\", \"lr\": 0.1, \"momentum\": 0.9}}]}",
         "phases[0].optimizer.momentum", "sgd only"},
        {"{" BASE ", \"phases\": [{\"epochs\": 2, \"train\": \"head\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1},"
         " \"lr_schedule\": {\"type\": \"step\"}}]}", "phases[0].lr_schedule.step_epochs", "is required"},
        {"{" BASE ", \"phases\": [{\"epochs\": 2, \"train\": \"head\", \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1},"
         " \"lr_schedule\": {\"type\": \"cosine\", \"warmup_epochs\": 2}}]}", "phases[0].lr_schedule.warmup_epochs",
         "from 0 to 1"},
        {"{" BASE ", " PH ", \"early_stopping\": {\"monitor\": \"loss\"}}", "early_stopping.monitor",
         "\"val_loss\""},
        {"{" BASE ", \"seed\": 1, \"seed\": 2, " PH "}", "", "duplicate"},
        {"{" BASE ", " PH ", \"preflight\": {\"steps\": 0}}", "preflight.steps", "from 1 to 10000"},
        {"{" BASE ", " PH ", \"preflight\": {\"overfit\": true}}", "preflight.overfit", "unknown"},
        {"{" BASE ", " PH ", \"preflight\": true}", "preflight", "must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        JobSpec s;
        Error err;
        char path[JOBSPEC_PATH_MAX] = "unset";
        if (jobspec_parse(&s, bad[i].json, strlen(bad[i].json), path, sizeof path, &err) == 0)
            fail_msg("case %zu accepted: %s", i, bad[i].json);
        if (strcmp(path, bad[i].path))
            fail_msg("case %zu: path '%s', want '%s' (%s)", i, path, bad[i].path, err.msg);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, bad[i].msg);
        if (*bad[i].path && strncmp(err.msg, bad[i].path, strlen(bad[i].path)))
            fail_msg("case %zu: message '%s' does not start with the path", i, err.msg);
    }
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_defaults_and_custom),
        cmocka_unit_test(test_errors_name_the_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
