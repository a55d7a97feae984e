/*
 * api_weights.c: the weights resource: the files in the weights folder that
 * jobs may start from, and each completed job's fine-tuned weights.
 */
#include "http.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5weights.h"
#include "log.h"
#include "resnet.h"
#include "weights.h"
#include "worker.h"

/* Answers 200 with the file at path as an attachment named name. */
static enum MHD_Result send_file(struct MHD_Connection *c, Req *q, const char *path,
                                 const char *name)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        if (fd >= 0)
            close(fd);
        return HTTP_ERROR(c, q, 404, NULL, "cannot open %s", name);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    char disp[400];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", name);
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    MHD_add_response_header(r, "Content-Disposition", disp);
    return http_send(c, q, 200, r);
}

/* A weights file in the list's and the upload's answer: name, size, and what
 * its header says (or the error that makes it unusable). */
static json_t *entry_json(const char *dir, const char *name)
{
    char path[8500];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat sb;
    json_t *w = json_pack("{s:s, s:I}", "name", name, "size",
                          (json_int_t)(stat(path, &sb) ? 0 : sb.st_size));
    WeightsInfo info;
    Error err;
    if (weights_probe(path, &info, &err)) {
        json_object_set_new(w, "error", json_string(err.msg));
        return w;
    }
    json_object_set_new(w, "format", json_string(info.hdf5 ? "h5" : "safetensors"));
    json_object_set_new(w, "variant", json_string(resnet_variant_name(info.variant)));
    json_object_set_new(w, "preprocess", json_string(info.preprocess));
    json_object_set_new(w, "tensors", json_integer(info.n_tensors));
    json_object_set_new(w, "parameters", json_integer((json_int_t)info.n_params));
    json_object_set_new(w, "head_classes",
                        info.has_head ? json_integer(info.head_classes) : json_null());
    weights_info_free(&info);
    return w;
}

static int upload_name_ok(const char *name)
{
    return http_valid_name(name) && weights_file_listable(name);
}

/* A manifest entry as GET /api/weights lists it under "named". */
static json_t *named_entry_json(Api *a, const FetchEntry *e)
{
    const int cached = fetch_entry_cached(e, a->weights_dir);
    PullStatus ps;
    const int fetching = !cached && puller_status(a->cfg.puller, e->file, 0, &ps);
    json_t *pulling = fetching ? json_pack("{s:I, s:I}", "done", (json_int_t)ps.done, "total",
                                           (json_int_t)ps.total)
                               : json_null();
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:s, s:b, s:b, s:s, s:o}",
                     "name", e->name, "file", e->file, "format", e->format, "variant",
                     e->variant, "preprocess", e->preprocess, "classes", e->classes, "size",
                     e->size >= 0 ? json_integer(e->size) : json_null(), "top1",
                     e->top1 >= 0 ? json_real(e->top1) : json_null(), "description",
                     e->description ? e->description : "", "pinned", fetch_entry_pinned(e),
                     "cached", cached, "state",
                     cached ? "cached" : fetching ? "fetching" : "available", "pulling", pulling);
}

/* Every manifest entry, with "imagenet"'s meaning; [] when the manifest is off. */
static json_t *named_json(Api *a)
{
    json_t *list = json_array();
    for (int i = 0; a->cfg.manifest && i < a->cfg.manifest->n; i++) {
        const FetchEntry *e = &a->cfg.manifest->entries[i];
        json_t *j = named_entry_json(a, e);
        json_t *alias = json_array();
        if (!strcmp(e->name, fetch_imagenet_name("torchvision")))
            json_array_append_new(alias, json_string("imagenet"));
        if (!strcmp(e->name, fetch_imagenet_name("keras")))
            json_array_append_new(alias, json_string("imagenet with \"variant\": \"keras\""));
        json_object_set_new(j, "aliases", alias);
        json_array_append_new(list, j);
    }
    return list;
}

enum MHD_Result api_handle_weights_list(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    json_t *list = json_array();
    DIR *d = opendir(a->weights_dir);
    struct dirent *e;
    char names[256][256];
    int n = 0;
    while (d && (e = readdir(d)) && n < 256)
        if (weights_file_listable(e->d_name))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    if (d)
        closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++)
        json_array_append_new(list, entry_json(a->weights_dir, names[i]));
    json_t *body = json_pack("{s:o, s:o}", "weights", list, "named", named_json(a));
    if (!a->cfg.manifest)
        json_object_set_new(body, "named_error", json_string(a->cfg.manifest_error));
    return http_send_json(c, q, 200, body);
}

