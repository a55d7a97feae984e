/*
 * test_reference.c: the engine against PyTorch (tests/reference/make_reference.py).
 * For each case: logits and loss, every trainable parameter's gradient, BN running
 * statistics after a training step, and every tensor after 3 steps of SGD
 * (Nesterov, weight decay), Adam and AdamW. Both variants, full network and
 * frozen prefix, class weights, label smoothing, a hidden head layer.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "resnet.h"
#include "safetensors.h"
#include "weights.h"

typedef struct {
    const char *name;
    SafeTensors io;
    ResnetConfig cfg;
    int bn_train;
    float smoothing;
    int batch, size;
    float *x, *cw;
    int *labels;
} Case;

static float *read_tensor(const SafeTensors *st, const char *name, int64_t *numel)
{
    const StTensor *t = safetensors_find(st, name);
    if (!t)
        return NULL;
    Error err;
    float *buf = malloc((size_t)safetensors_numel(t) * sizeof(float) + 4);
    assert_non_null(buf);
    if (safetensors_read_f32(st, t, buf, &err))
        fail_msg("%s", err.msg);
    if (numel)
        *numel = safetensors_numel(t);
    return buf;
}

static void case_open(Case *c, const char *name)
{
    Error err;
    char fn[256];
    memset(c, 0, sizeof *c);
    c->name = name;
    snprintf(fn, sizeof fn, "%s_io.safetensors", name);
    if (safetensors_open(&c->io, testutil_ref_path(fn), &err))
        fail_msg("%s", err.msg);
    const char *v = safetensors_meta(&c->io, "variant");
    assert_non_null(v);
    c->cfg.variant = strcmp(v, "keras") ? RESNET_TORCHVISION : RESNET_KERAS;
    c->cfg.num_classes = atoi(safetensors_meta(&c->io, "classes"));
    c->cfg.hidden = atoi(safetensors_meta(&c->io, "hidden"));
    c->bn_train = !strcmp(safetensors_meta(&c->io, "bn_policy"), "train");
    c->smoothing = (float)atof(safetensors_meta(&c->io, "smoothing"));
    c->batch = atoi(safetensors_meta(&c->io, "batch"));
    c->size = atoi(safetensors_meta(&c->io, "size"));
    c->x = read_tensor(&c->io, "x", NULL);
    c->cw = read_tensor(&c->io, "class_weight", NULL);
    float *lf = read_tensor(&c->io, "labels", NULL);
    c->labels = malloc((size_t)c->batch * sizeof(int));
    for (int i = 0; i < c->batch; i++)
        c->labels[i] = (int)lf[i];
    free(lf);
}

static void case_close(Case *c)
{
    free(c->x);
    free(c->cw);
    free(c->labels);
    safetensors_close(&c->io);
}

/* A fresh model with the case's initial weights and trainable set: a layer is
 * trainable when its weight appears in the reference gradients. */
static Resnet *case_model(const Case *c)
{
    Error err;
    char fn[256];
    Resnet *m = NULL;
    if (resnet_create(&m, &c->cfg, &err))
        fail_msg("%s", err.msg);
    snprintf(fn, sizeof fn, "%s_init.safetensors", c->name);
    if (weights_load(m, testutil_ref_path(fn), 1, &err))
        fail_msg("%s", err.msg);
    SafeTensors g;
    snprintf(fn, sizeof fn, "%s_grads.safetensors", c->name);
    if (safetensors_open(&g, testutil_ref_path(fn), &err))
        fail_msg("%s", err.msg);
    WeightsNaming naming = c->cfg.variant == RESNET_KERAS ? NAMING_KERAS : NAMING_TORCH;
    for (int pi = 0; pi < m->n_params; pi++) {
        if (m->params[pi].role != PARAM_WEIGHT)
            continue;
        char name[128];
        weights_file_name(m, pi, naming, name, sizeof name);
        Layer *l = &m->layers[m->params[pi].layer];
        l->trainable = safetensors_find(&g, name) != NULL;
        l->batch_stats = l->kind == LAYER_BN && l->trainable && c->bn_train;
    }
    safetensors_close(&g);
    if (resnet_plan(m, c->batch, c->size, &err))
        fail_msg("%s", err.msg);
    return m;
}

/* Compares every tensor of want_path against the same tensor of got_path:
 * ||got - want|| <= tol * max(||want||, floor). The floor covers tensors whose exact
 * value is zero (a Keras conv bias feeding a batch-statistics BN has no gradient):
 * there only float noise of both sides remains. */
static void compare_files(const char *got_path, const char *want_path, double tol,
                          double floor, const char *what)
{
    Error err;
    SafeTensors got, want;
    if (safetensors_open(&got, got_path, &err) || safetensors_open(&want, want_path, &err))
        fail_msg("%s", err.msg);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < want.n_tensors; i++) {
        const StTensor *wt = &want.tensors[i];
        const StTensor *gt = safetensors_find(&got, wt->name);
        if (!gt)
            fail_msg("%s: tensor %s missing from resnetd's output", what, wt->name);
        assert_int_equal(safetensors_numel(gt), safetensors_numel(wt));
        float *a = read_tensor(&got, wt->name, NULL), *b = read_tensor(&want, wt->name, NULL);
        double num = 0, den = 0;
        for (int64_t j = 0; j < safetensors_numel(wt); j++) {
            double d = (double)a[j] - b[j];
            num += d * d;
            den += (double)b[j] * b[j];
        }
        double rel = sqrt(num) / fmax(sqrt(den), floor);
        if (rel > worst) { worst = rel; worst_name = wt->name; }
        if (!(rel <= tol))
            fail_msg("%s: tensor %s: norm-relative error %.3g > %.3g", what, wt->name, rel, tol);
        free(a);
        free(b);
    }
    print_message("  %s: %d tensors, worst %.2e (%s)\n", what, want.n_tensors, worst, worst_name);
    safetensors_close(&got);
    safetensors_close(&want);
}

