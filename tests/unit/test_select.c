/*
 * test_select.c: the `train` selectors. The Keras layer order is rebuilt here from
 * the block structure independently of core/select.c, keras_last:50 is checked
 * against the list written out by hand from REFERENCE.md, and every selector is
 * checked on both variants, with and without a hidden head layer.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet.h"
#include "select.h"

static Resnet *model(ResnetVariant v, int hidden)
{
    Error err;
    ResnetConfig cfg = {v, 5, hidden, 0.0f};
    Resnet *m = NULL;
    if (resnet_create(&m, &cfg, &err))
        fail_msg("%s", err.msg);
    return m;
}

/* The three models every selector test runs on. */
#define N_MODELS 3
static Resnet *models[N_MODELS];

static int setup(void **state)
{
    (void)state;
    models[0] = model(RESNET_TORCHVISION, 0);
    models[1] = model(RESNET_KERAS, 0);
    models[2] = model(RESNET_KERAS, 64);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_MODELS; i++)
        resnet_free(models[i]);
    return 0;
}

static int is_head(const Resnet *m, int i)
{
    return i == m->out_fc || (m->hidden_fc >= 0 && i == m->hidden_fc);
}

static int n_head(const Resnet *m)
{
    return m->hidden_fc >= 0 ? 2 : 1;
}

static void select_ok(Resnet *m, const char *sel, BnMode bn, int *n)
{
    Error err = {{0}};
    if (select_trainable(m, sel, bn, n, &err))
        fail_msg("%s: %s", sel, err.msg);
}

static int count_trainable(const Resnet *m)
{
    int n = 0;
    for (int i = 0; i < m->n_layers; i++)
        n += m->layers[i].trainable;
    return n;
}

/* Asserts that selectors a and b give the same trainable flags. */
static void assert_same(Resnet *m, const char *a, const char *b)
{
    int ta[RESNET_MAX_LAYERS], na, nb;
    select_ok(m, a, BN_TRAIN, &na);
    for (int i = 0; i < m->n_layers; i++)
        ta[i] = m->layers[i].trainable;
    select_ok(m, b, BN_TRAIN, &nb);
    for (int i = 0; i < m->n_layers; i++)
        if (ta[i] != m->layers[i].trainable)
            fail_msg("%s vs %s differ at %s", a, b, m->layers[i].keras_name);
    assert_int_equal(na, nb);
}

/* ---- the Keras layer list ------------------------------------------------ */

/* Built from REFERENCE.md's description: the stem's 7 layers, then per block the
 * main path with the shortcut conv inserted after _2_relu and its BN after _3_conv. */
static int reference_keras_names(char out[][SELECT_NAME_MAX])
{
    static const int blocks[4] = {3, 4, 6, 3};
    static const char *stem =
        "input_layer conv1_pad conv1_conv conv1_bn conv1_relu pool1_pad pool1_pool";
    int n = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", stem);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " "))
        snprintf(out[n++], SELECT_NAME_MAX, "%s", tok);
    for (int s = 2; s <= 5; s++)
        for (int b = 1; b <= blocks[s - 2]; b++) {
            const char *main_path[] = {"1_conv", "1_bn", "1_relu", "2_conv", "2_bn", "2_relu",
                                       "3_conv", "3_bn", "add", "out"};
            for (int i = 0; i < 10; i++) {
                if (b == 1 && i == 6)
                    snprintf(out[n++], SELECT_NAME_MAX, "conv%d_block%d_0_conv", s, b);
                snprintf(out[n++], SELECT_NAME_MAX, "conv%d_block%d_%s", s, b, main_path[i]);
                if (b == 1 && i == 6)
                    snprintf(out[n++], SELECT_NAME_MAX, "conv%d_block%d_0_bn", s, b);
            }
        }
    return n;
}

