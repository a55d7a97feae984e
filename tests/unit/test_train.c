/*
 * test_train.c: the fine-tuning loop on a small real Fashion-MNIST set (made by
 * tools/fmnist_to_png): it learns, head-only training leaves the backbone (BN
 * statistics included) bit-identical, cancel stops within one batch, and bad
 * phases fail with the JSON path.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dirent.h>
#include <sys/stat.h>

#include "image.h"
#include "jobspec.h"
#include "predict.h"
#include "preprocess.h"
#include "resnet.h"
#include "train.h"
#include "weights.h"

static char data[4096];

static int setup(void **state)
{
    (void)state;
    const char *build = getenv("RESNETD_BUILD_DIR");
    char cmd[9000];
    snprintf(data, sizeof data, "%s", testutil_tmp_path("fm"));
    snprintf(cmd, sizeof cmd, "'%s/tools/fmnist_to_png' '%s' --counts 0:40,1:40,8:40 --size 32 "
             "> /dev/null 2>&1", build && *build ? build : "build", data);
    if (system(cmd) != 0)
        fail_msg("%s failed", cmd);
    return 0;
}

typedef struct {
    int epochs, steps, phases;
    double first_loss, last_loss;
    int stop_after;
    volatile int cancel;
} Log;

static void on_phase(void *ctx, int phase, const PhaseSpec *ph, const char *describe)
{
    (void)phase; (void)ph; (void)describe;
    ((Log *)ctx)->phases++;
}

static void on_step(void *ctx, int epoch, int step, int steps, double loss, float lr)
{
    (void)epoch; (void)step; (void)steps; (void)loss; (void)lr;
    Log *l = ctx;
    l->steps++;
    if (l->stop_after && l->steps >= l->stop_after)
        l->cancel = 1;
}

static void on_epoch(void *ctx, const EpochReport *r)
{
    Log *l = ctx;
    for (int k = 0; k < TRAIN_STAGES; k++)
        assert_true(r->grad_norm[k] >= 0 && r->weight_change[k] >= 0);
    if (l->epochs == 0) l->first_loss = r->train_loss;
    l->last_loss = r->train_loss;
    l->epochs++;
    assert_int_equal(r->epoch, l->epochs - 1);
    assert_non_null(r->val);
    assert_int_equal(r->val->k, 3);
    assert_true(r->val_accuracy >= 0 && r->val_accuracy <= 1);
}

static JobSpec parse(const char *fmt, const char *extra)
{
    char json[4096];
    snprintf(json, sizeof json, fmt, data, extra);
    JobSpec s;
    Error err;
    if (jobspec_parse(&s, json, strlen(json), NULL, 0, &err))
        fail_msg("%s", err.msg);
    return s;
}

static void all_epoch(void *ctx, const EpochReport *r);

/* Training from random weights is chaotic: another BLAS kernel or thread count
 * gives another trajectory, and one run may stall. So the loss must fall by a
 * fifth in most of three seeds; the loop's bookkeeping holds for every one. */
static void test_learns(void **state)
{
    (void)state;
    int learned = 0;
    for (int seed = 3; seed <= 5; seed++) {
        char extra[32];
        snprintf(extra, sizeof extra, ", \"seed\": %d", seed);
        JobSpec s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"preprocess\": \"torch\","
                          " \"input_size\": 32, \"batch_size\": 16%s,"
                          " \"phases\": [{\"epochs\": 4, \"train\": \"all\","
                          "   \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}}]}", extra);
        Log log = {0};
        TrainCallbacks cb = {&log, on_phase, on_step, all_epoch, &log.cancel, NULL, NULL, NULL};
        TrainResult res;
        Error err;
        if (train_run(&s, NULL, &cb, &res, &err))
            fail_msg("%s", err.msg);
        print_message("  seed %d: train loss %.3f -> %.3f over %d epochs\n", seed, log.first_loss,
                      log.last_loss, log.epochs);
        assert_int_equal(res.epochs_run, 4);
        assert_int_equal(log.epochs, 4);
        assert_int_equal(log.phases, 1);
        assert_int_equal(log.steps, 4 * 6); /* 96 train images / 16 */
        learned += log.last_loss < 0.8 * log.first_loss;
        jobspec_free(&s);
    }
    assert_true(learned >= 2);
}

