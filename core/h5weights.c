/*
 * h5weights.c: Keras 2 HDF5 ResNet50 weights through libhdf5 (see h5weights.h).
 *
 * Every function mirrors a step of tools/h5_to_safetensors.py (named in its
 * comment), so that both accept and refuse the same files with the same words.
 */
#include "h5weights.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "safetensors.h"

/* Keras ResNet50 (REFERENCE.md): stages conv2..conv5 with their blocks and filters. */
static const struct { int stage, blocks, filters; } STAGES[] = {
    {2, 3, 64}, {3, 4, 128}, {4, 6, 256}, {5, 3, 512}};
#define FEATURES 2048
#define BACKBONE_TENSORS 318
/* more weights than any ResNet50 file has; past it the file is refused before the
 * quadratic duplicate check could take long */
#define MAX_TENSORS 10000

struct H5Weights {
    char *path;
    hid_t file, root;    /* the file, and the group holding the layers (root or model_weights) */
    int n, cap;
    H5Tensor *t;
};

/* libhdf5 is one library-wide state machine: a build without --enable-threadsafe
 * (the usual serial one) must see one call at a time from the whole process, and
 * this lock is the only way to promise that. It guards every H5* call below. */
static pthread_mutex_t h5_mutex = PTHREAD_MUTEX_INITIALIZER;

static void h5_lock(void)
{
    pthread_mutex_lock(&h5_mutex);
    /* per thread in a thread-safe build, so set on every entry, not once */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_unlock(void)
{
    pthread_mutex_unlock(&h5_mutex);
}

typedef struct {
    char outer[160], inner[240];
    int n;
} H5Reason;

static herr_t reason_walk(unsigned n, const H5E_error2_t *e, void *data)
{
    H5Reason *r = data;
    const char *desc = e->desc && *e->desc ? e->desc : "(no description)";
    if (n == 0)
        snprintf(r->outer, sizeof r->outer, "%s", desc);
    snprintf(r->inner, sizeof r->inner, "%s", desc);
    r->n++;
    return 0;
}

/* libhdf5's reason for the call that has just failed, worded as h5py words it: the
 * API's description capitalised, then the innermost one in parentheses. Call under the lock,
 * before any other H5* call (each one clears the error stack). */
static void h5_reason(char *out, size_t len)
{
    H5Reason r;
    memset(&r, 0, sizeof r);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, reason_walk, &r);
    if (r.n == 0)
        snprintf(out, len, "libhdf5 gave no reason");
    else if (r.n == 1 || !strcmp(r.outer, r.inner))
        snprintf(out, len, "%s", r.outer);
    else
        snprintf(out, len, "%s (%s)", r.outer, r.inner);
    if (len && out[0] >= 'a' && out[0] <= 'z')
        out[0] = (char)(out[0] - 'a' + 'A');
}

int h5weights_is_hdf5(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    int found = 0;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
        for (off_t at = 0; !found && at + 8 <= sb.st_size; at = at ? 2 * at : 512) {
            unsigned char buf[8];
            found = pread(fd, buf, 8, at) == 8 && !memcmp(buf, sig, 8);
        }
    close(fd);
    return found;
}

/* ---- strings and paths -------------------------------------------------------- */

typedef struct {
    char **v;
    int n, cap;
} StrList;