static void test_keras_names_match_block_structure(void **state)
{
    (void)state;
    char want[200][SELECT_NAME_MAX], got[SELECT_KERAS_LAYERS + 1][SELECT_NAME_MAX];
    int nw = reference_keras_names(want);
    assert_int_equal(nw, 175);
    assert_int_equal(SELECT_KERAS_LAYERS, 175);
    strcpy(got[SELECT_KERAS_LAYERS], "sentinel");
    assert_int_equal(select_keras_layer_names(got, SELECT_KERAS_LAYERS), 175);
    for (int i = 0; i < nw; i++)
        if (strcmp(got[i], want[i]))
            fail_msg("layer %d: got %s, want %s", i, got[i], want[i]);
    assert_string_equal(got[SELECT_KERAS_LAYERS], "sentinel");
    /* a few positions that Keras's model.summary() shows */
    assert_string_equal(got[0], "input_layer");
    assert_string_equal(got[7], "conv2_block1_1_conv");
    assert_string_equal(got[13], "conv2_block1_0_conv");
    assert_string_equal(got[14], "conv2_block1_3_conv");
    assert_string_equal(got[15], "conv2_block1_0_bn");
    assert_string_equal(got[174], "conv5_block3_out");
    assert_string_equal(got[175 - 50], "conv4_block5_1_relu");

    /* a short buffer is filled only as far as max; the total is still returned */
    char few[4][SELECT_NAME_MAX];
    strcpy(few[3], "untouched");
    assert_int_equal(select_keras_layer_names(few, 3), 175);
    assert_string_equal(few[2], "conv1_conv");
    assert_string_equal(few[3], "untouched");
    assert_int_equal(select_keras_layer_names(NULL, 0), 175);
}

/* Every conv and BN of either variant appears exactly once in the Keras list, and
 * the list has no other weighted layer (53 convs + 53 BNs). */
static void test_every_weight_layer_has_one_keras_name(void **state)
{
    (void)state;
    char names[SELECT_KERAS_LAYERS][SELECT_NAME_MAX];
    select_keras_layer_names(names, SELECT_KERAS_LAYERS);
    int weighted = 0;
    for (int j = 0; j < SELECT_KERAS_LAYERS; j++) {
        size_t len = strlen(names[j]);
        weighted += (len > 5 && !strcmp(names[j] + len - 5, "_conv")) ||
                    (len > 3 && !strcmp(names[j] + len - 3, "_bn"));
    }
    assert_int_equal(weighted, 106);
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        int matched = 0;
        for (int i = 0; i < m->n_layers; i++) {
            if (m->layers[i].kind == LAYER_DENSE)
                continue;
            int hits = 0;
            for (int j = 0; j < SELECT_KERAS_LAYERS; j++)
                hits += !strcmp(m->layers[i].keras_name, names[j]);
            if (hits != 1)
                fail_msg("%s appears %d times", m->layers[i].keras_name, hits);
            matched++;
        }
        assert_int_equal(matched, 106);
    }
}

/* ---- keras_last ---------------------------------------------------------- */

/* model.layers[-50:] without the top, weighted layers only, in this graph's layer
 * order (conv, BN per position; the shortcut conv/BN after _3_bn). */
static const char *const KERAS_LAST_50[] = {
    "conv4_block5_2_conv", "conv4_block5_2_bn", "conv4_block5_3_conv", "conv4_block5_3_bn",
    "conv4_block6_1_conv", "conv4_block6_1_bn", "conv4_block6_2_conv", "conv4_block6_2_bn",
    "conv4_block6_3_conv", "conv4_block6_3_bn",
    "conv5_block1_1_conv", "conv5_block1_1_bn", "conv5_block1_2_conv", "conv5_block1_2_bn",
    "conv5_block1_3_conv", "conv5_block1_3_bn", "conv5_block1_0_conv", "conv5_block1_0_bn",
    "conv5_block2_1_conv", "conv5_block2_1_bn", "conv5_block2_2_conv", "conv5_block2_2_bn",
    "conv5_block2_3_conv", "conv5_block2_3_bn",
    "conv5_block3_1_conv", "conv5_block3_1_bn", "conv5_block3_2_conv", "conv5_block3_2_bn",
    "conv5_block3_3_conv", "conv5_block3_3_bn",
};

/* Asserts that exactly the listed backbone layers (in layer order) and the head are
 * trainable, and that n_selected says so. */
