/*
 * jobspec.c: parsing and validating the job specification (see jobspec.h).
 * jansson is used here only; no jansson type leaves this file.
 */
#include "jobspec.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    Error *err;
    char *path_out;
    size_t path_len;
} Ctx;

/* Sets "path: message" and the path; returns -1. */
__attribute__((format(printf, 3, 4)))
static int fail(Ctx *c, const char *path, const char *fmt, ...)
{
    char msg[ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->path_out && c->path_len)
        snprintf(c->path_out, c->path_len, "%s", path);
    return error_set(c->err, "%s%s%s", path, *path ? ": " : "", msg);
}

/* out = base "." key (or key alone at the root), cut to len - 1 bytes: paths are
 * for messages, and a cut path still points the user at the field. */
static void join(char *out, size_t len, const char *base, const char *key)
{
    size_t o = 0;
    for (const char *s = base; *s && o + 1 < len; s++)
        out[o++] = *s;
    if (*base && o + 1 < len)
        out[o++] = '.';
    for (const char *s = key; *s && o + 1 < len; s++)
        out[o++] = *s;
    out[o] = '\0';
}

/* Fails on any key of obj not in allowed (NULL-terminated). */
static int check_keys(Ctx *c, json_t *obj, const char *path, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            ok |= !strcmp(key, allowed[i]);
        if (!ok) {
            char p[JOBSPEC_PATH_MAX], list[512] = "";
            size_t o = 0;
            for (int i = 0; allowed[i] && o < sizeof list; i++)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", allowed[i]);
            join(p, sizeof p, path, key);
            return fail(c, p, "unknown field (expected one of: %s)", list);
        }
    }
    return 0;
}

static int get_int(Ctx *c, json_t *obj, const char *path, const char *key, long long lo,
                   long long hi, int required, long long *out)
{
    char p[JOBSPEC_PATH_MAX];
    join(p, sizeof p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return fail(c, p, "is required (an integer from %lld to %lld)", lo, hi);
        return 0;
    }
    if (!json_is_integer(v))
        return fail(c, p, "must be an integer from %lld to %lld", lo, hi);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return fail(c, p, "must be an integer from %lld to %lld (got %lld)", lo, hi, x);
    *out = x;
    return 0;
}

/* A number in [lo, hi] (lo_open / hi_open exclude the bound). */
static int get_num(Ctx *c, json_t *obj, const char *path, const char *key, double lo, int lo_open,
                   double hi, int hi_open, int required, double *out)
{
    char p[JOBSPEC_PATH_MAX], range[96];
    join(p, sizeof p, path, key);
    if (isinf(hi))
        snprintf(range, sizeof range, "a number %s %g", lo_open ? ">" : ">=", lo);
    else
        snprintf(range, sizeof range, "a number in %s%g, %g%s", lo_open ? "(" : "[", lo, hi,
                 hi_open ? ")" : "]");
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return fail(c, p, "is required (%s)", range);
        return 0;
    }
    if (!json_is_number(v))
        return fail(c, p, "must be %s", range);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || (lo_open && x == lo) || x > hi || (hi_open && x == hi))
        return fail(c, p, "must be %s (got %g)", range, x);
    *out = x;
    return 0;
}