/* POST /api/weights/pull {"name": NAME[, "variant": V]}: downloads named weights
 * into the weights folder (202, "fetching"), or says they are there (200). */
enum MHD_Result api_handle_weights_pull(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    Error err;
    enum MHD_Result rc;
    static const char *const fields[] = {"name", "variant", NULL};
    json_t *body = http_body_object(c, q, fields, &rc);
    if (!body)
        return rc;
    char name[64] = "", variant[16] = "";
    const char *s = json_string_value(json_object_get(body, "name"));
    const char *vs = json_string_value(json_object_get(body, "variant"));
    int bad_name = !s || strlen(s) >= sizeof name;
    int bad_variant = json_object_get(body, "variant") &&
                      (!vs || (strcmp(vs, "torchvision") && strcmp(vs, "keras")));
    if (!bad_name)
        snprintf(name, sizeof name, "%s", s);
    if (vs && !bad_variant)
        snprintf(variant, sizeof variant, "%s", vs);
    json_decref(body);
    if (bad_name)
        return HTTP_ERROR(c, q, 400, "name", "name: a name of the manifest, or \"imagenet\" "
                          "(see GET /api/weights, \"named\")");
    if (bad_variant)
        return HTTP_ERROR(c, q, 400, "variant", "variant: \"torchvision\" or \"keras\"");
    if (!a->cfg.manifest)
        return HTTP_ERROR(c, q, 503, NULL, "named weights are off: %s", a->cfg.manifest_error);
    const FetchEntry *e;
    if (fetch_resolve(a->cfg.manifest, name, variant, &e, &err))
        return HTTP_ERROR(c, q, 400, "name", "name: %s", err.msg);
    json_t *entry = named_entry_json(a, e);
    if (fetch_entry_cached(e, a->weights_dir))
        return http_send_json(c, q, 200, entry);
    if (!fetch_entry_pinned(e)) {
        json_decref(entry);
        return HTTP_ERROR(c, q, 400, "name", "name: the manifest pins no SHA-256 or MD5 for %s, "
                          "so it is never downloaded unchecked", e->name);
    }
    PullStatus ps;
    if (!puller_status(a->cfg.puller, e->file, 0, &ps) && puller_start(a->cfg.puller, e, 0, &err)) {
        json_decref(entry);
        return http_db_failure(c, q, &err);
    }
    json_object_set_new(entry, "state", json_string("fetching"));
    return http_send_json(c, q, 202, entry);
}

/* Checks the uploaded file as a job would read it: the header (weights_probe),
 * then every backbone tensor's name, shape and data (weights_load into a model
 * of the file's variant). The file's format must match the name's extension. */
static int check_upload(const char *path, const char *name, Error *err)
{
    const int h5 = h5weights_is_hdf5(path) == 1;
    if (h5 != !http_ends_with(name, ".safetensors"))
        return error_set(err, "the file is %s but the name ends in %s", h5 ? "HDF5" : "not HDF5",
                         strrchr(name, '.'));
    WeightsInfo info;
    if (weights_probe(path, &info, err))
        return -1;
    ResnetConfig cfg = {info.variant, info.has_head ? info.head_classes : 1, 0, 0.0f};
    weights_info_free(&info);
    Resnet *m;
    if (resnet_create(&m, &cfg, err))
        return -1;
    int rc = weights_load(m, path, 0, err);
    resnet_free(m);
    return rc;
}

/* PUT /api/weights/NAME: the body was streamed to q->upload_path in the weights
 * folder; checked, synced and renamed to NAME, or removed. */