static void assert_backbone_selection(const Resnet *m, const char *sel, int n_selected,
                                      const char *const *want, int n_want)
{
    int k = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const Layer *l = &m->layers[i];
        if (is_head(m, i)) {
            if (!l->trainable)
                fail_msg("%s: head layer %s frozen", sel, l->name);
            continue;
        }
        if (!l->trainable)
            continue;
        if (k >= n_want || strcmp(l->keras_name, want[k]))
            fail_msg("%s: trainable #%d is %s, want %s", sel, k, l->keras_name,
                     k < n_want ? want[k] : "(nothing)");
        k++;
    }
    if (k != n_want)
        fail_msg("%s: %d trainable backbone layers, want %d", sel, k, n_want);
    assert_int_equal(n_selected, n_want + n_head(m));
    assert_int_equal(count_trainable(m), n_selected);
}

static void test_keras_last_50(void **state)
{
    (void)state;
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        int n = -1;
        select_ok(m, "keras_last:50", BN_FROZEN, &n);
        assert_backbone_selection(m, "keras_last:50", n, KERAS_LAST_50, 30);
        assert_int_equal(n, 30 + n_head(m));
        assert_false(m->layers[resnet_find_layer(m, "conv4_block5_1_conv")].trainable);
        assert_false(m->layers[resnet_find_layer(m, "conv4_block5_1_bn")].trainable);
        assert_true(m->layers[resnet_find_layer(m, "layer3.4.conv2")].trainable);
    }
}

static void test_keras_last_tail_without_weights(void **state)
{
    (void)state;
    static const char *const last3[] = {"conv5_block3_3_bn"};
    static const char *const last4[] = {"conv5_block3_3_conv", "conv5_block3_3_bn"};
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        int n;
        /* [-1:] is conv5_block3_out (ReLU), [-2:] adds conv5_block3_add: head only */
        select_ok(m, "keras_last:1", BN_TRAIN, &n);
        assert_backbone_selection(m, "keras_last:1", n, NULL, 0);
        select_ok(m, "keras_last:2", BN_TRAIN, &n);
        assert_backbone_selection(m, "keras_last:2", n, NULL, 0);
        assert_same(m, "keras_last:2", "head");
        /* [-3:] reaches the last BN, [-4:] the last conv */
        select_ok(m, "keras_last:3", BN_TRAIN, &n);
        assert_backbone_selection(m, "keras_last:3", n, last3, 1);
        select_ok(m, "keras_last:4", BN_TRAIN, &n);
        assert_backbone_selection(m, "keras_last:4", n, last4, 2);
    }
}

static void test_keras_last_whole_model(void **state)
{
    (void)state;
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        int n;
        select_ok(m, "keras_last:175", BN_TRAIN, &n);
        assert_int_equal(n, m->n_layers);
        assert_same(m, "keras_last:175", "all");
        /* the input layer has no weights */
        assert_same(m, "keras_last:174", "all");
        /* 175 - 7 stem layers = all of conv2..conv5 */
        assert_same(m, "keras_last:168", "stage:2");
        /* conv5 is 32 layers, conv4..5 62 + 32 */
        assert_same(m, "keras_last:32", "stage:5");
        assert_same(m, "keras_last:94", "stage:4");
        assert_same(m, "keras_last:42", "from:conv4_block6");
    }
}

/* ---- head, all, stage, from ---------------------------------------------- */

static void test_head_and_all(void **state)
{
    (void)state;
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        int n;
        select_ok(m, "head", BN_TRAIN, &n);
        assert_int_equal(n, n_head(m));
        for (int i = 0; i < m->n_layers; i++)
            assert_int_equal(m->layers[i].trainable, is_head(m, i));
        select_ok(m, "all", BN_TRAIN, &n);
        assert_int_equal(n, m->n_layers);
        assert_int_equal(n, 106 + n_head(m));
        for (int i = 0; i < m->n_layers; i++)
            assert_true(m->layers[i].trainable);
    }
}

