/*
 * test_jobcheck.c: the submit-time checks refuse what needs no training (bad
 * weights, unresolvable preprocessing, unknown classes, selectors, memory)
 * with the JSON path, and resolve what a job will run with.
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "jobcheck.h"
#include "jobspec.h"
#include "resnet.h"
#include "weights.h"

static const char *const CLASSES[] = {"cat", "dog", "owl"};

/* A two-phase job on weights; extra adds fields (and may give input_size and
 * batch_size, 32 and 4 otherwise). */
static JobSpec spec_of(const char *weights, const char *extra)
{
    char json[4096];
    const char *sizes = strstr(extra, "input_size") ? "" : ", \"input_size\": 32, \"batch_size\": 4";
    snprintf(json, sizeof json,
             "{\"dataset\": \"d\", \"weights\": \"%s\"%s%s,"
             " \"phases\": [{\"epochs\": 1, \"train\": \"head\","
             "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}},"
             "  {\"epochs\": 1, \"train\": \"keras_last:20\", \"bn\": \"train\","
             "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.001}}]}", weights, sizes, extra);
    JobSpec s;
    Error err;
    if (jobspec_parse(&s, json, strlen(json), NULL, 0, &err))
        fail_msg("%s: %s", json, err.msg);
    return s;
}

/* Runs the check; returns its status and leaves the path and message. */
static int check(const JobSpec *s, const char *wpath, JobResolved *r, char *path, Error *err)
{
    return jobcheck_run(s, wpath, CLASSES, 3, r, path, 128, err);
}

static const char *saved_weights(ResnetVariant v, const char *preprocess, const char *name)
{
    ResnetConfig cfg = {v, 10, 0, 0.0f};
    Resnet *m;
    Error err;
    if (resnet_create(&m, &cfg, &err))
        fail_msg("%s", err.msg);
    resnet_init_random(m, 1);
    const char *path = testutil_tmp_path(name);
    if (weights_save(m, path, v == RESNET_KERAS ? NAMING_KERAS : NAMING_TORCH, WEIGHTS_PARAMS,
                     preprocess, NULL, 0, &err))
        fail_msg("%s", err.msg);
    resnet_free(m);
    return path;
}

static void test_random_weights_resolve_to_torch(void **state)
{
    (void)state;
    JobSpec s = spec_of("random", "");
    JobResolved r;
    char path[128];
    Error err;
    if (check(&s, NULL, &r, path, &err))
        fail_msg("%s (at %s)", err.msg, path);
    assert_string_equal(r.preprocess, "torch");
    assert_string_equal(r.preprocess_from, "default for random weights");
    assert_int_equal(r.variant, RESNET_TORCHVISION);
    /* parameters, gradients, optimizer and copies are about 7 x 94 MiB */
    assert_true(r.memory_bytes > 600e6 && r.memory_bytes < 1.5e9);
    assert_true(r.memory_limit > r.memory_bytes);
    jobspec_free(&s);
    /* a named mode is the job's own */
    s = spec_of("random", ", \"preprocess\": \"caffe\"");
    assert_int_equal(check(&s, NULL, &r, path, &err), 0);
    assert_string_equal(r.preprocess, "caffe");
    assert_string_equal(r.preprocess_from, "job");
    jobspec_free(&s);
}

static void test_weights_checked_and_declared_preprocess(void **state)
{
    (void)state;
    const char *kw = saved_weights(RESNET_KERAS, "caffe", "k.safetensors");
    JobSpec s = spec_of("k", "");
    JobResolved r;
    char path[128];
    Error err;
    if (check(&s, kw, &r, path, &err))
        fail_msg("%s (at %s)", err.msg, path);
    assert_int_equal(r.variant, RESNET_KERAS);
    assert_string_equal(r.preprocess, "caffe");
    assert_string_equal(r.preprocess_from, "weights");
    jobspec_free(&s);
    /* a mode that contradicts the weights, without the override */
    s = spec_of("k", ", \"preprocess\": \"torch\"");
    assert_int_equal(check(&s, kw, &r, path, &err), -1);
    assert_string_equal(path, "preprocess");
    assert_non_null(strstr(err.msg, "contradicts"));
    jobspec_free(&s);
    /* a missing file, and a truncated one */
    s = spec_of("gone", "");
    assert_int_equal(check(&s, testutil_tmp_path("gone.safetensors"), &r, path, &err), -1);
    assert_string_equal(path, "weights");
    const char *tw = saved_weights(RESNET_TORCHVISION, NULL, "t.safetensors");
    assert_int_equal(truncate(tw, 4096), 0);
    assert_int_equal(check(&s, tw, &r, path, &err), -1);
    assert_string_equal(path, "weights");
    jobspec_free(&s);
}

