/*
 * dataset.c: the dataset scan (layout detection, recursive walk with symlink
 * confinement, parallel decode, split, report). See dataset.h for the contract
 * and docs/datasets.md for the user-facing rules.
 *
 * The scan runs in stages, each over plain arrays owned by a Scan context that one
 * function frees on every path:
 *   1. resolve the root (and confine it to allowed_root), detect the layout;
 *   2. list the class folders, walk each recursively into ScanFile records
 *      (split folder, label, path); sort them by (split, label, path);
 *   3. decode every file once on a small pthread pool; each file has its own
 *      DecodeSlot, so the results do not depend on the thread count or timing;
 *   4. per class: usable files, the stratified split (class-folder layout), the
 *      items in (split, label, path) order, problems sorted by path;
 *   5. the report (counts, sizes, gray/alpha, duplicates, channel statistics).
 */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "rng.h"

/* A file found by the walk. split is the folder's split (split layout) or 0
 * (class-folder layout, assigned later). */
typedef struct {
    char *path;
    int label;
    int split;
} ScanFile;

/* The decode result of one file, written by exactly one worker. */
typedef struct {
    int ok;
    int oom;                 /* an allocation failed while recording the result */
    int width, height;
    int was_gray, had_alpha;
    uint64_t hash;
    uint64_t sum[3];         /* per channel sum and sum of squares of 0..255 values */
    uint64_t sumsq[3];
    char *reason;            /* failure reason, owned */
} DecodeSlot;

typedef struct {
    dev_t dev;
    ino_t ino;
} DirId;

typedef struct {
    ScanFile *files;
    int n_files, cap_files;
    DatasetProblem *problems;
    int n_problems, cap_problems;
    DirId *visited;          /* folders walked for the current class */
    int n_visited, cap_visited;
    char **class_names[SPLIT_COUNT];   /* per split folder, sorted */
    int n_class_names[SPLIT_COUNT];
    int loose_files[SPLIT_COUNT];      /* files lying next to the class folders */
    DecodeSlot *slots;
    int *item_file;          /* item index -> file index */
    const char *root;        /* ds->root, borrowed */
} Scan;

DatasetOptions dataset_default_options(void)
{
    DatasetOptions o = {
        .allowed_root = NULL,
        .val_fraction = 0.2,
        .seed = 0,
        .max_pixels = 50000000,
        .threads = 0,
    };
    return o;
}

/* ---- small helpers ---------------------------------------------------------- */

static int oom(Error *err)
{
    return error_set(err, "out of memory while scanning the dataset");
}

/* Makes room for need elements of size elem in array p (capacity *cap): returns the
 * possibly moved array, or NULL when out of memory (p is then still valid). */
static void *grow(void *p, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return p;
    int ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > (1 << 29))
            return NULL;
        ncap *= 2;
    }
    void *q = realloc(p, (size_t)ncap * elem);
    if (q)
        *cap = ncap;
    return q;
}

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int slash = la > 0 && a[la - 1] == '/';
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    if (!slash)
        p[la++] = '/';
    memcpy(p + la, b, lb + 1);
    return p;
}

/* path lies inside dir (both absolute and canonical): dir itself or below it, on a
 * component boundary, so /data/cats is not inside /data/cat. */
