/*
 * test_resnet.c: properties of the ResNet50 graph that the PyTorch step tests do
 * not cover: output sizes for any input size >= 32 (against torch), the inference
 * plan computing exactly what the training plan computes, partial batches,
 * frozen layers left bit-identical by a training step, seeded initialisation.
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "resnet.h"

static Resnet *model(ResnetVariant v, int classes, int hidden, uint64_t seed)
{
    Error err;
    ResnetConfig cfg = {v, classes, hidden, 0.0f};
    Resnet *m = NULL;
    if (resnet_create(&m, &cfg, &err))
        fail_msg("%s", err.msg);
    resnet_init_random(m, seed);
    return m;
}

static void test_output_sizes_match_torch(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file(testutil_ref_path("sizes.json"), 0, &jerr);
    if (!root)
        fail_msg("sizes.json: %s", jerr.text);
    static const char *variants[] = {"torchvision", "keras"};
    for (int v = 0; v < 2; v++) {
        json_t *tab = json_object_get(root, variants[v]);
        assert_non_null(tab);
        const char *key;
        json_t *val;
        Resnet *m = model(v == 0 ? RESNET_TORCHVISION : RESNET_KERAS, 3, 0, 1);
        json_object_foreach(tab, key, val) {
            Error err;
            int size = atoi(key);
            if (resnet_plan_inference(m, 1, size, &err))
                fail_msg("%s at %d: %s", variants[v], size, err.msg);
            if (m->feat_hw != json_integer_value(val))
                fail_msg("%s at %d: final map %d, torch %lld", variants[v], size, m->feat_hw,
                         (long long)json_integer_value(val));
            float *x = calloc((size_t)size * size * 3, sizeof(float));
            testutil_fill_uniform(x, (size_t)size * size * 3, (uint64_t)size, -1, 1);
            resnet_forward(m, x, 1, 0);
            for (int c = 0; c < 3; c++)
                assert_true(isfinite(m->logits[c]));
            free(x);
        }
        resnet_free(m);
    }
    json_decref(root);
}

static void test_too_small_input_is_an_error(void **state)
{
    (void)state;
    Error err;
    Resnet *m = model(RESNET_TORCHVISION, 3, 0, 1);
    assert_int_equal(resnet_plan(m, 2, 31, &err), -1);
    assert_non_null(strstr(err.msg, "input size must be >= 32"));
    assert_int_equal(resnet_plan(m, 0, 64, &err), -1);
    assert_non_null(strstr(err.msg, "batch size"));
    resnet_free(m);
}

/* The inference plan shares buffers and runs BN in place: its logits must equal
 * the training plan's inference-mode logits bit for bit, for a partial batch too. */
static void check_inference_plan(ResnetVariant v, int hidden)
{
    Error err;
    const int batch = 4, size = 64;
    size_t nx = (size_t)batch * size * size * 3;
    float *x = malloc(nx * sizeof(float));
    testutil_fill_uniform(x, nx, 7, -2, 2);
    Resnet *a = model(v, 5, hidden, 3), *b = model(v, 5, hidden, 3);
    for (int i = 0; i < a->n_layers; i++) /* non-trivial running statistics */
        if (a->layers[i].kind == LAYER_BN)
            for (int c = 0; c < a->layers[i].cout; c++) {
                a->layers[i].rmean[c] = b->layers[i].rmean[c] = 0.01f * (float)(c % 7);
                a->layers[i].rvar[c] = b->layers[i].rvar[c] = 1.0f + 0.1f * (float)(c % 3);
            }
    if (resnet_plan(a, batch, size, &err) || resnet_plan_inference(b, batch, size, &err))
        fail_msg("%s", err.msg);
    assert_true(b->arena_floats < a->arena_floats / 3);
    for (int n = batch; n >= 3; n--) {
        resnet_forward(a, x, n, 0);
        resnet_forward(b, x, n, 0);
        assert_memory_equal(a->logits, b->logits, (size_t)n * 5 * sizeof(float));
    }
    print_message("  %s: training plan %.1f MiB, inference plan %.1f MiB\n",
                  resnet_variant_name(v), a->arena_floats * 4.0 / 1048576,
                  b->arena_floats * 4.0 / 1048576);
    resnet_free(a);
    resnet_free(b);
    free(x);
}