static void strlist_free(StrList *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Takes s (malloc'd, may be NULL for out of memory). */
static int strlist_push(StrList *l, char *s)
{
    if (s && l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(s);
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    if (!s)
        return -1;
    l->v[l->n++] = s;
    return 0;
}

/* Appends the strings of attribute `name` of loc (fixed- or variable-length, an
 * array or a scalar) to l. An attribute without elements (Keras writes an empty
 * list as an empty float array) adds nothing. */
static int attr_read_strings(hid_t loc, const char *name, const char *owner, StrList *l,
                             const char *path, Error *err)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? H5I_INVALID_HID : H5Aget_type(a);
    hid_t sp = a < 0 ? H5I_INVALID_HID : H5Aget_space(a);
    hid_t mt = H5I_INVALID_HID;
    void *buf = NULL;
    int rc = -1;
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (a < 0 || ft < 0 || n < 0) {
        char why[420];
        h5_reason(why, sizeof why);
        error_set(err, "%s: %s: cannot read attribute '%s': %s", path, owner, name, why);
        goto done;
    }
    if (n == 0) {
        rc = 0;
        goto done;
    }
    if (H5Tget_class(ft) != H5T_STRING) {
        error_set(err, "%s: %s: attribute '%s' is not a list of strings", path, owner, name);
        goto done;
    }
    int vlen = H5Tis_variable_str(ft) > 0;
    size_t size = H5Tget_size(ft);
    mt = H5Tcopy(H5T_C_S1);
    if (mt < 0 || H5Tset_size(mt, vlen ? H5T_VARIABLE : size) < 0 ||
        H5Tset_cset(mt, H5Tget_cset(ft)) < 0 ||
        (!vlen && H5Tset_strpad(mt, H5T_STR_NULLPAD) < 0)) {
        error_set(err, "%s: out of memory", path);
        goto done;
    }
    buf = calloc((size_t)n, vlen ? sizeof(char *) : size);
    if (!buf) {
        error_set(err, "%s: out of memory", path);
        goto done;
    }
    if (H5Aread(a, mt, buf) < 0) {
        char why[420];
        h5_reason(why, sizeof why);
        error_set(err, "%s: %s: cannot read attribute '%s': %s", path, owner, name, why);
        goto done;
    }
    rc = 0;
    for (hssize_t i = 0; i < n && rc == 0; i++) {
        const char *s = vlen ? ((char **)buf)[i] : (char *)buf + (size_t)i * size;
        rc = strlist_push(l, vlen ? strdup(s ? s : "") : strndup(s, size));
        if (rc)
            error_set(err, "%s: out of memory", path);
    }
    if (vlen)
        H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, buf);
done:
    free(buf);
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* The converter's _attr_list: attribute `name` whole, or split into name0, name1,
 * ... Returns 1 when found (strings appended to l), 0 when absent, -1 on error. */
static int attr_list(hid_t loc, const char *name, const char *owner, StrList *l,
                     const char *path, Error *err)
{
    if (H5Aexists(loc, name) > 0)
        return attr_read_strings(loc, name, owner, l, path, err) ? -1 : 1;
    int i = 0;
    for (;; i++) {
        char part[128];
        snprintf(part, sizeof part, "%s%d", name, i);
        if (H5Aexists(loc, part) <= 0)
            break;
        if (attr_read_strings(loc, part, owner, l, path, err))
            return -1;
    }
    return i > 0;
}

/* h5py's `path in group`: every link on the way exists and the last one resolves
 * to an object. Components are separated by '/'. */
static int h5_exists(hid_t loc, const char *path)
{
    char *buf = strdup(path);
    int ok = buf && *buf;
    for (char *p = buf; ok; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        ok = *buf && H5Lexists(loc, buf, H5P_DEFAULT) > 0;
        *p = c;
        if (c == '\0')
            break;
    }
    ok = ok && H5Oexists_by_name(loc, path, H5P_DEFAULT) > 0;
    free(buf);
    return ok;
}

/* Opens the object at path as kind (H5I_GROUP, H5I_DATASET): its id, or a
 * negative one when it is of another kind. */
static hid_t h5_open_as(hid_t loc, const char *path, H5I_type_t kind)
{
    hid_t o = H5Oopen(loc, path, H5P_DEFAULT);
    if (o >= 0 && H5Iget_type(o) != kind) {
        H5Oclose(o);
        return H5I_INVALID_HID;
    }
    return o;
}

/* numpy's name of the dtype h5py gives a non-float dataset of type t. */
static void dtype_name(hid_t t, char *out, size_t len)
{
    size_t size = H5Tget_size(t);
    switch (H5Tget_class(t)) {
    case H5T_INTEGER:
        snprintf(out, len, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", size * 8);
        return;
    case H5T_STRING:
        if (H5Tis_variable_str(t) > 0)
            snprintf(out, len, "object");
        else
            snprintf(out, len, "|S%zu", size);
        return;
    case H5T_VLEN: snprintf(out, len, "object"); return;
    case H5T_ENUM: snprintf(out, len, "enum (%zu bytes)", size); return;
    case H5T_COMPOUND: snprintf(out, len, "compound (%zu bytes)", size); return;
    case H5T_ARRAY: snprintf(out, len, "array (%zu bytes)", size); return;
    case H5T_OPAQUE: snprintf(out, len, "opaque (|V%zu)", size); return;
    case H5T_BITFIELD: snprintf(out, len, "bitfield (%zu bytes)", size); return;
    case H5T_REFERENCE: snprintf(out, len, "reference"); return;
    default: snprintf(out, len, "HDF5 class %d", (int)H5Tget_class(t)); return;
    }
}

/* ---- the tensor table ----------------------------------------------------------- */

static int tensor_push(H5Weights *h, const char *layer, const char *wn, Error *err)
{
    if (h->n == MAX_TENSORS)
        return error_set(err, "%s: more than %d weights: not Keras ResNet50 weights", h->path,
                         MAX_TENSORS);
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 512;
        H5Tensor *t = realloc(h->t, (size_t)cap * sizeof *t);
        if (!t)
            return error_set(err, "%s: out of memory", h->path);
        h->t = t;
        h->cap = cap;
    }
    /* the converter's key: the last path component, up to its first ':' */
    const char *slash = strrchr(wn, '/');
    const char *start = slash ? slash + 1 : wn;
    size_t len = strcspn(start, ":");
    H5Tensor *t = &h->t[h->n];
    memset(t, 0, sizeof *t);
    size_t nl = strlen(layer) + 1 + len + 1, nd = strlen(layer) + 1 + strlen(wn) + 1;
    t->name = malloc(nl);
    t->dataset = malloc(nd);
    if (!t->name || !t->dataset) {
        free(t->name);
        free(t->dataset);
        return error_set(err, "%s: out of memory", h->path);
    }
    snprintf(t->name, nl, "%s.%.*s", layer, (int)len, start);
    snprintf(t->dataset, nd, "%s/%s", layer, wn);
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->t[i].name, t->name)) {
            error_set(err, "%s: layer '%s' has two weights named '%.*s'", h->path, layer,
                      (int)len, start);
            free(t->name);
            free(t->dataset);
            return -1;
        }
    h->n++;
    return 0;
}