enum MHD_Result api_handle_weights_put(struct MHD_Connection *c, Req *q)
{
    Api *a = q->api;
    const char *name = q->param;
    Error err;
    if (!upload_name_ok(name))
        return HTTP_ERROR(c, q, 400, NULL, "'%s': a weights file name is 1 to 64 letters, digits,"
                          " '.', '_' or '-', not starting with '.', ending in .safetensors or "
                          ".h5 (or .hdf5)", name);
    char final[8500];
    snprintf(final, sizeof final, "%s/%s", a->weights_dir, name);
    if (!access(final, F_OK))
        return HTTP_ERROR(c, q, 409, NULL, "the weights folder has a file '%s' already: DELETE "
                          "/api/weights/%s first to replace it", name, name);
    if (check_upload(q->upload_path, name, &err)) {
        /* the reader names the temporary file: name the upload instead */
        char msg[sizeof err.msg];
        const char *tmp = strstr(err.msg, q->upload_path);
        if (tmp)
            snprintf(msg, sizeof msg, "%.*s%s%s", (int)(tmp - err.msg), err.msg, name,
                     tmp + strlen(q->upload_path));
        else
            snprintf(msg, sizeof msg, "%s", err.msg);
        return HTTP_ERROR(c, q, 400, NULL, "%s is not a usable weights file: %s", name, msg);
    }
    int fd = open(q->upload_path, O_RDONLY | O_CLOEXEC);
    int synced = fd >= 0 && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    /* link, not rename: a file of that name that appeared meanwhile is not replaced */
    if (!synced || link(q->upload_path, final)) {
        int exists = errno == EEXIST;
        if (exists)
            return HTTP_ERROR(c, q, 409, NULL, "the weights folder has a file '%s' already",
                              name);
        error_set(&err, "cannot install %s: %s", final, strerror(errno));
        return http_db_failure(c, q, &err);
    }
    unlink(q->upload_path);
    q->upload_path[0] = '\0';
    int dfd = open(a->weights_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    log_msg(LOG_LEVEL_INFO, "weights '%s' uploaded (%llu bytes)", name,
            (unsigned long long)q->received);
    char loc[300];
    snprintf(loc, sizeof loc, "/api/weights/%s", name);
    return http_send_created_at(c, q, loc, entry_json(a->weights_dir, name));
}

/* The file NAME of the weights folder, or NULL after answering 400/404. */
static const char *existing(struct MHD_Connection *c, Req *q, char *path, size_t len,
                            enum MHD_Result *rc)
{
    const char *name = q->param;
    if (!upload_name_ok(name)) {
        *rc = HTTP_ERROR(c, q, 404, NULL, "no weights file '%s'", name);
        return NULL;
    }
    snprintf(path, len, "%s/%s", q->api->weights_dir, name);
    if (access(path, F_OK)) {
        *rc = HTTP_ERROR(c, q, 404, NULL, "no weights file '%s' (see GET /api/weights)", name);
        return NULL;
    }
    return name;
}

enum MHD_Result api_handle_weights_get(struct MHD_Connection *c, Req *q)
{
    char path[8500];
    enum MHD_Result rc;
    const char *name = existing(c, q, path, sizeof path, &rc);
    if (!name)
        return rc;
    return send_file(c, q, path, name);
}

enum MHD_Result api_handle_weights_delete(struct MHD_Connection *c, Req *q)
{
    char path[8500];
    enum MHD_Result rc;
    Error err;
    const char *name = existing(c, q, path, sizeof path, &rc);
    if (!name)
        return rc;
    Store *st = http_store(q->api, &err);
    int64_t job = 0;
    int used = st ? store_weights_user(st, name, &job, &err) : -1;
    if (used < 0)
        return http_db_failure(c, q, &err);
    if (used)
        return HTTP_ERROR(c, q, 409, NULL, "weights '%s' are in use by job %lld", name,
                          (long long)job);
    if (unlink(path)) {
        error_set(&err, "cannot remove %s: %s", path, strerror(errno));
        return http_db_failure(c, q, &err);
    }
    log_msg(LOG_LEVEL_INFO, "weights '%s' deleted", name);
    return http_send(c, q, 204, MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT));
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
    char path[4400], name[64];
    worker_job_path(q->api->data_dir, id, "model.safetensors", path, sizeof path);
    snprintf(name, sizeof name, "job-%lld.safetensors", (long long)id);
    if (strcmp(state, "completed") || access(path, R_OK)) {
        rc = HTTP_ERROR(c, q, 409, NULL, "job %lld is %s: its weights exist once it completes",
                        (long long)id, state);
        json_decref(j);
        return rc;
    }
    json_decref(j);
    return send_file(c, q, path, name);
}