static int path_inside(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return path[0] == '/';
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Lexical normalisation of path (made absolute against the working directory):
 * removes ".", "..", repeated slashes. Used only to judge a root that does not
 * exist, so a missing path outside allowed_root gets the same answer as an
 * existing one (no probing of the file system through error messages). */
static char *path_lexical(const char *path)
{
    char cwd[4096];
    const char *base = "";
    if (path[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return NULL;
        base = cwd;
    }
    size_t lb = strlen(base), lp = strlen(path);
    char *in = malloc(lb + lp + 2);
    char *out = malloc(lb + lp + 2);
    if (!in || !out) {
        free(in);
        free(out);
        return NULL;
    }
    snprintf(in, lb + lp + 2, "%s/%s", base, path);
    size_t o = 0;
    char *save = NULL;
    for (char *tok = strtok_r(in, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (strcmp(tok, ".") == 0)
            continue;
        if (strcmp(tok, "..") == 0) {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            continue;
        }
        out[o++] = '/';
        size_t lt = strlen(tok);
        memcpy(out + o, tok, lt);
        o += lt;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    free(in);
    return out;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- problems ---------------------------------------------------------------- */

/* Records a skipped path. reason is formatted; the path is copied. */
static int add_problem(Scan *s, const char *path, Error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int add_problem(Scan *s, const char *path, Error *err, const char *fmt, ...)
{
    char reason[ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    DatasetProblem *np = grow(s->problems, &s->cap_problems, s->n_problems + 1, sizeof *np);
    if (!np)
        return oom(err);
    s->problems = np;
    DatasetProblem *p = &s->problems[s->n_problems];
    p->path = strdup(path);
    p->reason = strdup(reason);
    if (!p->path || !p->reason) {
        free(p->path);
        free(p->reason);
        return oom(err);
    }
    s->n_problems++;
    return 0;
}

static int cmp_problem(const void *a, const void *b)
{
    const DatasetProblem *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    return c ? c : strcmp(x->reason, y->reason);
}

/* ---- directory walk ---------------------------------------------------------- */

/* The non-hidden names in dir, sorted by byte order, into *names (owned by the
 * caller). Returns -1 with errno set when the folder cannot be read, -2 when out of
 * memory. */
static int list_dir(const char *dir, char ***names, int *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **v = NULL;
    int nv = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    errno = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char **nvp = grow(v, &cap, nv + 1, sizeof *v);
        if (nvp)
            v = nvp;
        if (!nvp || !(v[nv] = strdup(e->d_name))) {
            rc = -2;
            break;
        }
        nv++;
        errno = 0;
    }
    if (rc == 0 && errno != 0)
        rc = -1;
    int saved = errno;
    closedir(d);
    if (rc) {
        free_names(v, nv);
        errno = saved;
        return rc;
    }
    if (nv > 1)
        qsort(v, (size_t)nv, sizeof *v, cmp_str);
    *names = v;
    *n = nv;
    return 0;
}

enum { ENT_SKIP = 0, ENT_DIR, ENT_FILE };

/* Classifies path, an entry found under the root, into *kind (and its stat into
 * *st). A symlink is resolved: one whose target lies outside the root stops the
 * scan (-1, naming the link); a broken one, or anything that is neither a regular
 * file nor a folder, is recorded as a problem and comes back as ENT_SKIP. */
static int entry_kind(Scan *s, const char *path, struct stat *st, int *kind, Error *err)
{
    struct stat lst;
    *kind = ENT_SKIP;
    if (lstat(path, &lst) != 0)
        return add_problem(s, path, err, "cannot stat: %s", strerror(errno));
    if (S_ISLNK(lst.st_mode)) {
        char *real = realpath(path, NULL);
        if (!real) {
            if (errno == ENOMEM)
                return oom(err);
            return add_problem(s, path, err, "broken symlink: %s", strerror(errno));
        }
        int inside = path_inside(real, s->root);
        free(real);
        if (!inside)
            return error_set(err, "symlink '%s' resolves outside the data root '%s'", path,
                             s->root);
        if (stat(path, st) != 0)
            return add_problem(s, path, err, "cannot stat the symlink's target: %s",
                               strerror(errno));
    } else {
        *st = lst;
    }
    if (S_ISDIR(st->st_mode))
        *kind = ENT_DIR;
    else if (S_ISREG(st->st_mode))
        *kind = ENT_FILE;
    else
        return add_problem(s, path, err, "not a regular file or folder");
    return 0;
}

/* Marks the folder visited; returns 1 when it already was (a symlink loop, or a
 * second link to the same folder), -1 when out of memory. */
static int visit_dir(Scan *s, const struct stat *st)
{
    for (int i = 0; i < s->n_visited; i++)
        if (s->visited[i].dev == st->st_dev && s->visited[i].ino == st->st_ino)
            return 1;
    DirId *nv = grow(s->visited, &s->cap_visited, s->n_visited + 1, sizeof *nv);
    if (!nv)
        return -1;
    s->visited = nv;
    s->visited[s->n_visited++] = (DirId){st->st_dev, st->st_ino};
    return 0;
}

static int add_file(Scan *s, char *path, int label, int split, Error *err)
{
    ScanFile *nf = grow(s->files, &s->cap_files, s->n_files + 1, sizeof *nf);
    if (!nf) {
        free(path);
        return oom(err);
    }
    s->files = nf;
    s->files[s->n_files++] = (ScanFile){path, label, split};
    return 0;
}

/* Collects every regular file under dir (recursively) as (label, split). */
static int walk_dir(Scan *s, const char *dir, int label, int split, Error *err)
{
    char **names;
    int n;
    int rc = list_dir(dir, &names, &n);
    if (rc == -2)
        return oom(err);
    if (rc == -1)
        return add_problem(s, dir, err, "cannot read folder: %s", strerror(errno));
    int i = 0;
    for (; i < n; i++) {
        char *path = path_join(dir, names[i]);
        if (!path)
            goto fail_oom;
        struct stat st;
        int kind;
        if (entry_kind(s, path, &st, &kind, err)) {
            free(path);
            goto fail;
        }
        if (kind == ENT_DIR) {
            int seen = visit_dir(s, &st);
            if (seen < 0) {
                free(path);
                goto fail_oom;
            }
            if (seen ? add_problem(s, path, err,
                                   "folder already walked (symlink loop or second link to "
                                   "it); skipped")
                     : walk_dir(s, path, label, split, err)) {
                free(path);
                goto fail;
            }
            free(path);
        } else if (kind == ENT_FILE) {
            if (add_file(s, path, label, split, err))
                goto fail;
        } else {
            free(path);
        }
    }
    free_names(names, n);
    return 0;
fail_oom:
    oom(err);
fail:
    free_names(names, n);
    return -1;
}

/* The class folders of dir (sorted), into s->class_names[split]; files lying next
 * to them are counted in s->loose_files[split] and otherwise ignored. */
static int list_classes(Scan *s, const char *dir, int split, Error *err)
{
    char **names;
    int n;
    int rc = list_dir(dir, &names, &n);
    if (rc == -2)
        return oom(err);
    if (rc == -1)
        return error_set(err, "cannot read folder '%s': %s", dir, strerror(errno));
    char **classes = calloc((size_t)(n ? n : 1), sizeof *classes);
    if (!classes) {
        free_names(names, n);
        return oom(err);
    }
    int nc = 0;
    for (int i = 0; i < n; i++) {
        char *path = path_join(dir, names[i]);
        if (!path)
            goto fail_oom;
        struct stat st;
        int kind;
        rc = entry_kind(s, path, &st, &kind, err);
        free(path);
        if (rc)
            goto fail;
        if (kind == ENT_DIR) {
            classes[nc++] = names[i];
            names[i] = NULL;
        } else if (kind == ENT_FILE) {
            s->loose_files[split]++;
        }
    }
    free_names(names, n);
    s->class_names[split] = classes;
    s->n_class_names[split] = nc;
    return 0;
fail_oom:
    oom(err);
fail:
    free_names(names, n);
    free_names(classes, nc);
    return -1;
}

/* ---- decoding ---------------------------------------------------------------- */

typedef struct {
    const ScanFile *files;
    DecodeSlot *slots;
    int n;
    uint64_t max_pixels;
    atomic_int next;
} DecodePool;

/* FNV-1a 64 over width and height (4 bytes each, little-endian) then the RGB
 * bytes: equal hashes mean equal pixels up to a 2^-64 collision chance. */
static uint64_t pixel_hash(const Image *img)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const uint64_t prime = 0x100000001b3ULL;
    uint32_t dims[2] = {(uint32_t)img->width, (uint32_t)img->height};
    for (int d = 0; d < 2; d++)
        for (int b = 0; b < 4; b++) {
            h ^= (dims[d] >> (8 * b)) & 0xff;
            h *= prime;
        }
    size_t n = (size_t)img->width * (size_t)img->height * 3;
    for (size_t i = 0; i < n; i++) {
        h ^= img->rgb[i];
        h *= prime;
    }
    return h;
}

/* Decodes one file into its slot. Called from several threads, each on its own
 * slot. */
static void decode_one(DecodeSlot *slot, const char *path, uint64_t max_pixels)
{
    Image img;
    memset(&img, 0, sizeof img);
    Error e = {{0}};
    if (image_load(&img, path, max_pixels, &e) != 0) {
        /* image_load's reasons start with the path, which the problem already holds */
        const char *reason = e.msg;
        size_t lp = strlen(path);
        if (strncmp(reason, path, lp) == 0 && reason[lp] == ':')
            reason += lp + 1 + (reason[lp + 1] == ' ');
        slot->reason = strdup(reason[0] ? reason : "cannot decode");
        if (!slot->reason)
            slot->oom = 1;
        return;
    }
    slot->ok = 1;
    slot->width = img.width;
    slot->height = img.height;
    slot->was_gray = img.was_gray != 0;
    slot->had_alpha = img.had_alpha != 0;
    slot->hash = pixel_hash(&img);
    size_t npix = (size_t)img.width * (size_t)img.height;
    const uint8_t *p = img.rgb;
    for (size_t i = 0; i < npix; i++, p += 3)
        for (int c = 0; c < 3; c++) {
            slot->sum[c] += p[c];
            slot->sumsq[c] += (uint64_t)p[c] * p[c];
        }
    image_free(&img);
}

static void *decode_worker(void *arg)
{
    DecodePool *pool = arg;
    for (;;) {
        int i = atomic_fetch_add(&pool->next, 1);
        if (i >= pool->n)
            break;
        decode_one(&pool->slots[i], pool->files[i].path, pool->max_pixels);
    }
    return NULL;
}

/* Decodes every file with up to `threads` threads (the caller's included). A
 * thread that cannot be created only means fewer workers. */
static void decode_all(Scan *s, uint64_t max_pixels, int threads)
{
    DecodePool pool = {.files = s->files, .slots = s->slots, .n = s->n_files,
                       .max_pixels = max_pixels};
    atomic_init(&pool.next, 0);
    if (threads > s->n_files)
        threads = s->n_files;
    pthread_t tid[256];
    int started = 0;
    for (int t = 1; t < threads && t < 256; t++)
        if (pthread_create(&tid[started], NULL, decode_worker, &pool) == 0)
            started++;
    decode_worker(&pool);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
}

/* ---- scan -------------------------------------------------------------------- */

static int cmp_file(const void *a, const void *b)
{
    const ScanFile *x = a, *y = b;
    if (x->split != y->split)
        return x->split - y->split;
    if (x->label != y->label)
        return x->label - y->label;
    return strcmp(x->path, y->path);
}

static void free_problems(DatasetProblem *p, int n)
{
    for (int i = 0; i < n; i++) {
        free(p[i].path);
        free(p[i].reason);
    }
    free(p);
}

static void scan_free(Scan *s)
{
    for (int i = 0; i < s->n_files; i++)
        free(s->files[i].path);
    free(s->files);
    free_problems(s->problems, s->n_problems);
    free(s->visited);
    for (int k = 0; k < SPLIT_COUNT; k++)
        free_names(s->class_names[k], s->n_class_names[k]);
    if (s->slots)
        for (int i = 0; i < s->n_files; i++)
            free(s->slots[i].reason);
    free(s->slots);
    free(s->item_file);
}

/* Resolves root into ds->root and confines it to allowed_root. */
static int resolve_root(Dataset *ds, const char *root, const char *allowed_root, Error *err)
{
    char *allowed = NULL;
    int rc = -1;
    if (allowed_root) {
        allowed = realpath(allowed_root, NULL);
        if (!allowed)
            return error_set(err, "allowed data root '%s' cannot be resolved: %s", allowed_root,
                             strerror(errno));
    }
    ds->root = realpath(root, NULL);
    if (!ds->root) {
        int e = errno;
        if (e == ENOMEM) {
            oom(err);
            goto out;
        }
        if (allowed) {
            char *lex = path_lexical(root);
            if (!lex) {
                oom(err);
                goto out;
            }
            int inside = path_inside(lex, allowed);
            free(lex);
            if (!inside) {
                error_set(err, "data root '%s' is outside the allowed data root '%s'", root,
                          allowed);
                goto out;
            }
        }
        if (e == ENOENT)
            error_set(err, "data root '%s' does not exist", root);
        else
            error_set(err, "data root '%s' cannot be resolved: %s", root, strerror(e));
        goto out;
    }
    if (allowed && !path_inside(ds->root, allowed)) {
        error_set(err, "data root '%s' (resolved '%s') is outside the allowed data root '%s'",
                  root, ds->root, allowed);
        goto out;
    }
    struct stat st;
    if (stat(ds->root, &st) != 0) {
        error_set(err, "data root '%s' cannot be read: %s", root, strerror(errno));
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        error_set(err, "data root '%s' is not a folder", root);
        goto out;
    }
    rc = 0;
out:
    free(allowed);
    return rc;
}

/* Whether ROOT/name is a folder, following a symlink only when its target stays
 * inside the root (one leading out is an error). Records no problem: a broken
 * entry is simply not a folder here, and the class listing reports it. */
static int is_subdir(Scan *s, const char *name, int *yes, Error *err)
{
    *yes = 0;
    char *path = path_join(s->root, name);
    if (!path)
        return oom(err);
    struct stat st;
    int rc = 0;
    if (lstat(path, &st) == 0) {
        if (!S_ISLNK(st.st_mode)) {
            *yes = S_ISDIR(st.st_mode);
        } else {
            char *real = realpath(path, NULL);
            if (real && !path_inside(real, s->root))
                rc = error_set(err, "symlink '%s' resolves outside the data root '%s'", path,
                               s->root);
            else if (real && stat(path, &st) == 0)
                *yes = S_ISDIR(st.st_mode);
            free(real);
        }
    }
    free(path);
    return rc;
}

/* The split layout's val folder name ("val" or "validation") into *val_name, or
 * NULL for the class-folder layout. */
static int detect_layout(Scan *s, const char **val_name, Error *err)
{
    int train, val, validation;
    *val_name = NULL;
    if (is_subdir(s, "train", &train, err) || is_subdir(s, "val", &val, err) ||
        is_subdir(s, "validation", &validation, err))
        return -1;
    if (!train)
        return 0;
    if (val && validation)
        return error_set(err, "data root '%s' has train/ and both val/ and validation/: keep "
                              "one of them", s->root);
    if (!val && !validation)
        return error_set(err, "data root '%s' has a train/ folder but no val/ or validation/ "
                              "folder next to it", s->root);
    *val_name = val ? "val" : "validation";
    return 0;
}

/* Train and val must hold the same class folders; names the first difference. */
static int check_same_classes(Scan *s, const char *val_name, Error *err)
{
    char **a = s->class_names[SPLIT_TRAIN], **b = s->class_names[SPLIT_VAL];
    int na = s->n_class_names[SPLIT_TRAIN], nb = s->n_class_names[SPLIT_VAL];
    int i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : strcmp(a[i], b[j]);
        if (c < 0)
            return error_set(err, "class '%s' is in train/ but not in %s/", a[i], val_name);
        if (c > 0)
            return error_set(err, "class '%s' is in %s/ but not in train/", b[j], val_name);
        i++;
        j++;
    }
    return 0;
}

/* The error for a class none of whose files decoded: the count and the first
 * reasons (as many as fit). */
static int no_usable_error(const Scan *s, const Dataset *ds, int first, int end, int label,
                           const char *where, Error *err)
{
    char list[ERROR_MSG_MAX] = "";
    size_t used = 0;
    int skipped = end - first;
    for (int f = first; f < end && used + 1 < sizeof list; f++) {
        const char *rel = s->files[f].path + strlen(ds->root);
        rel += *rel == '/';
        int w = snprintf(list + used, sizeof list - used, "%s%s: %s", f > first ? "; " : "",
                         rel, s->slots[f].reason);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (skipped == 0)
        return error_set(err, "class '%s'%s has no usable image (no files)",
                         ds->classes[label], where);
    return error_set(err, "class '%s'%s has no usable image (%d file%s skipped: %s)",
                     ds->classes[label], where, skipped, skipped == 1 ? "" : "s", list);
}

/* Builds ds->report from the items and their decode slots. */
static int build_report(Dataset *ds, const Scan *s, Error *err)
{
    DatasetReport *r = &ds->report;
    int n = ds->n_items;
    for (int k = 0; k < SPLIT_COUNT; k++) {
        int lo = 0, hi = 0;
        for (int c = 0; c < ds->n_classes; c++) {
            int v = ds->counts[c].count[k];
            r->total[k] += v;
            if (v > hi)
                hi = v;
            if (v > 0 && (lo == 0 || v < lo))
                lo = v;
        }
        r->imbalance[k] = lo ? (double)hi / lo : 0.0;
    }

    int *w = malloc((size_t)n * sizeof *w), *h = malloc((size_t)n * sizeof *h);
    if (!w || !h) {
        free(w);
        free(h);
        return oom(err);
    }
    double sum[SPLIT_COUNT][3] = {{0}}, sumsq[SPLIT_COUNT][3] = {{0}};
    double isum[SPLIT_COUNT][3] = {{0}}, isumsq[SPLIT_COUNT][3] = {{0}};
    double npix[SPLIT_COUNT] = {0};
    int *side = malloc((size_t)n * sizeof *side), nside[SPLIT_COUNT] = {0};
    if (!side) {
        free(w);
        free(h);
        return oom(err);
    }
    for (int i = 0; i < n; i++) {
        const DecodeSlot *sl = &s->slots[s->item_file[i]];
        int k = ds->items[i].split;
        w[i] = sl->width;
        h[i] = sl->height;
        r->n_gray += sl->was_gray;
        r->n_alpha += sl->had_alpha;
        r->gray[k] += sl->was_gray;
        double area = (double)sl->width * sl->height;
        npix[k] += area;
        for (int c = 0; c < 3; c++) {
            sum[k][c] += (double)sl->sum[c];
            sumsq[k][c] += (double)sl->sumsq[c];
            double m = area > 0 ? (double)sl->sum[c] / area : 0;
            isum[k][c] += m;
            isumsq[k][c] += m * m;
        }
    }
    /* median shorter side per split: items are sorted by split */
    for (int k = 0; k < SPLIT_COUNT; k++) {
        for (int i = 0; i < n; i++)
            if (ds->items[i].split == k) {
                const DecodeSlot *sl = &s->slots[s->item_file[i]];
                side[nside[k]++] = sl->width < sl->height ? sl->width : sl->height;
            }
        if (nside[k]) {
            qsort(side, (size_t)nside[k], sizeof *side, cmp_int);
            r->side_median[k] = side[(nside[k] - 1) / 2];
        }
        for (int c = 0; c < 3 && r->total[k]; c++) {
            double m = isum[k][c] / r->total[k], v = isumsq[k][c] / r->total[k] - m * m;
            r->image_mean_std[k][c] = v > 0 ? sqrt(v) : 0.0;
        }
    }
    free(side);
    qsort(w, (size_t)n, sizeof *w, cmp_int);
    qsort(h, (size_t)n, sizeof *h, cmp_int);
    r->width_min = w[0];
    r->width_median = w[(n - 1) / 2];
    r->width_max = w[n - 1];
    r->height_min = h[0];
    r->height_median = h[(n - 1) / 2];
    r->height_max = h[n - 1];
    free(w);
    free(h);
    for (int k = 0; k < SPLIT_COUNT; k++)
        for (int c = 0; c < 3; c++) {
            if (npix[k] == 0)
                continue;
            double mean = sum[k][c] / npix[k];
            double var = sumsq[k][c] / npix[k] - mean * mean;
            r->mean[k][c] = mean;
            r->std[k][c] = var > 0 ? sqrt(var) : 0.0;
        }
    r->n_problems = ds->n_problems;
    return 0;
}

typedef struct {
    uint64_t hash;
    int index;
} HashIndex;

static int cmp_hash_index(const void *a, const void *b)
{
    const HashIndex *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->index - y->index;
}

/* One pair per val item whose pixels equal a train item's: (the lowest such train
 * index, the val index), in val order. */
static int find_duplicates(Dataset *ds, Error *err)
{
    int n_train = ds->report.total[SPLIT_TRAIN];
    if (n_train == 0 || n_train == ds->n_items)
        return 0;
    HashIndex *t = malloc((size_t)n_train * sizeof *t);
    int n_val = ds->n_items - n_train;
    int(*pairs)[2] = malloc((size_t)n_val * sizeof *pairs);
    if (!t || !pairs) {
        free(t);
        free(pairs);
        return oom(err);
    }
    for (int i = 0; i < n_train; i++)
        t[i] = (HashIndex){ds->items[i].hash, i};
    qsort(t, (size_t)n_train, sizeof *t, cmp_hash_index);
    int np = 0;
    for (int v = n_train; v < ds->n_items; v++) {
        uint64_t key = ds->items[v].hash;
        int lo = 0, hi = n_train;
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (t[mid].hash < key)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < n_train && t[lo].hash == key) {
            pairs[np][0] = t[lo].index;
            pairs[np][1] = v;
            np++;
        }
    }
    free(t);
    if (np == 0) {
        free(pairs);
        return 0;
    }
    ds->duplicates = pairs;
    ds->n_duplicates = np;
    ds->report.n_cross_duplicates = np;
    return 0;
}

/* Shuffles idx[0..n) with Fisher-Yates (from the end, j = rng_below(i + 1)). */
static void shuffle(int *idx, int n, Rng *r)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1);
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* Stage 4: usable files per class, the split, items in (split, label, path) order. */
static int assign_items(Dataset *ds, Scan *s, const DatasetOptions *opt, const char *val_name,
                        Error *err)
{
    int nf = s->n_files;
    int *split_of = malloc((size_t)(nf ? nf : 1) * sizeof *split_of);
    int *idx = malloc((size_t)(nf ? nf : 1) * sizeof *idx);
    if (!split_of || !idx) {
        free(split_of);
        free(idx);
        return oom(err);
    }
    int rc = -1;
    int n_usable = 0;
    /* files are sorted by (split folder, label, path): walk each group, including
     * the empty ones (a class folder with no file at all) */
    int n_splits = val_name ? 2 : 1;
    int g = 0;
    for (int k = 0; k < n_splits; k++)
        for (int label = 0; label < ds->n_classes; label++) {
            int end = g;
            while (end < nf && s->files[end].split == k && s->files[end].label == label)
                end++;
            int nu = 0;
            for (int f = g; f < end; f++) {
                split_of[f] = k;
                if (s->slots[f].ok)
                    idx[nu++] = f;
            }
            if (nu == 0) {
                char where[32] = "";
                if (val_name)
                    snprintf(where, sizeof where, " in %s/", k == SPLIT_TRAIN ? "train" : val_name);
                no_usable_error(s, ds, g, end, label, where, err);
                goto out;
            }
            if (!val_name) {
                int n_val = (int)round(nu * opt->val_fraction);
                if (n_val > nu - 1)
                    n_val = nu - 1;
                Rng r;
                rng_stream(&r, opt->seed, RNG_SPLIT, (uint64_t)label, 0);
                shuffle(idx, nu, &r);
                for (int i = 0; i < nu; i++)
                    split_of[idx[i]] = i < n_val ? SPLIT_VAL : SPLIT_TRAIN;
            }
            for (int f = g; f < end; f++)
                if (s->slots[f].ok)
                    ds->counts[label].count[split_of[f]]++;
            n_usable += nu;
            g = end;
        }

    ds->items = calloc((size_t)(n_usable ? n_usable : 1), sizeof *ds->items);
    s->item_file = malloc((size_t)(n_usable ? n_usable : 1) * sizeof *s->item_file);
    if (!ds->items || !s->item_file) {
        oom(err);
        goto out;
    }
    /* within one split the files are already in (label, path) order: in the split
     * layout they are grouped by split folder; in the class-folder layout all have
     * split 0 and the assignment only filters them */
    for (int k = 0; k < SPLIT_COUNT; k++)
        for (int f = 0; f < nf; f++) {
            if (!s->slots[f].ok || split_of[f] != k)
                continue;
            DatasetItem *it = &ds->items[ds->n_items];
            it->path = strdup(s->files[f].path);
            if (!it->path) {
                oom(err);
                goto out;
            }
            it->label = s->files[f].label;
            it->split = k;
            it->width = s->slots[f].width;
            it->height = s->slots[f].height;
            it->hash = s->slots[f].hash;
            s->item_file[ds->n_items++] = f;
        }
    rc = 0;
out:
    free(split_of);
    free(idx);
    return rc;
}

/* Moves decode failures into the problem list, sorts it by path and hands it to ds. */
static int collect_problems(Dataset *ds, Scan *s, Error *err)
{
    for (int f = 0; f < s->n_files; f++)
        if (!s->slots[f].ok && add_problem(s, s->files[f].path, err, "%s", s->slots[f].reason))
            return -1;
    if (s->n_problems > 1)
        qsort(s->problems, (size_t)s->n_problems, sizeof *s->problems, cmp_problem);
    ds->problems = s->problems;
    ds->n_problems = s->n_problems;
    s->problems = NULL;
    s->n_problems = s->cap_problems = 0;
    return 0;
}

/* ROOT/<class> or ROOT/<train|val>/<class>, allocated. */
static char *class_dir(const Dataset *ds, const char *val_name, int split, int c)
{
    if (!val_name)
        return path_join(ds->root, ds->classes[c]);
    char *sub = path_join(ds->root, split == SPLIT_TRAIN ? "train" : val_name);
    char *dir = sub ? path_join(sub, ds->classes[c]) : NULL;
    free(sub);
    return dir;
}

static int scan(Dataset *ds, Scan *s, const char *root, const DatasetOptions *opt, Error *err)
{
    if (!(opt->val_fraction >= 0.0 && opt->val_fraction < 1.0))
        return error_set(err, "val_fraction %g is outside [0, 1)", opt->val_fraction);
    if (resolve_root(ds, root, opt->allowed_root, err))
        return -1;
    s->root = ds->root;

    const char *val_name;
    if (detect_layout(s, &val_name, err))
        return -1;
    ds->split_layout = val_name != NULL;

    /* class folders */
    int n_splits = val_name ? 2 : 1;
    for (int k = 0; k < n_splits; k++) {
        char *dir = val_name ? path_join(ds->root, k == SPLIT_TRAIN ? "train" : val_name)
                             : strdup(ds->root);
        if (!dir)
            return oom(err);
        int rc = list_classes(s, dir, k, err);
        free(dir);
        if (rc)
            return -1;
    }
    if (val_name && check_same_classes(s, val_name, err))
        return -1;
    if (s->n_class_names[SPLIT_TRAIN] == 0) {
        int loose = s->loose_files[SPLIT_TRAIN];
        if (loose)
            return error_set(err, "dataset '%s' is empty: no class folder in %s%s (%d %s "
                                  "directly there; images go in <class>/ folders)",
                             ds->root, ds->root, val_name ? "/train" : "", loose,
                             loose == 1 ? "file lies" : "files lie");
        return error_set(err, "dataset '%s' is empty: no class folder in %s%s", ds->root,
                         ds->root, val_name ? "/train" : "");
    }
    ds->n_classes = s->n_class_names[SPLIT_TRAIN];
    ds->classes = s->class_names[SPLIT_TRAIN];
    s->class_names[SPLIT_TRAIN] = NULL;
    s->n_class_names[SPLIT_TRAIN] = 0;
    ds->counts = calloc((size_t)ds->n_classes, sizeof *ds->counts);
    if (!ds->counts)
        return oom(err);

    /* files */
    for (int k = 0; k < n_splits; k++)
        for (int c = 0; c < ds->n_classes; c++) {
            char *dir = class_dir(ds, val_name, k, c);
            if (!dir)
                return oom(err);
            /* the class folder is the first visited one of its walk: a link back
             * to it from inside is a loop */
            struct stat st;
            int rc = 0;
            s->n_visited = 0;
            if (stat(dir, &st) != 0)
                rc = error_set(err, "cannot read class folder '%s': %s", dir, strerror(errno));
            else if (visit_dir(s, &st) < 0)
                rc = oom(err);
            if (rc == 0)
                rc = walk_dir(s, dir, c, k, err);
            free(dir);
            if (rc)
                return -1;
        }
    if (s->n_files > 1)
        qsort(s->files, (size_t)s->n_files, sizeof *s->files, cmp_file);

    /* decode */
    s->slots = calloc((size_t)(s->n_files ? s->n_files : 1), sizeof *s->slots);
    if (!s->slots)
        return oom(err);
    int threads = opt->threads;
    if (threads <= 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu > 0 ? (int)(ncpu < 256 ? ncpu : 256) : 1;
    }
    decode_all(s, opt->max_pixels, threads);
    for (int f = 0; f < s->n_files; f++)
        if (s->slots[f].oom)
            return oom(err);

    if (assign_items(ds, s, opt, val_name, err) || collect_problems(ds, s, err) ||
        build_report(ds, s, err) || find_duplicates(ds, err))
        return -1;
    return 0;
}

int dataset_scan(Dataset *ds, const char *root, const DatasetOptions *opt, Error *err)
{
    memset(ds, 0, sizeof *ds);
    DatasetOptions defaults = dataset_default_options();
    if (!opt)
        opt = &defaults;
    if (!root || !root[0])
        return error_set(err, "no data root given");
    Scan s;
    memset(&s, 0, sizeof s);
    int rc = scan(ds, &s, root, opt, err);
    scan_free(&s);
    if (rc)
        dataset_free(ds);
    return rc;
}

void dataset_free(Dataset *ds)
{
    if (!ds)
        return;
    free(ds->root);
    free_names(ds->classes, ds->n_classes);
    free(ds->counts);
    for (int i = 0; i < ds->n_items; i++)
        free(ds->items[i].path);
    free(ds->items);
    free_problems(ds->problems, ds->n_problems);
    free(ds->duplicates);
    memset(ds, 0, sizeof *ds);
}

int dataset_class_index(const Dataset *ds, const char *name)
{
    int lo = 0, hi = ds->n_classes - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(ds->classes[mid], name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}