/* Trainable iff the layer is in Keras stage >= first (by its name) or in the head. */
static void assert_stages_from(const Resnet *m, int first, int n)
{
    int want_n = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const char *kn = m->layers[i].keras_name;
        int stage = (!strncmp(kn, "conv", 4) && kn[4] >= '2' && kn[4] <= '5' && kn[5] == '_')
                        ? kn[4] - '0' : 0;
        int want = is_head(m, i) || stage >= first;
        if (m->layers[i].trainable != want)
            fail_msg("stage:%d: %s trainable %d, want %d", first, kn, m->layers[i].trainable,
                     want);
        want_n += want;
    }
    assert_int_equal(n, want_n);
}

static void test_stage(void **state)
{
    (void)state;
    /* weighted layers per stage: 2 stem, then 2 + 6 per block */
    static const int backbone_from[6] = {0, 0, 104, 84, 58, 20};
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        for (int s = 2; s <= 5; s++) {
            char sel[32];
            int n;
            snprintf(sel, sizeof sel, "stage:%d", s);
            select_ok(m, sel, BN_TRAIN, &n);
            assert_stages_from(m, s, n);
            assert_int_equal(n, backbone_from[s] + n_head(m));
        }
        /* stage:2 is everything but the stem */
        select_ok(m, "stage:2", BN_TRAIN, NULL);
        assert_false(m->layers[m->stem_conv].trainable);
        assert_false(m->layers[m->stem_bn].trainable);
        assert_int_equal(count_trainable(m), m->n_layers - 2);
        /* Keras convN is torchvision layer(N-1) */
        select_ok(m, "stage:5", BN_TRAIN, NULL);
        assert_true(m->layers[resnet_find_layer(m, "layer4.0.downsample.0")].trainable);
        assert_false(m->layers[resnet_find_layer(m, "layer3.5.bn3")].trainable);
    }
}

static void test_from(void **state)
{
    (void)state;
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        int n;
        select_ok(m, "from:conv4_block6", BN_TRAIN, &n);
        for (int i = 0; i < m->n_layers; i++) {
            const char *kn = m->layers[i].keras_name;
            int want = is_head(m, i) || !strncmp(kn, "conv5_", 6) ||
                       !strncmp(kn, "conv4_block6_", 13);
            if (m->layers[i].trainable != want)
                fail_msg("from:conv4_block6: %s trainable %d", kn, m->layers[i].trainable);
        }
        assert_int_equal(n, 6 + 20 + n_head(m));
        assert_same(m, "from:conv4_block6", "from:layer3.5");
        assert_same(m, "from:conv2_block1", "from:layer1.0");
        assert_same(m, "from:conv2_block1", "stage:2");
        assert_same(m, "from:layer4.0", "stage:5");
        assert_same(m, "from:conv3_block1", "stage:3");
        assert_same(m, "from:conv1", "all");
        assert_same(m, "from:stem", "all");
        /* conv5_block3 is the last block: its 6 layers and the head */
        select_ok(m, "from:layer4.2", BN_TRAIN, &n);
        assert_int_equal(n, 6 + n_head(m));
        assert_true(m->layers[resnet_find_layer(m, "conv5_block3_1_conv")].trainable);
        assert_false(m->layers[resnet_find_layer(m, "conv5_block2_3_bn")].trainable);
    }
}

/* ---- batch statistics ---------------------------------------------------- */

/* Marks every layer as loaded from a file except the head and, when
 * random_from is a layer index, every layer from it on (a partly pretrained
 * model). */
static void mark_loaded(Resnet *m, int random_from)
{
    for (int i = 0; i < m->n_layers; i++)
        m->layers[i].loaded = i != m->out_fc && i != m->hidden_fc &&
                              (random_from < 0 || i < random_from);
}