/* The type and shape of the dataset of the last tensor pushed (the converter reads
 * the data here and checks its dtype; the data waits for h5weights_read_f32). */
static int tensor_describe(H5Weights *h, hid_t g, const char *layer, const char *wn,
                           Error *err)
{
    H5Tensor *t = &h->t[h->n - 1];
    hid_t d = h5_open_as(g, wn, H5I_DATASET);
    if (d < 0)
        return error_set(err, "%s: '%s/%s' is not a dataset", h->path, layer, wn);
    hid_t ft = H5Dget_type(d), sp = H5Dget_space(d);
    int rc = -1;
    if (ft < 0 || sp < 0) {
        char why[420];
        h5_reason(why, sizeof why);
        error_set(err, "%s: cannot read '%s/%s': %s", h->path, layer, wn, why);
        goto done;
    }
    if (H5Tget_class(ft) != H5T_FLOAT) {
        char dt[64];
        dtype_name(ft, dt, sizeof dt);
        error_set(err, "%s: '%s/%s' has dtype %s, expected floating point", h->path, layer, wn,
                  dt);
        goto done;
    }
    int nd = H5Sget_simple_extent_ndims(sp);
    if (H5Sget_simple_extent_type(sp) == H5S_NULL) {
        error_set(err, "%s: '%s/%s' holds no data (an empty dataspace)", h->path, layer, wn);
        goto done;
    }
    if (nd < 0 || nd > H5WEIGHTS_MAX_DIMS) {
        error_set(err, "%s: '%s/%s' has %d dimensions, at most %d allowed", h->path, layer, wn,
                  nd, H5WEIGHTS_MAX_DIMS);
        goto done;
    }
    hsize_t dims[H5WEIGHTS_MAX_DIMS];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    t->ndim = nd;
    for (int i = 0; i < nd; i++) {
        if (dims[i] > (hsize_t)INT64_MAX) {
            error_set(err, "%s: '%s/%s': dimension %d is too large", h->path, layer, wn, i);
            goto done;
        }
        t->shape[i] = (int64_t)dims[i];
    }
    rc = 0;
done:
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    H5Oclose(d);
    return rc;
}