typedef struct {
    Log log;
    const Resnet *ref;   /* the pretrained model the job loads */
    int checked;
} HeadCheck;

/* Head-only: no gradient and no drift anywhere but the head. */
static void head_epoch(void *ctx, const EpochReport *r)
{
    on_epoch(ctx, r);
    for (int k = 0; k < TRAIN_STAGES - 1; k++) {
        assert_true(r->grad_norm[k] == 0.0);
        assert_true(r->weight_change[k] == 0.0);
    }
    assert_true(r->grad_norm[TRAIN_STAGES - 1] > 0);
    assert_true(r->weight_change[TRAIN_STAGES - 1] > 0);
}

/* Everything trains: every stage has gradients and moves. */
static void all_epoch(void *ctx, const EpochReport *r)
{
    on_epoch(ctx, r);
    for (int k = 0; k < TRAIN_STAGES; k++) {
        assert_true(r->grad_norm[k] > 0);
        assert_true(r->weight_change[k] > 0);
    }
}

/* Every backbone tensor (BN running statistics included) of the trained model
 * equals the pretrained file's, bit for bit. */
static void check_backbone(void *ctx, const Resnet *m, const Dataset *ds, const Preprocess *p)
{
    (void)ds; (void)p;
    HeadCheck *h = ctx;
    for (int pi = 0; pi < m->n_params; pi++) {
        const ParamInfo *p = &m->params[pi];
        if (p->layer == m->out_fc || p->layer == m->hidden_fc)
            continue;
        int ri = resnet_find_param(h->ref, p->name);
        assert_true(ri >= 0);
        if (memcmp(m->param_data + p->offset, h->ref->param_data + h->ref->params[ri].offset,
                   p->numel * sizeof(float)))
            fail_msg("%s changed during head-only training", p->name);
        h->checked++;
    }
}