static void test_batch_stats_follow_bn(void **state)
{
    (void)state;
    static const char *const sels[] = {"head", "all", "stage:4", "from:layer3.5",
                                       "keras_last:50", "keras_last:3"};
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        /* loaded up to conv4_block1, random from there: auto differs from both */
        mark_loaded(m, resnet_find_layer(m, "conv4_block1_1_conv"));
        for (size_t s = 0; s < sizeof sels / sizeof sels[0]; s++)
            for (BnMode bn = BN_AUTO; bn <= BN_TRAIN; bn++) {
                /* start from the opposite state, so stale flags would show */
                resnet_set_trainable_all(m, 1, 1);
                select_ok(m, sels[s], bn, NULL);
                int n_bs = 0, n_bn_trainable = 0, n_random = 0;
                for (int i = 0; i < m->n_layers; i++) {
                    const Layer *l = &m->layers[i];
                    int bn_trainable = l->kind == LAYER_BN && l->trainable;
                    int want = bn_trainable && (bn == BN_TRAIN || (bn == BN_AUTO && !l->loaded));
                    if (l->batch_stats != want)
                        fail_msg("%s bn=%s: %s batch_stats %d", sels[s], select_bn_name(bn),
                                 l->keras_name, l->batch_stats);
                    n_bs += l->batch_stats;
                    n_bn_trainable += bn_trainable;
                    n_random += bn_trainable && !l->loaded;
                }
                assert_int_equal(n_bs, bn == BN_TRAIN  ? n_bn_trainable
                                       : bn == BN_AUTO ? n_random : 0);
                /* frozen BN of random layers is exactly what "frozen" leaves */
                assert_int_equal(select_frozen_random_bn(m), bn == BN_FROZEN ? n_random : 0);
            }
        select_ok(m, "all", BN_AUTO, NULL);
        assert_int_equal(m->layers[resnet_find_layer(m, "conv5_block3_3_bn")].batch_stats, 1);
        assert_int_equal(m->layers[resnet_find_layer(m, "conv3_block4_3_bn")].batch_stats, 0);
        assert_int_equal(m->layers[resnet_find_layer(m, "conv5_block3_3_conv")].batch_stats, 0);
        /* a model from random weights trains every trainable BN by default */
        mark_loaded(m, 0);
        select_ok(m, "stage:5", BN_AUTO, NULL);
        assert_int_equal(m->layers[resnet_find_layer(m, "conv5_block1_1_bn")].batch_stats, 1);
        assert_int_equal(m->layers[resnet_find_layer(m, "conv4_block6_3_bn")].batch_stats, 0);
        mark_loaded(m, -1);
    }
}