static int get_bool(Ctx *c, json_t *obj, const char *path, const char *key, int *out)
{
    char p[JOBSPEC_PATH_MAX];
    join(p, sizeof p, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return fail(c, p, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

/* A string of at most cap-1 bytes; when choices is not NULL, one of them. */
static int get_str(Ctx *c, json_t *obj, const char *path, const char *key, int required,
                   const char *const *choices, char *out, size_t cap)
{
    char p[JOBSPEC_PATH_MAX], list[256] = "";
    join(p, sizeof p, path, key);
    size_t o = 0;
    for (int i = 0; choices && choices[i]; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s\"%s\"", i ? ", " : "", choices[i]);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return choices ? fail(c, p, "is required (one of %s)", list)
                           : fail(c, p, "is required (a string)");
        return 0;
    }
    if (!json_is_string(v))
        return choices ? fail(c, p, "must be one of %s", list) : fail(c, p, "must be a string");
    const char *s = json_string_value(v);
    if (strlen(s) >= cap)
        return fail(c, p, "is too long (at most %zu bytes)", cap - 1);
    if (!choices && !*s)
        return fail(c, p, "must not be empty");
    if (choices) {
        int ok = 0;
        for (int i = 0; choices[i]; i++)
            ok |= !strcmp(s, choices[i]);
        if (!ok)
            return fail(c, p, "must be one of %s (got \"%s\")", list, s);
    }
    snprintf(out, cap, "%s", s);
    return 0;
}

static int find_choice(const char *s, const char *const *choices)
{
    for (int i = 0; choices[i]; i++)
        if (!strcmp(s, choices[i]))
            return i;
    return -1;
}

/* Syntax of a trainable selector (the model checks block names later). */
static int check_selector(Ctx *c, const char *path, const char *s)
{
    char *end;
    if (!strcmp(s, "head") || !strcmp(s, "all"))
        return 0;
    if (!strncmp(s, "stage:", 6)) {
        long n = strtol(s + 6, &end, 10);
        if (end == s + 6 || *end || n < 2 || n > 5)
            return fail(c, path, "stage:N needs N from 2 to 5 (got \"%s\")", s);
        return 0;
    }
    if (!strncmp(s, "keras_last:", 11)) {
        long n = strtol(s + 11, &end, 10);
        if (end == s + 11 || *end || n < 1 || n > 175)
            return fail(c, path, "keras_last:N needs N from 1 to 175 (ResNet50 without top has "
                        "175 Keras layers; got \"%s\")", s);
        return 0;
    }
    if (!strncmp(s, "from:", 5) && s[5])
        return 0;
    return fail(c, path, "unknown selector \"%s\" (expected head, all, stage:2..5, from:BLOCK "
                "or keras_last:1..175)", s);
}

static int parse_optimizer(Ctx *c, json_t *o, const char *path, OptimConfig *out)
{
    static const char *const keys[] = {"type", "lr", "momentum", "nesterov", "dampening",
                                       "weight_decay", "betas", "eps", NULL};
    static const char *const types[] = {"sgd", "adam", "adamw", NULL};
    if (!json_is_object(o))
        return fail(c, path, "must be an object like {\"type\": \"adam\", \"lr\": 1e-3}");
    if (check_keys(c, o, path, keys))
        return -1;
    char type[16];
    if (get_str(c, o, path, "type", 1, types, type, sizeof type))
        return -1;
    OptimType t = (OptimType)find_choice(type, types);
    *out = optim_defaults(t);
    double x;
    if (get_num(c, o, path, "lr", 0, 1, 10, 0, 1, &x)) return -1;
    out->lr = (float)x;
    x = out->weight_decay;
    if (get_num(c, o, path, "weight_decay", 0, 0, 1, 0, 0, &x)) return -1;
    out->weight_decay = (float)x;
    char p[JOBSPEC_PATH_MAX];
    if (t == OPTIM_SGD) {
        x = 0;
        if (get_num(c, o, path, "momentum", 0, 0, 1, 1, 0, &x)) return -1;
        out->momentum = (float)x;
        x = 0;
        if (get_num(c, o, path, "dampening", 0, 0, 1, 1, 0, &x)) return -1;
        out->dampening = (float)x;
        if (get_bool(c, o, path, "nesterov", &out->nesterov)) return -1;
        join(p, sizeof p, path, "nesterov");
        if (out->nesterov && (out->momentum <= 0 || out->dampening != 0))
            return fail(c, p, "needs momentum > 0 and dampening 0 (as PyTorch requires)");
        static const char *const adam_only[] = {"betas", "eps", NULL};
        for (int i = 0; adam_only[i]; i++)
            if (json_object_get(o, adam_only[i])) {
                join(p, sizeof p, path, adam_only[i]);
                return fail(c, p, "applies to adam and adamw only");
            }
    } else {
        static const char *const sgd_only[] = {"momentum", "dampening", "nesterov", NULL};
        for (int i = 0; sgd_only[i]; i++)
            if (json_object_get(o, sgd_only[i])) {
                join(p, sizeof p, path, sgd_only[i]);
                return fail(c, p, "applies to sgd only");
            }
        json_t *b = json_object_get(o, "betas");
        join(p, sizeof p, path, "betas");
        if (b) {
            if (!json_is_array(b) || json_array_size(b) != 2 ||
                !json_is_number(json_array_get(b, 0)) || !json_is_number(json_array_get(b, 1)))
                return fail(c, p, "must be two numbers in [0, 1), like [0.9, 0.999]");
            for (int i = 0; i < 2; i++) {
                double v = json_number_value(json_array_get(b, (size_t)i));
                if (!(v >= 0 && v < 1))
                    return fail(c, p, "must be two numbers in [0, 1) (got %g)", v);
            }
            out->beta1 = (float)json_number_value(json_array_get(b, 0));
            out->beta2 = (float)json_number_value(json_array_get(b, 1));
        }
        x = out->eps;
        if (get_num(c, o, path, "eps", 0, 1, 1, 0, 0, &x)) return -1;
        out->eps = (float)x;
    }
    return 0;
}

static int parse_schedule(Ctx *c, json_t *o, const char *path, int epochs, LrSchedule *out)
{
    static const char *const keys[] = {"type", "warmup_epochs", "step_epochs", "gamma", "min_lr",
                                       "factor", "patience", NULL};
    static const char *const types[] = {"constant", "step", "cosine", "plateau", NULL};
    memset(out, 0, sizeof *out);
    out->gamma = 0.1f;
    out->factor = 0.1f;
    out->patience = 2;
    if (!o)
        return 0;
    if (!json_is_object(o))
        return fail(c, path, "must be an object like {\"type\": \"cosine\"}");
    if (check_keys(c, o, path, keys))
        return -1;
    char type[16];
    if (get_str(c, o, path, "type", 1, types, type, sizeof type))
        return -1;
    out->type = (LrScheduleType)find_choice(type, types);
    long long n = 0;
    if (get_int(c, o, path, "warmup_epochs", 0, epochs - 1, 0, &n)) return -1;
    out->warmup_epochs = (int)n;
    n = out->type == LR_STEP ? 0 : 1;
    if (get_int(c, o, path, "step_epochs", 1, 100000, out->type == LR_STEP, &n)) return -1;
    out->step_epochs = (int)n;
    double x = out->gamma;
    if (get_num(c, o, path, "gamma", 0, 1, 1, 0, 0, &x)) return -1;
    out->gamma = (float)x;
    x = 0;
    if (get_num(c, o, path, "min_lr", 0, 0, INFINITY, 0, 0, &x)) return -1;
    out->min_lr = (float)x;
    x = out->factor;
    if (get_num(c, o, path, "factor", 0, 1, 1, 1, 0, &x)) return -1;
    out->factor = (float)x;
    n = out->patience;
    if (get_int(c, o, path, "patience", 1, 100000, 0, &n)) return -1;
    out->patience = (int)n;
    return 0;
}

static int parse_phase(Ctx *c, json_t *o, const char *path, int index, PhaseSpec *ph)
{
    static const char *const keys[] = {"name", "epochs", "train", "bn", "optimizer",
                                       "lr_schedule", NULL};
    static const char *const bn[] = {"auto", "frozen", "train", NULL};
    memset(ph, 0, sizeof *ph);
    if (!json_is_object(o))
        return fail(c, path, "must be an object with epochs, train and optimizer");
    if (check_keys(c, o, path, keys))
        return -1;
    snprintf(ph->name, sizeof ph->name, "phase%d", index + 1);
    if (get_str(c, o, path, "name", 0, NULL, ph->name, sizeof ph->name)) return -1;
    long long n;
    if (get_int(c, o, path, "epochs", 1, 100000, 1, &n)) return -1;
    ph->epochs = (int)n;
    if (get_str(c, o, path, "train", 1, NULL, ph->train, sizeof ph->train)) return -1;
    char p[JOBSPEC_PATH_MAX];
    join(p, sizeof p, path, "train");
    if (check_selector(c, p, ph->train)) return -1;
    char b[16] = "auto";
    if (get_str(c, o, path, "bn", 0, bn, b, sizeof b)) return -1;
    ph->bn = !strcmp(b, "train") ? BN_TRAIN : !strcmp(b, "frozen") ? BN_FROZEN : BN_AUTO;
    join(p, sizeof p, path, "optimizer");
    json_t *opt = json_object_get(o, "optimizer");
    if (!opt)
        return fail(c, p, "is required, like {\"type\": \"adam\", \"lr\": 1e-3}");
    if (parse_optimizer(c, opt, p, &ph->optimizer)) return -1;
    join(p, sizeof p, path, "lr_schedule");
    return parse_schedule(c, json_object_get(o, "lr_schedule"), p, ph->epochs, &ph->lr_schedule);
}

static int parse_preprocess(Ctx *c, json_t *root, JobSpec *s)
{
    static const char *const modes[] = {"auto", "caffe", "torch", "tf", "custom", NULL};
    json_t *v = json_object_get(root, "preprocess");
    snprintf(s->preprocess, sizeof s->preprocess, "auto");
    if (!v || json_is_string(v))
        return get_str(c, root, "", "preprocess", 0, modes, s->preprocess, sizeof s->preprocess) ||
               (!strcmp(s->preprocess, "custom") &&
                fail(c, "preprocess", "custom needs its numbers: {\"mode\": \"custom\", "
                     "\"rescale\": ..., \"mean\": [3], \"std\": [3], \"channels\": \"rgb\"}"));
    static const char *const keys[] = {"mode", "rescale", "mean", "std", "channels", NULL};
    static const char *const custom_only[] = {"custom", NULL};
    static const char *const channels[] = {"rgb", "bgr", NULL};
    if (!json_is_object(v))
        return fail(c, "preprocess", "must be \"auto\", \"caffe\", \"torch\", \"tf\" or a custom "
                    "object");
    if (check_keys(c, v, "preprocess", keys)) return -1;
    if (get_str(c, v, "preprocess", "mode", 1, custom_only, s->preprocess, sizeof s->preprocess))
        return -1;
    Normalization *n = &s->custom;
    memset(n, 0, sizeof *n);
    n->mode = NORM_CUSTOM;
    double x;
    if (get_num(c, v, "preprocess", "rescale", 0, 1, INFINITY, 0, 1, &x)) return -1;
    n->rescale = (float)x;
    static const char *const arrays[] = {"mean", "std"};
    for (int a = 0; a < 2; a++) {
        char p[JOBSPEC_PATH_MAX];
        join(p, sizeof p, "preprocess", arrays[a]);
        json_t *arr = json_object_get(v, arrays[a]);
        if (!arr || !json_is_array(arr) || json_array_size(arr) != 3)
            return fail(c, p, "must be 3 numbers, one per channel");
        for (int i = 0; i < 3; i++) {
            json_t *e = json_array_get(arr, (size_t)i);
            double d = json_is_number(e) ? json_number_value(e) : NAN;
            if (!isfinite(d) || (a == 1 && !(d > 0)))
                return fail(c, p, "element %d must be a %snumber", i, a ? "positive " : "");
            if (a == 0) n->mean[i] = (float)d;
            else n->std[i] = (float)d;
        }
    }
    char ch[8] = "rgb";
    if (get_str(c, v, "preprocess", "channels", 0, channels, ch, sizeof ch)) return -1;
    n->bgr = !strcmp(ch, "bgr");
    return 0;
}

static int parse_root(Ctx *c, json_t *root, JobSpec *s)
{
    static const char *const keys[] = {
        "name", "dataset", "weights", "variant", "input_size", "batch_size", "seed", "preprocess",
        "preprocess_override", "resize", "augment", "head", "class_weight", "label_smoothing",
        "val_fraction", "phases", "early_stopping", "preflight", NULL};
    static const char *const resize[] = {"squash", "crop", NULL};
    static const char *const variants[] = {"torchvision", "keras", NULL};
    if (!json_is_object(root))
        return fail(c, "", "the job must be a JSON object");
    if (check_keys(c, root, "", keys)) return -1;
    snprintf(s->name, sizeof s->name, "job");
    if (get_str(c, root, "", "name", 0, NULL, s->name, sizeof s->name)) return -1;
    if (get_str(c, root, "", "dataset", 1, NULL, s->dataset, sizeof s->dataset)) return -1;
    if (get_str(c, root, "", "weights", 1, NULL, s->weights, sizeof s->weights)) return -1;
    if (get_str(c, root, "", "variant", 0, variants, s->variant, sizeof s->variant)) return -1;
    long long n = 224;
    if (get_int(c, root, "", "input_size", 32, PREPROCESS_MAX_SIZE, 0, &n)) return -1;
    s->input_size = (int)n;
    n = 32;
    if (get_int(c, root, "", "batch_size", 1, 4096, 0, &n)) return -1;
    s->batch_size = (int)n;
    n = 0;
    if (get_int(c, root, "", "seed", 0, (long long)9007199254740991LL, 0, &n)) return -1;
    s->seed = (uint64_t)n;
    if (parse_preprocess(c, root, s)) return -1;
    if (get_bool(c, root, "", "preprocess_override", &s->preprocess_override)) return -1;
    char rz[16] = "squash";
    if (get_str(c, root, "", "resize", 0, resize, rz, sizeof rz)) return -1;
    s->resize = !strcmp(rz, "crop") ? RESIZE_CROP : RESIZE_SQUASH;

    json_t *aug = json_object_get(root, "augment");
    if (aug) {
        static const char *const akeys[] = {"hflip", "random_resized_crop", NULL};
        if (!json_is_object(aug))
            return fail(c, "augment", "must be an object like {\"hflip\": true}");
        if (check_keys(c, aug, "augment", akeys)) return -1;
        if (get_bool(c, aug, "augment", "hflip", &s->augment.hflip)) return -1;
        json_t *r = json_object_get(aug, "random_resized_crop");
        if (r) {
            double lo = json_is_array(r) && json_array_size(r) == 2 &&
                                json_is_number(json_array_get(r, 0))
                            ? json_number_value(json_array_get(r, 0)) : NAN;
            double hi = json_is_array(r) && json_array_size(r) == 2 &&
                                json_is_number(json_array_get(r, 1))
                            ? json_number_value(json_array_get(r, 1)) : NAN;
            if (!(lo > 0 && lo <= hi && hi <= 1))
                return fail(c, "augment.random_resized_crop",
                            "must be [min, max] with 0 < min <= max <= 1, like [0.5, 1.0]");
            s->augment.crop_min = (float)lo;
            s->augment.crop_max = (float)hi;
        }
    }
    json_t *head = json_object_get(root, "head");
    if (head) {
        static const char *const hkeys[] = {"hidden", "dropout", NULL};
        if (!json_is_object(head))
            return fail(c, "head", "must be an object like {\"hidden\": 1024, \"dropout\": 0.2}");
        if (check_keys(c, head, "head", hkeys)) return -1;
        n = 0;
        if (get_int(c, head, "head", "hidden", 0, 65536, 0, &n)) return -1;
        s->head_hidden = (int)n;
        double d = 0;
        if (get_num(c, head, "head", "dropout", 0, 0, 1, 1, 0, &d)) return -1;
        s->head_dropout = (float)d;
    }
    json_t *cw = json_object_get(root, "class_weight");
    if (cw && json_is_string(cw)) {
        static const char *const cws[] = {"none", "balanced", NULL};
        char mode[16];
        if (get_str(c, root, "", "class_weight", 0, cws, mode, sizeof mode)) return -1;
        s->class_weight = !strcmp(mode, "balanced") ? CLASS_WEIGHT_BALANCED : CLASS_WEIGHT_NONE;
    } else if (cw && json_is_object(cw)) {
        size_t k = json_object_size(cw);
        if (k == 0 || k > JOBSPEC_MAX_CLASS_WEIGHTS)
            return fail(c, "class_weight", "a map needs 1 to %d class names",
                        JOBSPEC_MAX_CLASS_WEIGHTS);
        s->class_weight_names = calloc(k, sizeof *s->class_weight_names);
        s->class_weight_values = calloc(k, sizeof(float));
        if (!s->class_weight_names || !s->class_weight_values)
            return fail(c, "class_weight", "out of memory");
        s->class_weight = CLASS_WEIGHT_MAP;
        const char *key;
        json_t *v;
        json_object_foreach(cw, key, v) {
            char p[JOBSPEC_PATH_MAX];
            join(p, sizeof p, "class_weight", key);
            if (strlen(key) >= sizeof s->class_weight_names[0])
                return fail(c, p, "class name too long");
            double d = json_is_number(v) ? json_number_value(v) : NAN;
            if (!(d >= 0 && isfinite(d)))
                return fail(c, p, "must be a number >= 0");
            snprintf(s->class_weight_names[s->n_class_weights], sizeof s->class_weight_names[0],
                     "%s", key);
            s->class_weight_values[s->n_class_weights++] = (float)d;
        }
    } else if (cw) {
        return fail(c, "class_weight", "must be \"none\", \"balanced\" or a map of class name "
                    "to weight");
    }
    double d = 0;
    if (get_num(c, root, "", "label_smoothing", 0, 0, 1, 1, 0, &d)) return -1;
    s->label_smoothing = (float)d;
    d = 0.2;
    if (get_num(c, root, "", "val_fraction", 0, 1, 1, 1, 0, &d)) return -1;
    s->val_fraction = d;

    json_t *phases = json_object_get(root, "phases");
    if (!phases || !json_is_array(phases) || json_array_size(phases) == 0)
        return fail(c, "phases", "must be a non-empty array of phases");
    if (json_array_size(phases) > JOBSPEC_MAX_PHASES)
        return fail(c, "phases", "at most %d phases", JOBSPEC_MAX_PHASES);
    for (size_t i = 0; i < json_array_size(phases); i++) {
        char p[JOBSPEC_PATH_MAX];
        snprintf(p, sizeof p, "phases[%zu]", i);
        if (parse_phase(c, json_array_get(phases, i), p, (int)i, &s->phases[i])) return -1;
        s->n_phases++;
    }

    snprintf(s->es_monitor, sizeof s->es_monitor, "val_loss");
    s->es_patience = 3;
    s->es_restore_best = 1;
    json_t *es = json_object_get(root, "early_stopping");
    if (es) {
        static const char *const ekeys[] = {"monitor", "patience", "min_delta", "restore_best",
                                            NULL};
        static const char *const monitors[] = {"val_loss", "val_accuracy",
                                               "val_balanced_accuracy", NULL};
        if (!json_is_object(es))
            return fail(c, "early_stopping", "must be an object like {\"monitor\": \"val_loss\", "
                        "\"patience\": 3}");
        if (check_keys(c, es, "early_stopping", ekeys)) return -1;
        s->early_stopping = 1;
        if (get_str(c, es, "early_stopping", "monitor", 0, monitors, s->es_monitor,
                    sizeof s->es_monitor)) return -1;
        n = 3;
        if (get_int(c, es, "early_stopping", "patience", 1, 100000, 0, &n)) return -1;
        s->es_patience = (int)n;
        d = 0;
        if (get_num(c, es, "early_stopping", "min_delta", 0, 0, INFINITY, 0, 0, &d)) return -1;
        s->es_min_delta = d;
        if (get_bool(c, es, "early_stopping", "restore_best", &s->es_restore_best)) return -1;
    }
    s->overfit_steps = 50;
    json_t *pf = json_object_get(root, "preflight");
    if (pf) {
        static const char *const pkeys[] = {"overfit_batch", "steps", NULL};
        if (!json_is_object(pf))
            return fail(c, "preflight", "must be an object like {\"overfit_batch\": true}");
        if (check_keys(c, pf, "preflight", pkeys)) return -1;
        if (get_bool(c, pf, "preflight", "overfit_batch", &s->overfit_batch)) return -1;
        n = 50;
        if (get_int(c, pf, "preflight", "steps", 1, 10000, 0, &n)) return -1;
        s->overfit_steps = (int)n;
    }
    return 0;
}

int jobspec_parse(JobSpec *spec, const char *json, size_t len, char *path, size_t path_len,
                  Error *err)
{
    memset(spec, 0, sizeof *spec);
    if (path && path_len)
        path[0] = '\0';
    Ctx c = {err, path, path_len};
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(&c, "", "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                    jerr.column);
    int rc = parse_root(&c, root, spec);
    json_decref(root);
    if (rc)
        jobspec_free(spec);
    return rc;
}

void jobspec_free(JobSpec *spec)
{
    if (!spec)
        return;
    free(spec->class_weight_names);
    free(spec->class_weight_values);
    spec->class_weight_names = NULL;
    spec->class_weight_values = NULL;
    spec->n_class_weights = 0;
}

int jobspec_total_epochs(const JobSpec *spec)
{
    int n = 0;
    for (int i = 0; i < spec->n_phases; i++)
        n += spec->phases[i].epochs;
    return n;
}