/* The converter's read_weights, without the data: every listed weight of every
 * listed layer, in file order. */
static int read_layers(H5Weights *h, Error *err)
{
    StrList layers = {0}, names = {0};
    hid_t g = H5I_INVALID_HID;
    int rc = -1;
    int found = attr_list(h->root, "layer_names", "the weights group", &layers, h->path, err);
    if (found < 0)
        goto done;
    if (!found) {
        int keras3 = h5_exists(h->file, "layers") || h5_exists(h->file, "vars");
        error_set(err, "%s: no 'layer_names' attribute: not a Keras HDF5 weights file%s", h->path,
                  keras3 ? " (this looks like a Keras 3 .weights.h5; save it with the legacy h5 "
                           "format or load it in Keras and call save_weights('x.h5'))" : "");
        goto done;
    }
    for (int li = 0; li < layers.n; li++) {
        const char *layer = layers.v[li];
        g = h5_exists(h->root, layer) ? h5_open_as(h->root, layer, H5I_GROUP)
                                      : H5I_INVALID_HID;
        if (g < 0) {
            error_set(err, "%s: layer '%s' is listed in layer_names but has no group", h->path,
                      layer);
            goto done;
        }
        char owner[200];
        snprintf(owner, sizeof owner, "layer '%s'", layer);
        if (attr_list(g, "weight_names", owner, &names, h->path, err) < 0)
            goto done;
        for (int wi = 0; wi < names.n; wi++) {
            const char *wn = names.v[wi];
            if (!h5_exists(g, wn)) {
                error_set(err, "%s: layer '%s': weight '%s' is listed in weight_names but has "
                          "no dataset", h->path, layer, wn);
                goto done;
            }
            if (tensor_push(h, layer, wn, err) || tensor_describe(h, g, layer, wn, err))
                goto done;
        }
        strlist_free(&names);
        H5Oclose(g);
        g = H5I_INVALID_HID;
    }
    rc = 0;
done:
    if (g >= 0)
        H5Oclose(g);
    strlist_free(&names);
    strlist_free(&layers);
    return rc;
}

/* ---- the ResNet50 check (the converter's backbone_shapes and check_weights) ----- */

typedef struct {
    char name[48];
    int ndim;
    int64_t shape[4];
} Expected;

static int expect_conv(Expected *e, int n, const char *layer, int k, int cin, int cout)
{
    snprintf(e[n].name, sizeof e[n].name, "%s.kernel", layer);
    e[n].ndim = 4;
    e[n].shape[0] = k; e[n].shape[1] = k; e[n].shape[2] = cin; e[n].shape[3] = cout;
    n++;
    snprintf(e[n].name, sizeof e[n].name, "%s.bias", layer);
    e[n].ndim = 1;
    e[n].shape[0] = cout;
    return n + 1;
}

static int expect_bn(Expected *e, int n, const char *layer, int c)
{
    static const char *const w[4] = {"gamma", "beta", "moving_mean", "moving_variance"};
    for (int i = 0; i < 4; i++, n++) {
        snprintf(e[n].name, sizeof e[n].name, "%s.%s", layer, w[i]);
        e[n].ndim = 1;
        e[n].shape[0] = c;
    }
    return n;
}