static void save_model(const Resnet *m, const char *path, WeightsSource src)
{
    Error err;
    WeightsNaming naming = m->cfg.variant == RESNET_KERAS ? NAMING_KERAS : NAMING_TORCH;
    if (weights_save(m, path, naming, src, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
}

static void check_forward_backward(const char *name)
{
    Case c;
    case_open(&c, name);
    Resnet *m = case_model(&c);
    resnet_forward(m, c.x, c.batch, 1);
    double loss = resnet_loss(m, c.labels, c.cw, c.smoothing);
    int64_t nl;
    float *want_logits = read_tensor(&c.io, "logits", &nl);
    float *want_loss = read_tensor(&c.io, "loss", NULL);
    assert_int_equal(nl, (int64_t)c.batch * c.cfg.num_classes);
    testutil_assert_close(m->logits, want_logits, (size_t)nl, 1e-4, 1e-6, "logits");
    print_message("  %s: loss %.7f (torch %.7f)\n", name, loss, want_loss[0]);
    assert_true(fabs(loss - want_loss[0]) <= 1e-4 * fabs(want_loss[0]));

    resnet_zero_grad(m);
    resnet_backward(m);
    char fn[256], want[256];
    snprintf(fn, sizeof fn, "%s_grads_got.safetensors", name);
    save_model(m, testutil_tmp_path(fn), WEIGHTS_GRADS);
    snprintf(want, sizeof want, "%s_grads.safetensors", name);
    compare_files(testutil_tmp_path(fn), testutil_ref_path(want), 1e-3, 1e-4, "gradients");

    /* gradients of frozen layers are never computed */
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        if (m->layers[p->layer].trainable || p->role == PARAM_RUNNING_MEAN ||
            p->role == PARAM_RUNNING_VAR)
            continue;
        for (size_t j = 0; j < p->numel; j++)
            if (m->grad_data[p->offset + j] != 0.0f)
                fail_msg("frozen parameter %s got a gradient", p->name);
    }

    snprintf(fn, sizeof fn, "%s_step_got.safetensors", name);
    save_model(m, testutil_tmp_path(fn), WEIGHTS_PARAMS);
    snprintf(want, sizeof want, "%s_step.safetensors", name);
    compare_files(testutil_tmp_path(fn), testutil_ref_path(want), 1e-5, 1e-6,
                  "after one step (BN statistics)");
    free(want_logits);
    free(want_loss);
    resnet_free(m);
    case_close(&c);
}

static void check_optimizers(const char *name)
{
    static const char *opts[] = {"sgd", "adam", "adamw"};
    Case c;
    case_open(&c, name);
    for (int o = 0; o < 3; o++) {
        Resnet *m = case_model(&c);
        OptimConfig oc;
        if (o == 0) {
            oc = optim_defaults(OPTIM_SGD);
            oc.lr = 0.01f; oc.momentum = 0.9f; oc.nesterov = 1; oc.weight_decay = 1e-3f;
        } else if (o == 1) {
            oc = optim_defaults(OPTIM_ADAM);
            oc.lr = 1e-3f; oc.eps = 1e-6f; oc.weight_decay = 1e-4f;
        } else {
            oc = optim_defaults(OPTIM_ADAMW);
            oc.lr = 1e-3f; oc.eps = 1e-6f; oc.weight_decay = 0.05f;
        }
        Optimizer opt;
        Error err;
        if (optim_init(&opt, &oc, m, &err))
            fail_msg("%s", err.msg);
        for (int s = 0; s < 3; s++) {
            resnet_zero_grad(m);
            resnet_forward(m, c.x, c.batch, 1);
            resnet_loss(m, c.labels, c.cw, c.smoothing);
            resnet_backward(m);
            optim_step(&opt, m, oc.lr);
        }
        char fn[256], want[256];
        snprintf(fn, sizeof fn, "%s_%s_got.safetensors", name, opts[o]);
        save_model(m, testutil_tmp_path(fn), WEIGHTS_PARAMS);
        snprintf(want, sizeof want, "%s_%s.safetensors", name, opts[o]);
        compare_files(testutil_tmp_path(fn), testutil_ref_path(want), 1e-3, 1e-6, opts[o]);
        optim_free(&opt);
        resnet_free(m);
    }
    case_close(&c);
}

#define CASE_TESTS(id)                                                        \
    static void test_##id##_forward_backward(void **s) { (void)s; check_forward_backward(#id); } \
    static void test_##id##_optimizers(void **s) { (void)s; check_optimizers(#id); }
CASE_TESTS(tv_full)
CASE_TESTS(tv_frozen)
CASE_TESTS(keras_full)
CASE_TESTS(keras_frozen)

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tv_full_forward_backward),
        cmocka_unit_test(test_tv_full_optimizers),
        cmocka_unit_test(test_tv_frozen_forward_backward),
        cmocka_unit_test(test_tv_frozen_optimizers),
        cmocka_unit_test(test_keras_full_forward_backward),
        cmocka_unit_test(test_keras_full_optimizers),
        cmocka_unit_test(test_keras_frozen_forward_backward),
        cmocka_unit_test(test_keras_frozen_optimizers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