/* "variant": the architecture of random weights, the choice "imagenet" makes (what
 * a named download declares), and never against a weights file's own. */
static void test_variant(void **state)
{
    (void)state;
    JobResolved r;
    char path[128];
    Error err;
    JobSpec s = spec_of("random", ", \"variant\": \"keras\"");
    if (check(&s, NULL, &r, path, &err))
        fail_msg("%s (at %s)", err.msg, path);
    assert_int_equal(r.variant, RESNET_KERAS);
    jobspec_free(&s);
    const char *kw = saved_weights(RESNET_KERAS, "caffe", "kv.safetensors");
    s = spec_of("kv", ", \"variant\": \"torchvision\"");
    assert_int_equal(check(&s, kw, &r, path, &err), -1);
    assert_string_equal(path, "variant");
    assert_non_null(strstr(err.msg, "keras"));
    jobspec_free(&s);
    /* weights still to download: what the manifest declares stands for the file */
    JobDeclared keras = {RESNET_KERAS, "caffe"};
    s = spec_of("imagenet", ", \"variant\": \"keras\"");
    if (jobcheck_run_declared(&s, &keras, CLASSES, 3, &r, path, sizeof path, &err))
        fail_msg("%s (at %s)", err.msg, path);
    assert_int_equal(r.variant, RESNET_KERAS);
    assert_string_equal(r.preprocess, "caffe");
    assert_string_equal(r.preprocess_from, "weights");
    jobspec_free(&s);
    s = spec_of("imagenet", ", \"variant\": \"torchvision\"");
    assert_int_equal(jobcheck_run_declared(&s, &keras, CLASSES, 3, &r, path, sizeof path, &err),
                     -1);
    assert_string_equal(path, "variant");
    jobspec_free(&s);
    /* only the two variants parse */
    const char *bad = "{\"dataset\": \"d\", \"weights\": \"random\", \"variant\": \"vgg\","
                      " \"phases\": [{\"epochs\": 1, \"train\": \"head\","
                      " \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}}]}";
    assert_int_equal(jobspec_parse(&s, bad, strlen(bad), path, sizeof path, &err), -1);
    assert_string_equal(path, "variant");
}

static void test_refusals_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *extra, *path, *words;
    } cases[] = {
        {", \"class_weight\": {\"cat\": 2, \"zebra\": 3}", "class_weight.zebra", "no class 'zebra'"},
        {", \"input_size\": 1024, \"batch_size\": 4096", "batch_size", "GiB"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        JobSpec s = spec_of("random", cases[i].extra);
        JobResolved r;
        char path[128];
        Error err;
        assert_int_equal(check(&s, NULL, &r, path, &err), -1);
        assert_string_equal(path, cases[i].path);
        if (!strstr(err.msg, cases[i].words))
            fail_msg("'%s' lacks '%s'", err.msg, cases[i].words);
        jobspec_free(&s);
    }
    /* a class weight map is fine when every class exists */
    JobSpec s = spec_of("random", ", \"class_weight\": {\"owl\": 2}");
    JobResolved r;
    char path[128];
    Error err;
    assert_int_equal(check(&s, NULL, &r, path, &err), 0);
    jobspec_free(&s);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_weights_resolve_to_torch),
        cmocka_unit_test(test_weights_checked_and_declared_preprocess),
        cmocka_unit_test(test_refusals_name_the_field),
        cmocka_unit_test(test_variant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