/* The 318 backbone tensors in the converter's order; returns their count. */
static int backbone_shapes(Expected *e)
{
    int n = expect_conv(e, 0, "conv1_conv", 7, 3, 64);
    n = expect_bn(e, n, "conv1_bn", 64);
    int cin = 64;
    for (size_t s = 0; s < sizeof STAGES / sizeof STAGES[0]; s++) {
        int f = STAGES[s].filters;
        for (int b = 1; b <= STAGES[s].blocks; b++) {
            char l[40];
#define LAYER(suffix) (snprintf(l, sizeof l, "conv%d_block%d_%s", STAGES[s].stage, b, suffix), l)
            if (b == 1) {
                n = expect_conv(e, n, LAYER("0_conv"), 1, cin, 4 * f);
                n = expect_bn(e, n, LAYER("0_bn"), 4 * f);
            }
            n = expect_conv(e, n, LAYER("1_conv"), 1, b == 1 ? cin : 4 * f, f);
            n = expect_bn(e, n, LAYER("1_bn"), f);
            n = expect_conv(e, n, LAYER("2_conv"), 3, f, f);
            n = expect_bn(e, n, LAYER("2_bn"), f);
            n = expect_conv(e, n, LAYER("3_conv"), 1, f, 4 * f);
            n = expect_bn(e, n, LAYER("3_bn"), 4 * f);
#undef LAYER
        }
        cin = 4 * f;
    }
    return n;
}

/* A shape as Python prints a tuple: "(3, 3, 64, 64)", "(64,)", "()". */
static void py_tuple(FILE *f, const int64_t *shape, int ndim)
{
    fputc('(', f);
    for (int i = 0; i < ndim; i++)
        fprintf(f, "%s%lld", i ? ", " : "", (long long)shape[i]);
    fputs(ndim == 1 ? ",)" : ")", f);
}

/* The converter's _fmt: the first `limit` of l joined by sep, then the count. */
static void fmt_list(FILE *f, const StrList *l, int limit, const char *sep)
{
    for (int i = 0; i < l->n && i < limit; i++)
        fprintf(f, "%s%s", i ? sep : "", l->v[i]);
    if (l->n > limit)
        fprintf(f, " ... (%d in all)", l->n);
}

/* The converter's message for the problems found, with at most `limit` names a
 * list (`wrong_limit` for the wrong shapes, which the converter never shortens).
 * Returns a malloc'd string, or NULL for out of memory. */
static char *problems_text(const char *path, const StrList *missing, const StrList *wrong,
                           const StrList *unexpected, int limit, int wrong_limit)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    fprintf(f, "%s: not Keras ResNet50 weights:", path);
    if (missing->n) {
        fprintf(f, "\n  missing %d tensors: ", missing->n);
        fmt_list(f, missing, limit, ", ");
    }
    if (wrong->n) {
        fputs("\n  wrong shape: ", f);
        fmt_list(f, wrong, wrong_limit, "; ");
    }
    if (unexpected->n) {
        fprintf(f, "\n  unexpected %d tensors: ", unexpected->n);
        fmt_list(f, unexpected, limit, ", ");
    }
    if (fclose(f)) {
        free(text);
        return NULL;
    }
    return text;
}

static char *wrong_text(const H5Tensor *t, const int64_t *want, int want_ndim)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    fprintf(f, "%s is ", t->name);
    py_tuple(f, t->shape, t->ndim);
    fputs(", expected ", f);
    py_tuple(f, want, want_ndim);
    if (fclose(f)) {
        free(text);
        return NULL;
    }
    return text;
}

static char *head_text(const H5Tensor *k, const H5Tensor *b)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    fputs("predictions.kernel is ", f);
    py_tuple(f, k->shape, k->ndim);
    fputs(" and predictions.bias is ", f);
    py_tuple(f, b->shape, b->ndim);
    fprintf(f, ", expected (%d, C) and (C,)", FEATURES);
    if (fclose(f)) {
        free(text);
        return NULL;
    }
    return text;
}

static const H5Tensor *find_tensor(const H5Weights *h, const char *name)
{
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->t[i].name, name))
            return &h->t[i];
    return NULL;
}

