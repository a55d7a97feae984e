/* predict.c: top-k classification with an exported weights file (see predict.h). */
#include "predict.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"
#include "resnet.h"
#include "safetensors.h"
#include "weights.h"

#define PREDICT_MAX_PIXELS 50000000ULL

struct Predictor {
    Resnet *m;
    Preprocess p;
    int n_classes;
    char **names;
    float *x;           /* one preprocessed image */
    float *probs;
};

void predictor_free(Predictor *p)
{
    if (!p)
        return;
    resnet_free(p->m);
    if (p->names)
        for (int i = 0; i < p->n_classes; i++)
            free(p->names[i]);
    free(p->names);
    free(p->x);
    free(p->probs);
    free(p);
}

int predictor_classes(const Predictor *p)
{
    return p->n_classes;
}

int predictor_input_size(const Predictor *p)
{
    return p->p.size;
}

/* Reads the preprocessing metadata of the file into pr->p. */
static int read_metadata(Predictor *pr, const char *path, const WeightsInfo *info, Error *err)
{
    SafeTensors st;
    if (safetensors_open(&st, path, err))
        return -1;
    int rc = -1;
    const char *size = safetensors_meta(&st, "input_size");
    const char *resize = safetensors_meta(&st, "resize");
    const char *custom = safetensors_meta(&st, "preprocess_custom");
    pr->p.size = size ? atoi(size) : 224;
    pr->p.resize = resize && !strcmp(resize, "crop") ? RESIZE_CROP : RESIZE_SQUASH;
    if (!strcmp(info->preprocess, "custom")) {
        json_error_t jerr;
        json_t *o = custom ? json_loads(custom, 0, &jerr) : NULL;
        double r, m[3], s[3];
        const char *ch;
        if (!o || json_unpack(o, "{s:F, s:[FFF], s:[FFF], s:s}", "rescale", &r, "mean", &m[0],
                              &m[1], &m[2], "std", &s[0], &s[1], &s[2], "channels", &ch)) {
            json_decref(o);
            error_set(err, "%s: preprocess is custom but preprocess_custom metadata is missing "
                      "or malformed", path);
            goto done;
        }
        memset(&pr->p.norm, 0, sizeof pr->p.norm);
        pr->p.norm.mode = NORM_CUSTOM;
        pr->p.norm.rescale = (float)r;
        for (int c = 0; c < 3; c++) {
            pr->p.norm.mean[c] = (float)m[c];
            pr->p.norm.std[c] = (float)s[c];
        }
        pr->p.norm.bgr = !strcmp(ch, "bgr");
        json_decref(o);
    } else if (preprocess_norm_from_name(&pr->p.norm, info->preprocess, err)) {
        error_wrap(err, "%s: metadata preprocess", path);
        goto done;
    }
    if (preprocess_validate(&pr->p, err)) {
        error_wrap(err, "%s: metadata", path);
        goto done;
    }
    rc = 0;
done:
    safetensors_close(&st);
    return rc;
}

static int read_classes(Predictor *pr, const char *path, const WeightsInfo *info, Error *err)
{
    pr->n_classes = info->head_classes;
    pr->names = calloc((size_t)pr->n_classes, sizeof *pr->names);
    if (!pr->names)
        return error_set(err, "out of memory");
    json_t *arr = NULL;
    if (info->classes) {
        json_error_t jerr;
        arr = json_loads(info->classes, 0, &jerr);
        if (!json_is_array(arr) || (int)json_array_size(arr) != pr->n_classes) {
            json_decref(arr);
            return error_set(err, "%s: metadata classes must be a JSON array of %d names",
                             path, pr->n_classes);
        }
    }
    for (int i = 0; i < pr->n_classes; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        const char *name = arr ? json_string_value(json_array_get(arr, (size_t)i)) : num;
        if (!name || !(pr->names[i] = strdup(name))) {
            json_decref(arr);
            return error_set(err, "%s: metadata classes[%d] must be a string", path, i);
        }
    }
    json_decref(arr);
    return 0;
}

int predictor_load(Predictor **out, const char *path, Error *err)
{
    *out = NULL;
    WeightsInfo info = {0};
    if (weights_probe(path, &info, err))
        return -1;
    Predictor *pr = calloc(1, sizeof *pr);
    if (!pr) {
        weights_info_free(&info);
        return error_set(err, "out of memory");
    }
    if (!info.has_head) {
        error_set(err, "%s: has no classifier head: export a fine-tuned model to predict", path);
        goto fail;
    }
    ResnetConfig cfg = {info.variant, info.head_classes, info.head_hidden, 0.0f};
    if (read_classes(pr, path, &info, err) || read_metadata(pr, path, &info, err) ||
        resnet_create(&pr->m, &cfg, err) || weights_load(pr->m, path, 1, err) ||
        resnet_plan_inference(pr->m, 1, pr->p.size, err))
        goto fail;
    pr->x = malloc((size_t)pr->p.size * pr->p.size * 3 * sizeof(float));
    pr->probs = malloc((size_t)pr->n_classes * sizeof(float));
    if (!pr->x || !pr->probs) {
        error_set(err, "out of memory");
        goto fail;
    }
    weights_info_free(&info);
    *out = pr;
    return 0;
fail:
    weights_info_free(&info);
    predictor_free(pr);
    return -1;
}

int predictor_run(Predictor *pr, const Image *img, int k, Prediction *out, int *n_out, Error *err)
{
    *n_out = 0;
    if (preprocess_check_source(&pr->p, img->width, img->height, err))
        return -1;
    int bw, bh;
    preprocess_base_size(&pr->p, img->width, img->height, &bw, &bh);
    uint8_t *scratch = malloc((size_t)bw * bh * 3);
    if (!scratch)
        return error_set(err, "out of memory for a %dx%d image", bw, bh);
    preprocess_image(pr->x, img->rgb, img->width, img->height, &pr->p, NULL, scratch);
    free(scratch);
    resnet_forward(pr->m, pr->x, 1, 0);
    const float *z = pr->m->logits;
    double mx = z[0], sum = 0;
    for (int c = 1; c < pr->n_classes; c++) if (z[c] > mx) mx = z[c];
    for (int c = 0; c < pr->n_classes; c++) sum += exp((double)z[c] - mx);
    for (int c = 0; c < pr->n_classes; c++) pr->probs[c] = (float)(exp((double)z[c] - mx) / sum);
    if (k > pr->n_classes) k = pr->n_classes;
    for (int i = 0; i < k; i++) { /* selection by repeated max: k is small */
        int best = -1;
        for (int c = 0; c < pr->n_classes; c++) {
            int taken = 0;
            for (int j = 0; j < i; j++) taken |= out[j].index == c;
            if (!taken && (best < 0 || pr->probs[c] > pr->probs[best])) best = c;
        }
        out[i].index = best;
        out[i].name = pr->names[best];
        out[i].prob = pr->probs[best];
    }
    *n_out = k;
    return 0;
}

int predictor_run_file(Predictor *pr, const char *path, int k, Prediction *out, int *n_out,
                       Error *err)
{
    Image img;
    if (image_load(&img, path, PREDICT_MAX_PIXELS, err))
        return -1;
    int rc = predictor_run(pr, &img, k, out, n_out, err);
    if (rc)
        error_wrap(err, "%s", path);
    image_free(&img);
    return rc;
}
