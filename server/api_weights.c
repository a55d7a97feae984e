/*
 * api_weights.c: the weights resource: the files in the weights folder that
 * jobs may start from, and each completed job's fine-tuned weights.
 */
#include "http.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resnet.h"
#include "weights.h"
#include "worker.h"

enum MHD_Result api_handle_weights_list(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    json_t *list = json_array();
    DIR *d = opendir(a->weights_dir);
    struct dirent *e;
    char names[256][256];
    int n = 0;
    while (d && (e = readdir(d)) && n < 256)
        if (e->d_name[0] != '.' && http_ends_with(e->d_name, ".safetensors"))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    if (d)
        closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) {
        char path[8500];
        if (snprintf(path, sizeof path, "%s/%s", a->weights_dir, names[i]) >= (int)sizeof path)
            continue;
        struct stat sb;
        json_t *w = json_pack("{s:s, s:I}", "name", names[i], "size",
                              (json_int_t)(stat(path, &sb) ? 0 : sb.st_size));
        WeightsInfo info;
        Error err;
        if (weights_probe(path, &info, &err)) {
            json_object_set_new(w, "error", json_string(err.msg));
        } else {
            json_object_set_new(w, "variant", json_string(resnet_variant_name(info.variant)));
            json_object_set_new(w, "preprocess", json_string(info.preprocess));
            json_object_set_new(w, "tensors", json_integer(info.n_tensors));
            json_object_set_new(w, "parameters", json_integer((json_int_t)info.n_params));
            json_object_set_new(w, "head_classes",
                                info.has_head ? json_integer(info.head_classes) : json_null());
            weights_info_free(&info);
        }
        json_array_append_new(list, w);
    }
    return http_send_json(c, q, 200, json_pack("{s:o}", "weights", list));
}

enum MHD_Result api_handle_job_weights(struct MHD_Connection *c, Req *q)
{
    const int64_t id = q->id;
    Store *st;
    enum MHD_Result rc;
    json_t *j = api_job_or_answer(c, q, &st, &rc);
    if (!j)
        return rc;
    const char *state = json_string_value(json_object_get(j, "state"));
    char path[4400];
    worker_job_path(q->api->data_dir, id, "model.safetensors", path, sizeof path);
    int fd = strcmp(state, "completed") ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        if (fd >= 0)
            close(fd);
        rc = HTTP_ERROR(c, q, 409, NULL, "job %lld is %s: its weights exist once it completes",
                        (long long)id, state);
        json_decref(j);
        return rc;
    }
    char disp[256];
    snprintf(disp, sizeof disp, "attachment; filename=\"job-%lld.safetensors\"", (long long)id);
    json_decref(j);
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    MHD_add_response_header(r, "Content-Disposition", disp);
    return http_send(c, q, 200, r);
}