static int check_resnet50(const H5Weights *h, Error *err)
{
    Expected want[BACKBONE_TENSORS];
    int n_want = backbone_shapes(want);
    StrList missing = {0}, wrong = {0}, unexpected = {0};
    int oom = 0, rc = -1;
    for (int i = 0; i < n_want; i++)
        if (!find_tensor(h, want[i].name))
            oom |= strlist_push(&missing, strdup(want[i].name));
    for (int i = 0; i < h->n; i++) {
        const H5Tensor *t = &h->t[i];
        const Expected *e = NULL;
        for (int j = 0; j < n_want && !e; j++)
            if (!strcmp(want[j].name, t->name))
                e = &want[j];
        if (e) {
            int same = t->ndim == e->ndim;
            for (int d = 0; same && d < e->ndim; d++)
                same = t->shape[d] == e->shape[d];
            if (!same)
                oom |= strlist_push(&wrong, wrong_text(t, e->shape, e->ndim));
        } else if (strcmp(t->name, "predictions.kernel") && strcmp(t->name, "predictions.bias")) {
            oom |= strlist_push(&unexpected, strdup(t->name));
        }
    }
    const H5Tensor *k = find_tensor(h, "predictions.kernel");
    const H5Tensor *b = find_tensor(h, "predictions.bias");
    if (!k != !b)
        oom |= strlist_push(&wrong, strdup("predictions.kernel and predictions.bias must both "
                                           "be present or both absent"));
    else if (k && (k->ndim != 2 || k->shape[0] != FEATURES || b->ndim != 1 ||
                   b->shape[0] != k->shape[1]))
        oom |= strlist_push(&wrong, head_text(k, b));
    if (oom) {
        error_set(err, "%s: out of memory", h->path);
        goto done;
    }
    if (!missing.n && !wrong.n && !unexpected.n) {
        rc = 0;
        goto done;
    }
    /* the converter's text when it fits an Error, else shorter lists */
    static const int limits[][2] = {{20, INT_MAX}, {10, 10}, {5, 5}, {2, 2}, {1, 1}};
    char *text = NULL;
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        free(text);
        text = problems_text(h->path, &missing, &wrong, &unexpected, limits[i][0],
                             limits[i][1]);
        if (!text || strlen(text) < ERROR_MSG_MAX)
            break;
    }
    error_set(err, "%s", text ? text : "out of memory");
    free(text);
done:
    strlist_free(&missing);
    strlist_free(&wrong);
    strlist_free(&unexpected);
    return rc;
}

/* ---- the public functions --------------------------------------------------------- */

static void close_locked(H5Weights *h)
{
    if (h->root >= 0)
        H5Gclose(h->root);
    if (h->file >= 0)
        H5Fclose(h->file);
    h->root = h->file = H5I_INVALID_HID;
}

void h5weights_close(H5Weights *h)
{
    if (!h)
        return;
    h5_lock();
    close_locked(h);
    h5_unlock();
    for (int i = 0; i < h->n; i++) {
        free(h->t[i].name);
        free(h->t[i].dataset);
    }
    free(h->t);
    free(h->path);
    free(h);
}

int h5weights_open(H5Weights **out, const char *path, Error *err)
{
    *out = NULL;
    H5Weights *h = calloc(1, sizeof *h);
    if (!h || !(h->path = strdup(path))) {
        free(h);
        return error_set(err, "%s: out of memory", path);
    }
    h->file = h->root = H5I_INVALID_HID;
    int rc = -1;
    h5_lock();
    /* closing the file closes whatever is still open in it; a file another process
     * holds open for writing is refused where the file system has locks */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_file_locking(fapl, 1, 1) < 0) {
        error_set(err, "%s: cannot set up libhdf5", path);
        goto done;
    }
    h->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (h->file < 0) {
        char why[420];
        h5_reason(why, sizeof why);
        error_set(err, "%s: cannot open as HDF5: %s", path, why);
        goto done;
    }
    /* a full-model save keeps the weights under model_weights */
    if (h5_exists(h->file, "model_weights")) {
        h->root = h5_open_as(h->file, "model_weights", H5I_GROUP);
        if (h->root < 0) {
            error_set(err, "%s: 'model_weights' is not a group", path);
            goto done;
        }
    } else if ((h->root = H5Gopen2(h->file, "/", H5P_DEFAULT)) < 0) {
        char why[420];
        h5_reason(why, sizeof why);
        error_set(err, "%s: cannot open the root group: %s", path, why);
        goto done;
    }
    if (read_layers(h, err) || check_resnet50(h, err))
        goto done;
    rc = 0;
