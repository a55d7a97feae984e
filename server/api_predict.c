/*
 * api_predict.c: top-k predictions of a completed job's model for one image
 * (POST /api/jobs/ID/predict). The last job's predictor stays loaded.
 */
#include "http.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "worker.h"

enum MHD_Result api_handle_job_predict(struct MHD_Connection *c, Req *q)
{
    const int64_t id = q->id;
    Api *a = q->api;
    Store *st;
    enum MHD_Result rc;
    Error err;
    json_t *j = api_job_or_answer(c, q, &st, &rc);
    if (!j)
        return rc;
    int completed = !strcmp(json_string_value(json_object_get(j, "state")), "completed");
    json_decref(j);
    if (!completed)
        return HTTP_ERROR(c, q, 409, NULL, "job %lld has not completed: nothing to predict with",
                          (long long)id);
    const char *top_s = http_arg(c, "top");
    char *end = NULL;
    long top = top_s ? strtol(top_s, &end, 10) : 5;
    if (top_s && (!*top_s || *end || top < 1 || top > 1000))
        return HTTP_ERROR(c, q, 400, "top", "top: must be a whole number from 1 to 1000");
    ImageFormat fmt;
    int w, h;
    Error perr;
    if (!q->len || image_probe((const uint8_t *)q->buf, q->len, &fmt, &w, &h, &perr))
        return HTTP_ERROR(c, q, 415, NULL, "the body is not a PNG or JPEG image");
    Image img;
    if (image_decode(&img, (const uint8_t *)q->buf, q->len, a->cfg.max_pixels, &err)) {
        int big = strstr(err.msg, "pixels") != NULL;
        return HTTP_ERROR(c, q, big ? 413 : 400, NULL, "%s", err.msg);
    }
    pthread_mutex_lock(&a->predict_mu);
    if (a->predictor_job != id) {
        predictor_free(a->predictor);
        a->predictor = NULL;
        a->predictor_job = 0;
        char path[4400];
        worker_job_path(a->data_dir, id, "model.safetensors", path, sizeof path);
        if (predictor_load(&a->predictor, path, &err)) {
            pthread_mutex_unlock(&a->predict_mu);
            image_free(&img);
            return http_db_failure(c, q, &err);
        }
        a->predictor_job = id;
    }
    Prediction *out = calloc((size_t)top, sizeof *out);
    int n = 0;
    int prc = out ? predictor_run(a->predictor, &img, (int)top, out, &n, &err) : -1;
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:i, s:s, s:o}", "index", out[i].index, "class",
                                              out[i].name, "prob",
                                              isfinite(out[i].prob) ? json_real(out[i].prob)
                                                                    : json_null()));
    pthread_mutex_unlock(&a->predict_mu);
    free(out);
    image_free(&img);
    if (prc) {
        json_decref(list);
        return HTTP_ERROR(c, q, 400, NULL, "%s", out ? err.msg : "out of memory");
    }
    return http_send_json(c, q, 200, json_pack("{s:I, s:o}", "job", (json_int_t)id, "top", list));
}