static void test_head_only_keeps_backbone(void **state)
{
    (void)state;
    Error err;
    ResnetConfig cfg = {RESNET_TORCHVISION, 10, 0, 0.0f};
    Resnet *src;
    if (resnet_create(&src, &cfg, &err))
        fail_msg("%s", err.msg);
    resnet_init_random(src, 77);
    for (int i = 0; i < src->n_layers; i++) /* non-trivial running statistics */
        if (src->layers[i].kind == LAYER_BN)
            for (int c = 0; c < src->layers[i].cout; c++) {
                src->layers[i].rmean[c] = 0.01f * (float)(c % 7);
                src->layers[i].rvar[c] = 1.0f + 0.01f * (float)(c % 5);
            }
    const char *wpath = testutil_tmp_path("pre.safetensors");
    if (weights_save(src, wpath, NAMING_TORCH, WEIGHTS_PARAMS, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    char extra[4200];
    snprintf(extra, sizeof extra, ", \"weights\": \"%s\"", wpath);
    JobSpec s = parse("{\"dataset\": \"%s\"%s, \"input_size\": 32, \"batch_size\": 16,"
                      " \"phases\": [{\"epochs\": 2, \"train\": \"head\", \"bn\": \"train\","
                      "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}}]}", extra);
    HeadCheck h = {{0}, src, 0};
    TrainCallbacks cb = {&h.log, on_phase, on_step, head_epoch, NULL, NULL, NULL, NULL};
    cb.ctx = &h; /* Log is the first member: the log callbacks still work */
    cb.on_done = check_backbone;
    TrainResult res;
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(res.epochs_run, 2);
    assert_int_equal(h.checked, 265); /* every backbone tensor */
    jobspec_free(&s);
    resnet_free(src);
}

static void test_cancel_within_a_batch(void **state)
{
    (void)state;
    JobSpec s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"preprocess\": \"tf\","
                      " \"input_size\": 32, \"batch_size\": 8%s,"
                      " \"phases\": [{\"epochs\": 3, \"train\": \"stage:5\","
                      "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}}]}", "");
    Log log = {0};
    log.stop_after = 2;
    TrainCallbacks cb = {&log, on_phase, on_step, on_epoch, &log.cancel, NULL, NULL, NULL};
    TrainResult res;
    Error err;
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(res.cancelled, 1);
    assert_int_equal(log.steps, 2);
    assert_int_equal(res.epochs_run, 0);
    jobspec_free(&s);
}

static void record_norm(void *ctx, const Dataset *ds, const Resnet *m, const Preprocess *p,
                        int first_epoch, int first_step)
{
    (void)ds; (void)m; (void)first_epoch; (void)first_step;
    *(Normalization *)ctx = p->norm;
}

static void test_bad_job_inputs(void **state)
{
    (void)state;
    Error err;
    TrainResult res;
    JobSpec s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"preprocess\": \"torch\","
                      " \"input_size\": 32, \"batch_size\": 8%s,"
                      " \"phases\": [{\"epochs\": 1, \"train\": \"from:conv9_block1\","
                      "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}}]}", "");
    assert_int_equal(train_run(&s, NULL, NULL, &res, &err), -1);
    assert_non_null(strstr(err.msg, "phases[0].train"));
    assert_non_null(strstr(err.msg, "no such block"));
    jobspec_free(&s);
    s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"preprocess\": \"torch\","
              " \"class_weight\": {\"zebra\": 2}, \"input_size\": 32%s,"
              " \"phases\": [{\"epochs\": 1, \"train\": \"head\","
              "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}}]}", "");
    assert_int_equal(train_run(&s, NULL, NULL, &res, &err), -1);
    assert_non_null(strstr(err.msg, "class_weight.zebra"));
    jobspec_free(&s);
    s = parse("{\"dataset\": \"%s\", \"weights\": \"random\"%s, \"input_size\": 32,"
              " \"phases\": [{\"epochs\": 1, \"train\": \"head\","
              "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}}]}", "");
    /* random weights declare no preprocessing: "auto" means torch's, not an error */
    Normalization norm = {.mode = NORM_CAFFE};
    TrainCallbacks cb = {&norm, NULL, NULL, NULL, NULL, NULL, record_norm, NULL};
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(norm.mode, NORM_TORCH);
    jobspec_free(&s);
    s = parse("{\"dataset\": \"%s/nope\", \"weights\": \"random\", \"preprocess\": \"torch\"%s,"
              " \"phases\": [{\"epochs\": 1, \"train\": \"head\","
              "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01}}]}", "");
    assert_int_equal(train_run(&s, NULL, NULL, &res, &err), -1);
    assert_non_null(strstr(err.msg, "dataset"));
    jobspec_free(&s);
}

typedef struct {
    Log log;
    char path[4096];        /* exported weights */
    char image[4400];       /* an image of the val split */
    float probs[3];         /* the trained model's softmax on it */
} Export;

static void export_and_score(void *ctx, const Resnet *cm, const Dataset *ds, const Preprocess *p)
{
    Export *e = ctx;
    Error err;
    Resnet *m = (Resnet *)cm; /* forward only; the loop is over */
    if (train_export(m, ds, p, e->path, &err))
        fail_msg("%s", err.msg);
    const DatasetItem *it = &ds->items[ds->n_items - 1];
    snprintf(e->image, sizeof e->image, "%s", it->path);
    Image img;
    if (image_load(&img, it->path, 0, &err))
        fail_msg("%s", err.msg);
    int bw, bh;
    preprocess_base_size(p, img.width, img.height, &bw, &bh);
    uint8_t *scratch = malloc((size_t)bw * bh * 3);
    float *x = malloc((size_t)p->size * p->size * 3 * sizeof(float));
    preprocess_image(x, img.rgb, img.width, img.height, p, NULL, scratch);
    resnet_forward(m, x, 1, 0);
    double mx = m->logits[0], sum = 0;
    for (int c = 1; c < 3; c++) if (m->logits[c] > mx) mx = m->logits[c];
    for (int c = 0; c < 3; c++) sum += exp(m->logits[c] - mx);
    for (int c = 0; c < 3; c++) e->probs[c] = (float)(exp(m->logits[c] - mx) / sum);
    free(scratch);
    free(x);
    image_free(&img);
}