done:
    if (fapl >= 0)
        H5Pclose(fapl);
    if (rc)
        close_locked(h);
    h5_unlock();
    if (rc) {
        h5weights_close(h);
        return -1;
    }
    *out = h;
    return 0;
}

int h5weights_count(const H5Weights *h)
{
    return h->n;
}

const H5Tensor *h5weights_tensor(const H5Weights *h, int i)
{
    return &h->t[i];
}

/* 1 when t is IEEE 754 binary16 (either byte order). */
static int is_half(hid_t t)
{
    size_t spos, epos, esize, mpos, msize;
    return H5Tget_size(t) == 2 &&
           H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos == 15 &&
           epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(t) == 15;
}

int h5weights_read_f32(H5Weights *h, int i, float *out, Error *err)
{
    const H5Tensor *t = &h->t[i];
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    /* How each float type becomes the bits numpy's astype("<f4") gives: float32
     * as it is (libhdf5 only swaps bytes); double and wider through their C
     * cast to float, as numpy does (libhdf5's own conversion of a big-endian
     * double truncates instead of rounding); binary16 as raw bits, converted by
     * safetensors_read_f32 like a safetensors F16 (libhdf5 turns a half NaN
     * into another NaN than numpy). Any other float format: libhdf5's conversion
     * to float (numpy has no such type to compare with). */
    enum { AS_FLOAT, AS_DOUBLE, AS_LDOUBLE, AS_HALF } kind = AS_FLOAT;
    void *buf = NULL;
    hid_t mt = H5I_INVALID_HID;
    int rc = -1;
    h5_lock();
    hid_t d = H5Dopen2(h->root, t->dataset, H5P_DEFAULT);
    hid_t ft = d < 0 ? H5I_INVALID_HID : H5Dget_type(d);
    if (ft < 0)
        goto h5fail;
    size_t size = H5Tget_size(ft);
    if (is_half(ft)) {
        kind = AS_HALF;
        if ((mt = H5Tcopy(ft)) < 0 || H5Tset_order(mt, H5T_ORDER_LE) < 0)
            goto h5fail;
        buf = malloc(n * 2 + 1);
    } else if (size == 8) {
        kind = AS_DOUBLE;
        buf = malloc(n * sizeof(double) + 1);
    } else if (size > 8) {
        kind = AS_LDOUBLE;
        buf = malloc(n * sizeof(long double) + 1);
    }
    if (kind != AS_FLOAT && !buf) {
        error_set(err, "%s: out of memory for '%s'", h->path, t->dataset);
        goto done;
    }
    hid_t mem = kind == AS_HALF ? mt : kind == AS_DOUBLE ? H5T_NATIVE_DOUBLE
                : kind == AS_LDOUBLE ? H5T_NATIVE_LDOUBLE : H5T_NATIVE_FLOAT;
    if (H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, kind == AS_FLOAT ? (void *)out : buf) < 0)
        goto h5fail;
    rc = 0;
    goto done;
h5fail:;
    char why[420];
    h5_reason(why, sizeof why);
    error_set(err, "%s: cannot read '%s': %s", h->path, t->dataset, why);
done:
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (d >= 0) H5Dclose(d);
    h5_unlock();
    if (rc == 0 && kind == AS_DOUBLE)
        for (size_t k = 0; k < n; k++)
            out[k] = (float)((const double *)buf)[k];
    if (rc == 0 && kind == AS_LDOUBLE)
        for (size_t k = 0; k < n; k++)
            out[k] = (float)((const long double *)buf)[k];
    if (rc == 0 && kind == AS_HALF) {
        /* a one-tensor safetensors view of the raw halves */
        StTensor view_t;
        memset(&view_t, 0, sizeof view_t);
        view_t.name = t->name;
        view_t.dtype = ST_F16;
        view_t.ndim = 1;
        view_t.shape[0] = (int64_t)n;
        view_t.end = n * 2;
        SafeTensors view;
        memset(&view, 0, sizeof view);
        view.n_tensors = 1;
        view.tensors = &view_t;
        view.data = buf;
        view.data_len = n * 2;
        view.path = h->path;
        rc = safetensors_read_f32(&view, &view_t, out, err);
    }
    free(buf);
    return rc;
}