/* ---- errors -------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    static const struct { const char *sel, *msg; } cases[] = {
        {"foo", "train: unknown selector 'foo' (expected head, all, stage:2..5, from:BLOCK, "
                "keras_last:1..175)"},
        {"", "train: unknown selector ''"},
        {"HEAD", "unknown selector 'HEAD'"},
        {" head", "unknown selector ' head'"},
        {"head ", "unknown selector 'head '"},
        {"stage", "unknown selector 'stage'"},
        {"keras_last50", "unknown selector 'keras_last50'"},
        {"stage:7", "train: stage:7 is out of range 2..5"},
        {"stage:1", "train: stage:1 is out of range 2..5"},
        {"stage:0", "train: stage:0 is out of range 2..5"},
        {"stage:", "train: stage:: expected stage:N with N in 2..5"},
        {"stage:x", "train: stage:x: expected stage:N with N in 2..5"},
        {"stage:-3", "train: stage:-3: expected stage:N"},
        {"stage:+3", "train: stage:+3: expected stage:N"},
        {"stage:3x", "train: stage:3x: expected stage:N"},
        {"stage: 3", "train: stage: 3: expected stage:N"},
        {"from:conv9_block1", "train: from:conv9_block1: no such block"},
        {"from:conv4_block7", "train: from:conv4_block7: no such block"},
        {"from:conv2_block0", "train: from:conv2_block0: no such block"},
        {"from:conv1_block1", "train: from:conv1_block1: no such block"},
        {"from:layer3.6", "train: from:layer3.6: no such block"},
        {"from:layer0.0", "train: from:layer0.0: no such block"},
        {"from:layer5.0", "train: from:layer5.0: no such block"},
        {"from:layer3.5x", "train: from:layer3.5x: no such block"},
        {"from:layer3", "train: from:layer3: no such block"},
        {"from:conv4_block6_1_conv", "train: from:conv4_block6_1_conv: no such block"},
        {"from:", "train: from:: no such block"},
        {"from:head", "train: from:head: no such block (expected from:conv1, from:stem, "
                      "from:convS_blockB as conv2_block1..conv5_block3 or from:layerL.B as "
                      "layer1.0..layer4.2)"},
        {"keras_last:0", "train: keras_last:0 is out of range 1..175"},
        {"keras_last:176", "train: keras_last:176 is out of range 1..175"},
        {"keras_last:99999999999999999999999", "train: keras_last:99999999999999999999999 is "
                                               "out of range 1..175"},
        {"keras_last:", "train: keras_last:: expected keras_last:N with N in 1..175"},
        {"keras_last:-5", "train: keras_last:-5: expected keras_last:N with N in 1..175"},
        {"keras_last:5.0", "train: keras_last:5.0: expected keras_last:N"},
    };
    for (int k = 0; k < N_MODELS; k++) {
        Resnet *m = models[k];
        select_ok(m, "keras_last:50", BN_TRAIN, NULL);
        int before[RESNET_MAX_LAYERS], before_bs[RESNET_MAX_LAYERS];
        for (int i = 0; i < m->n_layers; i++) {
            before[i] = m->layers[i].trainable;
            before_bs[i] = m->layers[i].batch_stats;
        }
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            Error err = {{0}};
            int n = -12345;
            if (select_trainable(m, cases[c].sel, BN_TRAIN, &n, &err) != -1)
                fail_msg("'%s' was accepted", cases[c].sel);
            if (!strstr(err.msg, cases[c].msg))
                fail_msg("'%s': message \"%s\" lacks \"%s\"", cases[c].sel, err.msg,
                         cases[c].msg);
            assert_int_equal(n, -12345);
            for (int i = 0; i < m->n_layers; i++)
                if (m->layers[i].trainable != before[i] ||
                    m->layers[i].batch_stats != before_bs[i])
                    fail_msg("'%s' changed %s", cases[c].sel, m->layers[i].keras_name);
        }
        Error err = {{0}};
        assert_int_equal(select_trainable(m, NULL, BN_FROZEN, NULL, &err), -1);
        assert_non_null(strstr(err.msg, "train: no selector given (expected head, all"));
        /* a NULL Error is allowed */
        assert_int_equal(select_trainable(m, "stage:9", BN_FROZEN, NULL, NULL), -1);
    }
}

/* ---- describe ------------------------------------------------------------ */

static void test_describe(void **state)
{
    (void)state;
    Resnet *m = models[0];
    char buf[256];
    select_ok(m, "head", BN_FROZEN, NULL);
    /* the classifier is 2048 x 5 + 5 */
    assert_string_equal(select_describe(m, buf, sizeof buf),
                        "1 of 107 layers trainable (0 BN with batch statistics), 10245 of "
                        "23518277 parameters, lowest predictions (fc)");
    select_ok(m, "keras_last:50", BN_TRAIN, NULL);
    select_describe(m, buf, sizeof buf);
    assert_non_null(strstr(buf, "31 of 107 layers trainable (15 BN with batch statistics)"));
    assert_non_null(strstr(buf, "lowest conv4_block5_2_conv (layer3.4.conv2)"));
    select_ok(m, "all", BN_TRAIN, NULL);
    char expect[128];
    snprintf(expect, sizeof expect, "%zu of %zu parameters", resnet_param_count(m),
             resnet_param_count(m));
    assert_non_null(strstr(select_describe(m, buf, sizeof buf), expect));
    /* truncation keeps the terminator */
    char small[8];
    select_describe(m, small, sizeof small);
    assert_int_equal(strlen(small), 7);
    assert_ptr_equal(select_describe(m, small, 0), small);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keras_names_match_block_structure),
        cmocka_unit_test(test_every_weight_layer_has_one_keras_name),
        cmocka_unit_test(test_keras_last_50),
        cmocka_unit_test(test_keras_last_tail_without_weights),
        cmocka_unit_test(test_keras_last_whole_model),
        cmocka_unit_test(test_head_and_all),
        cmocka_unit_test(test_stage),
        cmocka_unit_test(test_from),
        cmocka_unit_test(test_batch_stats_follow_bn),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