/* The exported file predicts what the trained model computed, with the class
 * names and the preprocessing (here custom, crop) it declares. */
static void test_export_and_predict(void **state)
{
    (void)state;
    JobSpec s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"input_size\": 40,"
                      " \"resize\": \"crop\", \"head\": {\"hidden\": 16}%s,"
                      " \"preprocess\": {\"mode\": \"custom\", \"rescale\": 0.00392,"
                      "   \"mean\": [0.5, 0.4, 0.3], \"std\": [0.2, 0.25, 0.3], \"channels\": \"bgr\"},"
                      " \"phases\": [{\"epochs\": 1, \"train\": \"stage:5\","
                      "   \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}}]}", "");
    Export e;
    memset(&e, 0, sizeof e);
    snprintf(e.path, sizeof e.path, "%s", testutil_tmp_path("export.safetensors"));
    TrainCallbacks cb = {&e, on_phase, on_step, on_epoch, NULL, export_and_score, NULL, NULL};
    TrainResult res;
    Error err;
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    jobspec_free(&s);
    Predictor *pr;
    if (predictor_load(&pr, e.path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(predictor_classes(pr), 3);
    assert_int_equal(predictor_input_size(pr), 40);
    Prediction top[5];
    int n;
    if (predictor_run_file(pr, e.image, 5, top, &n, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(n, 3); /* clamped to the class count */
    assert_true(top[0].prob >= top[1].prob && top[1].prob >= top[2].prob);
    float total = 0;
    for (int i = 0; i < 3; i++) {
        total += top[i].prob;
        assert_true(fabsf(top[i].prob - e.probs[top[i].index]) < 1e-6f);
    }
    assert_true(fabsf(total - 1.0f) < 1e-5f);
    static const char *names[] = {"bag", "t-shirt_top", "trouser"}; /* sorted class folders */
    for (int i = 0; i < 3; i++)
        assert_string_equal(top[i].name, names[top[i].index]);
    assert_int_equal(predictor_run_file(pr, "/nonexistent.png", 1, top, &n, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent.png"));
    predictor_free(pr);
    assert_int_equal(predictor_load(&pr, "/nonexistent.safetensors", &err), -1);
}


/* ---- where weights come from: the new head, BN defaults -------------------- */

typedef struct {
    char path[4200];
    double first_loss;   /* the loss before the first optimizer step */
    int steps;
    char describe[4][320];
    int phases;
    float *head;         /* the output layer's weights as the job starts (malloc'd) */
    size_t head_n;
} Start;

static void start_model(void *ctx, const Dataset *ds, const Resnet *m, const Preprocess *p,
                        int first_epoch, int first_step)
{
    (void)ds; (void)p; (void)first_epoch; (void)first_step;
    Start *st = ctx;
    const Layer *fc = &m->layers[m->out_fc];
    st->head_n = (size_t)fc->cin * fc->cout;
    st->head = malloc(st->head_n * sizeof(float));
    assert_non_null(st->head);
    memcpy(st->head, fc->w, st->head_n * sizeof(float));
}

static void start_export(void *ctx, const Resnet *m, const Dataset *ds, const Preprocess *p)
{
    Error err;
    if (train_export(m, ds, p, ((Start *)ctx)->path, &err))
        fail_msg("%s", err.msg);
}

static void start_step(void *ctx, int epoch, int step, int steps, double loss, float lr)
{
    (void)steps; (void)lr;
    Start *st = ctx;
    if (epoch == 0 && step == 0)
        st->first_loss = loss;
    st->steps++;
}

static void start_phase(void *ctx, int phase, const PhaseSpec *ph, const char *describe)
{
    (void)ph;
    Start *st = ctx;
    if (phase < 4)
        snprintf(st->describe[phase], sizeof st->describe[phase], "%s", describe);
    st->phases++;
}

static void start_epoch(void *ctx, const EpochReport *r)
{
    (void)ctx; (void)r;
}

/* Weights that resnetd pretrained with seed 5, fine-tuned with seed 5: the new
 * head is drawn for that backbone, not the pretraining's own initial head (its
 * weights differ), and the loss before the first step is near ln(K) (one batch
 * holds the whole train split, so the figure is the split's mean). A fresh
 * head's loss exceeds ln(K) by about Var(logit) (K-1)/2K, which depends on the
 * scale of the backbone's features: over 7 pretrainings of this fixture on the
 * Haswell and SkylakeX kernels it measured 0.3% to 11% above ln 3, so the bound
 * is 20%. Replaying the pretraining's initial head measured 30% above ln 3
 * here, and 42% above ln 5 on a larger Fashion-MNIST run. */
static void test_same_seed_fine_tune_starts_fresh(void **state)
{
    (void)state;
    Start pre;
    memset(&pre, 0, sizeof pre);
    snprintf(pre.path, sizeof pre.path, "%s", testutil_tmp_path("seed5.safetensors"));
    JobSpec s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"preprocess\": \"torch\","
                      " \"input_size\": 32, \"batch_size\": 16, \"seed\": 5%s,"
                      " \"phases\": [{\"epochs\": 3, \"train\": \"all\","
                      "   \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}}]}", "");
    TrainCallbacks cb = {&pre, start_phase, start_step, start_epoch, NULL, start_export,
                         start_model, NULL};
    TrainResult res;
    Error err;
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    jobspec_free(&s);
    /* from random weights every BN learns its statistics by default */
    assert_non_null(strstr(pre.describe[0], "(53 BN with batch statistics)"));

    Start ft;
    memset(&ft, 0, sizeof ft);
    char extra[4300];
    snprintf(extra, sizeof extra, ", \"weights\": \"%s\"", pre.path);
    s = parse("{\"dataset\": \"%s\"%s, \"input_size\": 32, \"batch_size\": 96, \"seed\": 5,"
              " \"phases\": [{\"epochs\": 1, \"train\": \"head\","
              "   \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}},"
              "  {\"epochs\": 1, \"train\": \"stage:5\","
              "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.001}}]}", extra);
    cb.ctx = &ft;
    cb.on_done = NULL;
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    jobspec_free(&s);
    assert_int_equal(ft.steps, 2); /* 96 train images, one batch per epoch */
    print_message("  loss before the first step %.4f (ln 3 = %.4f)\n", ft.first_loss, log(3.0));
    assert_true(fabs(ft.first_loss - log(3.0)) < 0.2 * log(3.0));
    /* pretrained layers keep their statistics by default */
    assert_non_null(strstr(ft.describe[0], "(0 BN with batch statistics)"));
    assert_non_null(strstr(ft.describe[1], "(0 BN with batch statistics)"));
    /* a new head, not the pretraining's initial one, though of the same shape */
    assert_int_equal(ft.head_n, pre.head_n);
    assert_true(memcmp(ft.head, pre.head, ft.head_n * sizeof(float)) != 0);
    free(pre.head);
    free(ft.head);
}

typedef struct {
    Log log;
    int n;
    double train_loss[8], val_loss[8], val_acc[8];
    int cancel_after;        /* set the cancel flag after this many epochs */
} Curve;

static void curve_epoch(void *ctx, const EpochReport *r)
{
    Curve *c = ctx;
    assert_true(c->n < 8);
    c->train_loss[c->n] = r->train_loss;
    c->val_loss[c->n] = r->val_loss;
    c->val_acc[c->n] = r->val_accuracy;
    c->n++;
    if (c->cancel_after && c->n == c->cancel_after)
        c->log.cancel = 1;
}

/* 5 epochs straight equal 2 + (interrupted) + resume + 3, to 1e-5: the checkpoint
 * carries parameters, optimizer, schedule, early-stopping and dropout state, and
 * the loader's shuffles and augmentation depend only on (seed, epoch). */
static void test_checkpoint_resume_matches(void **state)
{
    (void)state;
    JobSpec s = parse("{\"dataset\": \"%s\", \"weights\": \"random\", \"preprocess\": \"torch\","
                      " \"input_size\": 32, \"batch_size\": 16, \"seed\": 11%s,"
                      " \"augment\": {\"hflip\": true}, \"head\": {\"hidden\": 16, \"dropout\": 0.3},"
                      " \"early_stopping\": {\"patience\": 5},"
                      " \"phases\": [{\"epochs\": 3, \"train\": \"stage:4\", \"bn\": \"train\","
                      "   \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001},"
                      "   \"lr_schedule\": {\"type\": \"cosine\", \"warmup_epochs\": 1}},"
                      "  {\"epochs\": 2, \"train\": \"head\","
                      "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01, \"momentum\": 0.9}}]}", "");
    Error err;
    TrainResult res;
    Curve a;
    memset(&a, 0, sizeof a);
    TrainCallbacks cb = {&a, on_phase, on_step, curve_epoch, &a.log.cancel, NULL, NULL, NULL};
    if (train_run(&s, NULL, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(a.n, 5);

    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s", testutil_tmp_path("job.ckpt"));
    TrainOptions to = {.checkpoint_path = ckpt, .resume = 1};
    Curve b;
    memset(&b, 0, sizeof b);
    b.cancel_after = 2;
    cb.ctx = &b;
    cb.cancel = &b.log.cancel;
    if (train_run(&s, &to, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(res.cancelled, 1);
    assert_int_equal(b.n, 2);
    Curve c;
    memset(&c, 0, sizeof c);
    cb.ctx = &c;
    cb.cancel = &c.log.cancel;
    if (train_run(&s, &to, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(res.epochs_run, 5);
    assert_int_equal(c.n, 3);
    for (int e = 0; e < 5; e++) {
        const Curve *got = e < 2 ? &b : &c;
        int k = e < 2 ? e : e - 2;
        print_message("  epoch %d: train %.6f/%.6f val %.6f/%.6f\n", e + 1, a.train_loss[e],
                      got->train_loss[k], a.val_loss[e], got->val_loss[k]);
        assert_true(fabs(a.train_loss[e] - got->train_loss[k]) <= 1e-5 * fabs(a.train_loss[e]));
        assert_true(fabs(a.val_loss[e] - got->val_loss[k]) <= 1e-5 * fabs(a.val_loss[e]));
        assert_true(fabs(a.val_acc[e] - got->val_acc[k]) <= 1e-5);
    }

    /* stopped in the middle of epoch 2 (a daemon shutting down: checkpoint_on_cancel),
     * resumed at its next batch: the same 5 epochs */
    char ckpt2[4096];
    snprintf(ckpt2, sizeof ckpt2, "%s", testutil_tmp_path("job-mid.ckpt"));
    static volatile int shutting_down = 1;
    TrainOptions mid = {.checkpoint_path = ckpt2, .resume = 1,
                        .checkpoint_on_cancel = &shutting_down};
    Curve d, e2;
    memset(&d, 0, sizeof d);
    memset(&e2, 0, sizeof e2);
    d.log.stop_after = 8; /* 6 steps per epoch: the 2nd step of epoch 2 */
    cb.ctx = &d;
    cb.cancel = &d.log.cancel;
    if (train_run(&s, &mid, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(res.cancelled, 1);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.log.steps, 8);
    cb.ctx = &e2;
    cb.cancel = &e2.log.cancel;
    if (train_run(&s, &mid, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(e2.n, 4);
    assert_int_equal(e2.log.steps, 5 * 6 - 8); /* the rest of the steps, each once */
    for (int e = 0; e < 5; e++) {
        const Curve *got = e < 1 ? &d : &e2;
        int k = e < 1 ? e : e - 1;
        print_message("  epoch %d (stopped mid-epoch 2): train %.6f/%.6f val %.6f/%.6f\n", e + 1,
                      a.train_loss[e], got->train_loss[k], a.val_loss[e], got->val_loss[k]);
        assert_true(fabs(a.train_loss[e] - got->train_loss[k]) <= 1e-5 * fabs(a.train_loss[e]));
        assert_true(fabs(a.val_loss[e] - got->val_loss[k]) <= 1e-5 * fabs(a.val_loss[e]));
        assert_true(fabs(a.val_acc[e] - got->val_acc[k]) <= 1e-5);
    }
    /* with a checkpoint interval longer than the job, no epoch writes one (a
     * cancel is not a stop), and a resume starts over: its first epoch is epoch 1 */
    char ckpt3[4096];
    snprintf(ckpt3, sizeof ckpt3, "%s", testutil_tmp_path("job-sparse.ckpt"));
    TrainOptions sparse = {.checkpoint_path = ckpt3, .resume = 1, .checkpoint_interval_s = 1e9};
    Curve f1, f2;
    memset(&f1, 0, sizeof f1);
    memset(&f2, 0, sizeof f2);
    f1.cancel_after = 2;
    cb.ctx = &f1;
    cb.cancel = &f1.log.cancel;
    if (train_run(&s, &sparse, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(f1.n, 2);
    assert_int_equal(access(ckpt3, F_OK), -1);
    f2.cancel_after = 1;
    cb.ctx = &f2;
    cb.cancel = &f2.log.cancel;
    if (train_run(&s, &sparse, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(f2.n, 1);
    assert_true(fabs(a.train_loss[0] - f2.train_loss[0]) <= 1e-5 * fabs(a.train_loss[0]));
    /* a checkpoint of another job is refused, naming the difference */
    JobSpec other = s;
    other.batch_size = 8;
    assert_int_equal(train_run(&other, &to, NULL, &res, &err), -1);
    assert_non_null(strstr(err.msg, "different job"));
    /* a damaged checkpoint is a clear error, not a crash */
    FILE *f = fopen(ckpt, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fclose(f);
    assert_int_equal(truncate(ckpt, len / 2), 0);
    assert_int_equal(train_run(&s, &to, NULL, &res, &err), -1);
    assert_non_null(strstr(err.msg, "checkpoint"));
    jobspec_free(&s);
}

typedef struct {
    Curve curve;
    int cached_phases, spilled_phases;
    double seconds[8];
    int64_t full_forwards[8];
    const char *spill_dir;
    int spill_entries; /* files in spill_dir seen during the epochs */
} CacheRun;

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void cache_phase(void *ctx, int phase, const PhaseSpec *ph, const char *describe)
{
    (void)phase; (void)ph;
    ((CacheRun *)ctx)->cached_phases += strstr(describe, "computed once") != NULL;
    ((CacheRun *)ctx)->spilled_phases += strstr(describe, "spilled to a file") != NULL;
}

static void cache_epoch(void *ctx, const EpochReport *r)
{
    CacheRun *c = ctx;
    c->seconds[c->curve.n] = r->seconds;
    c->full_forwards[c->curve.n] = r->full_forwards;
    if (c->spill_dir)
        c->spill_entries += count_entries(c->spill_dir);
    curve_epoch(ctx, r);
}

/* With the frozen part computed once, a head phase and a stage:5 phase give the
 * metrics of the uncached run (to 1e-5), faster. */
static void test_activation_cache_matches(void **state)
{
    (void)state;
    Error err;
    ResnetConfig cfg = {RESNET_KERAS, 4, 0, 0.0f};
    Resnet *src;
    if (resnet_create(&src, &cfg, &err))
        fail_msg("%s", err.msg);
    resnet_init_random(src, 5);
    const char *wpath = testutil_tmp_path("pre-keras.safetensors");
    if (weights_save(src, wpath, NAMING_KERAS, WEIGHTS_PARAMS, "torch", NULL, 0, &err))
        fail_msg("%s", err.msg);
    resnet_free(src);
    char extra[4200];
    snprintf(extra, sizeof extra, ", \"weights\": \"%s\"", wpath);
    JobSpec s = parse("{\"dataset\": \"%s\"%s, \"input_size\": 32, \"batch_size\": 16,"
                      " \"head\": {\"hidden\": 8, \"dropout\": 0.2}, \"seed\": 4,"
                      " \"phases\": [{\"epochs\": 3, \"train\": \"head\","
                      "   \"optimizer\": {\"type\": \"adam\", \"lr\": 0.01}},"
                      "  {\"epochs\": 2, \"train\": \"stage:5\", \"bn\": \"train\","
                      "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.01, \"momentum\": 0.9}}]}", extra);
    CacheRun plain, cached, spilled, nowhere;
    memset(&plain, 0, sizeof plain);
    memset(&cached, 0, sizeof cached);
    memset(&spilled, 0, sizeof spilled);
    memset(&nowhere, 0, sizeof nowhere);
    char spill_dir[4200];
    snprintf(spill_dir, sizeof spill_dir, "%s", testutil_tmp_path("spill"));
    assert_int_equal(mkdir(spill_dir, 0700), 0);
    spilled.spill_dir = spill_dir;
    TrainOptions off = {.no_activation_cache = 1}, on = {.checkpoint_path = NULL};
    /* a budget of one byte: the cache goes to a file, or nowhere without a folder */
    TrainOptions spill = {.activation_cache_bytes = 1, .spill_dir = spill_dir},
                 tight = {.activation_cache_bytes = 1};
    TrainResult res;
    TrainCallbacks cb = {&plain, cache_phase, on_step, cache_epoch, NULL, NULL, NULL, NULL};
    if (train_run(&s, &off, &cb, &res, &err))
        fail_msg("%s", err.msg);
    cb.ctx = &cached;
    if (train_run(&s, &on, &cb, &res, &err))
        fail_msg("%s", err.msg);
    cb.ctx = &spilled;
    if (train_run(&s, &spill, &cb, &res, &err))
        fail_msg("%s", err.msg);
    cb.ctx = &nowhere;
    if (train_run(&s, &tight, &cb, &res, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(plain.cached_phases, 0);
    assert_int_equal(cached.cached_phases, 2);
    assert_int_equal(cached.spilled_phases, 0);
    assert_int_equal(spilled.cached_phases, 2);
    assert_int_equal(spilled.spilled_phases, 2);
    assert_int_equal(nowhere.cached_phases, 0);
    /* the spill file is unlinked as soon as it is mapped: never visible, never left */
    assert_int_equal(spilled.spill_entries, 0);
    assert_int_equal(count_entries(spill_dir), 0);
    const CacheRun *runs[3] = {&cached, &spilled, &nowhere};
    for (int k = 0; k < 3; k++)
        assert_int_equal(runs[k]->curve.n, 5);
    /* the 120 images (train and val) go through the whole network once per phase when
     * cached, every epoch otherwise */
    for (int e = 0; e < 5; e++) {
        int first_of_phase = e == 0 || e == 3;
        assert_int_equal(plain.full_forwards[e], 120);
        assert_int_equal(nowhere.full_forwards[e], 120);
        assert_int_equal(cached.full_forwards[e], first_of_phase ? 120 : 0);
        assert_int_equal(spilled.full_forwards[e], first_of_phase ? 120 : 0);
    }
    for (int e = 0; e < 5; e++) {
        print_message("  epoch %d: val loss %.6f / %.6f / %.6f, %.2f s / %.2f s / %.2f s\n",
                      e + 1, plain.curve.val_loss[e], cached.curve.val_loss[e],
                      spilled.curve.val_loss[e], plain.seconds[e], cached.seconds[e],
                      spilled.seconds[e]);
        for (int k = 0; k < 3; k++) {
            const Curve *c = &runs[k]->curve;
            assert_true(fabs(plain.curve.train_loss[e] - c->train_loss[e]) <=
                        1e-5 * fabs(plain.curve.train_loss[e]));
            assert_true(fabs(plain.curve.val_loss[e] - c->val_loss[e]) <=
                        1e-5 * fabs(plain.curve.val_loss[e]));
            assert_true(fabs(plain.curve.val_acc[e] - c->val_acc[e]) <= 1e-5);
        }
    }
    jobspec_free(&s);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns),
        cmocka_unit_test(test_head_only_keeps_backbone),
        cmocka_unit_test(test_cancel_within_a_batch),
        cmocka_unit_test(test_bad_job_inputs),
        cmocka_unit_test(test_export_and_predict),
        cmocka_unit_test(test_checkpoint_resume_matches),
        cmocka_unit_test(test_activation_cache_matches),
        cmocka_unit_test(test_same_seed_fine_tune_starts_fresh),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