static void test_inference_plan_torchvision(void **state)
{
    (void)state;
    check_inference_plan(RESNET_TORCHVISION, 0);
}

static void test_inference_plan_keras_hidden(void **state)
{
    (void)state;
    check_inference_plan(RESNET_KERAS, 16);
}

/* A training step with a frozen prefix leaves every frozen parameter and running
 * statistic bit-identical, and changes the trainable ones. */
static void test_frozen_prefix_untouched(void **state)
{
    (void)state;
    Error err;
    Resnet *m = model(RESNET_TORCHVISION, 4, 0, 5);
    int first = resnet_find_layer(m, "layer3.0.conv1");
    assert_true(first > 0);
    for (int i = 0; i < m->n_layers; i++) {
        m->layers[i].trainable = i >= first;
        m->layers[i].batch_stats = m->layers[i].kind == LAYER_BN && i >= first;
    }
    float *before = malloc(m->n_floats * sizeof(float));
    memcpy(before, m->param_data, m->n_floats * sizeof(float));
    if (resnet_plan(m, 2, 64, &err))
        fail_msg("%s", err.msg);
    float *x = malloc((size_t)2 * 64 * 64 * 3 * sizeof(float));
    testutil_fill_uniform(x, (size_t)2 * 64 * 64 * 3, 11, -1, 1);
    int labels[2] = {1, 3};
    OptimConfig oc = optim_defaults(OPTIM_SGD);
    oc.lr = 0.1f;
    oc.momentum = 0.9f;
    Optimizer opt;
    if (optim_init(&opt, &oc, m, &err))
        fail_msg("%s", err.msg);
    for (int s = 0; s < 2; s++) {
        resnet_zero_grad(m);
        resnet_forward(m, x, 2, 1);
        resnet_loss(m, labels, NULL, 0.0f);
        resnet_backward(m);
        optim_step(&opt, m, oc.lr);
    }
    int changed = 0;
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        int same = !memcmp(before + p->offset, m->param_data + p->offset, p->numel * sizeof(float));
        if (p->layer < first && !same)
            fail_msg("frozen %s changed", p->name);
        changed += p->layer >= first && !same;
    }
    assert_true(changed > 100);
    optim_free(&opt);
    free(before);
    free(x);
    resnet_free(m);
}

static void test_seeded_init(void **state)
{
    (void)state;
    Resnet *a = model(RESNET_KERAS, 3, 8, 42), *b = model(RESNET_KERAS, 3, 8, 42);
    Resnet *c = model(RESNET_KERAS, 3, 8, 43);
    assert_memory_equal(a->param_data, b->param_data, a->n_floats * sizeof(float));
    assert_true(memcmp(a->param_data, c->param_data, a->n_floats * sizeof(float)) != 0);
    /* He-normal: conv weights have variance 2 / fan_in */
    const Layer *l = &a->layers[resnet_find_layer(a, "layer3.0.conv2")];
    size_t n = (size_t)l->k * l->k * l->cin * l->cout;
    double sq = 0;
    for (size_t i = 0; i < n; i++) sq += (double)l->w[i] * l->w[i];
    double want = 2.0 / (l->k * l->k * l->cin);
    assert_true(fabs(sq / n - want) < 0.02 * want);
    resnet_free(a);
    resnet_free(b);
    resnet_free(c);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_sizes_match_torch),
        cmocka_unit_test(test_too_small_input_is_an_error),
        cmocka_unit_test(test_inference_plan_torchvision),
        cmocka_unit_test(test_inference_plan_keras_hidden),
        cmocka_unit_test(test_frozen_prefix_untouched),
        cmocka_unit_test(test_seeded_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
