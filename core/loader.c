/*
 * loader.c: threaded batch preparation with an in-memory cache of resized
 * images (see loader.h for the contract).
 */
#include "loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "rng.h"

enum { SLOT_FREE, SLOT_BUILDING, SLOT_READY, SLOT_FAILED };

struct Loader {
    const Dataset *ds;
    int split;
    Preprocess p;
    LoaderOptions o;
    int n;                  /* images in the split */
    int *pool;              /* their item indices, in dataset order */
    int *order;             /* this epoch's order (item indices) */
    int nbatches;
    size_t per_image;       /* floats per image */

    int nslots;             /* queue_depth + 1: one more for the batch the consumer holds */
    float **xbuf;
    int **lbuf, **ibuf;
    int *slot_state, *slot_batch, *slot_n;
    char (*slot_err)[ERROR_MSG_MAX];

    uint8_t **cache;        /* per dataset item: base image or NULL */
    int *cache_w, *cache_h;

    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready;
    pthread_t *threads;
    int nthreads;
    int sync_ready;         /* mu and the conditions are initialised */
    int stop, active, epoch, next_claim, next_take, building;

    InputStats stats;
    LoaderStats st;
};

LoaderOptions loader_default_options(void)
{
    LoaderOptions o;
    memset(&o, 0, sizeof o);
    o.batch = 32;
    o.cache_bytes = (size_t)1 << 30;
    o.queue_depth = 2;
    o.max_pixels = 50000000;
    o.stats_batches = 4;
    return o;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The base (resized uint8) image of item, from the cache or decoded now. On a
 * miss that does not fit the cache, *owned is set and the caller frees it. */
static int base_image(Loader *l, int item, uint8_t **base, int *bw, int *bh, int *owned,
                      Error *err)
{
    pthread_mutex_lock(&l->mu);
    uint8_t *c = l->cache[item];
    *bw = l->cache_w[item];
    *bh = l->cache_h[item];
    pthread_mutex_unlock(&l->mu);
    if (c) {
        *base = c;
        *owned = 0;
        return 0;
    }
    Image img;
    if (image_load(&img, l->ds->items[item].path, l->o.max_pixels, err))
        return -1;
    if (preprocess_check_source(&l->p, img.width, img.height, err)) {
        error_wrap(err, "%s", l->ds->items[item].path);
        image_free(&img);
        return -1;
    }
    preprocess_base_size(&l->p, img.width, img.height, bw, bh);
    size_t bytes = (size_t)*bw * *bh * 3;
    uint8_t *b = malloc(bytes);
    if (!b) {
        image_free(&img);
        return error_set(err, "%s: out of memory resizing", l->ds->items[item].path);
    }
    preprocess_resize(b, *bw, *bh, img.rgb, img.width, img.height);
    image_free(&img);
    *base = b;
    *owned = 1;
    pthread_mutex_lock(&l->mu);
    l->st.decoded++;
    if (!l->cache[item] && l->st.cached_bytes + bytes <= l->o.cache_bytes) {
        l->cache[item] = b;
        l->cache_w[item] = *bw;
        l->cache_h[item] = *bh;
        l->st.cached_bytes += bytes;
        l->st.cached_images++;
        *owned = 0;
    }
    pthread_mutex_unlock(&l->mu);
    return 0;
}

static int build_batch(Loader *l, int b, int slot, int epoch, Error *err)
{
    int first = b * l->o.batch;
    int n = l->n - first < l->o.batch ? l->n - first : l->o.batch;
    for (int i = 0; i < n; i++) {
        int pos = first + i, item = l->order[pos];
        uint8_t *base = NULL;
        int bw = 0, bh = 0, owned = 0;
        if (base_image(l, item, &base, &bw, &bh, &owned, err))
            return -1;
        Rng r;
        rng_stream(&r, l->o.seed, RNG_AUGMENT, (uint64_t)epoch, (uint64_t)pos);
        preprocess_finish(l->xbuf[slot] + (size_t)i * l->per_image, base, bw, bh, &l->p,
                          l->o.augment ? &r : NULL);
        if (owned)
            free(base);
        l->lbuf[slot][i] = l->ds->items[item].label;
        l->ibuf[slot][i] = item;
    }
    l->slot_n[slot] = n;
    return 0;
}

static void *worker(void *arg)
{
    Loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        int b = l->next_claim;
        if (!l->active || b >= l->nbatches || b >= l->next_take + l->nslots - 1) {
            pthread_cond_wait(&l->cv_work, &l->mu);
            continue;
        }
        l->next_claim++;
        int slot = b % l->nslots, epoch = l->epoch;
        l->slot_state[slot] = SLOT_BUILDING;
        l->slot_batch[slot] = b;
        l->building++;
        pthread_mutex_unlock(&l->mu);
        Error err;
        int rc = build_batch(l, b, slot, epoch, &err);
        pthread_mutex_lock(&l->mu);
        l->building--;
        if (rc) {
            memcpy(l->slot_err[slot], err.msg, sizeof err.msg);
            l->slot_state[slot] = SLOT_FAILED;
        } else {
            l->slot_state[slot] = SLOT_READY;
            l->st.images += l->slot_n[slot];
        }
        pthread_cond_broadcast(&l->cv_ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int loader_create(Loader **out, const Dataset *ds, int split, const Preprocess *p,
                  const LoaderOptions *opt, Error *err)
{
    *out = NULL;
    if (opt->batch < 1)
        return error_set(err, "loader: batch size must be >= 1 (got %d)", opt->batch);
    if (preprocess_validate(p, err))
        return -1;
    Loader *l = calloc(1, sizeof *l);
    if (!l)
        return error_set(err, "loader: out of memory");
    l->ds = ds;
    l->split = split;
    l->p = *p;
    l->o = *opt;
    if (l->o.queue_depth <= 0) l->o.queue_depth = 2;
    int nthreads = l->o.threads;
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    for (int i = 0; i < ds->n_items; i++)
        l->n += ds->items[i].split == split;
    if (l->n == 0) {
        free(l);
        return error_set(err, "loader: the %s split has no images",
                         split == SPLIT_TRAIN ? "train" : "val");
    }
    l->nbatches = (l->n + l->o.batch - 1) / l->o.batch;
    l->per_image = (size_t)p->size * p->size * 3;
    l->nslots = l->o.queue_depth + 1;
    l->pool = malloc((size_t)l->n * sizeof(int));
    l->order = malloc((size_t)l->n * sizeof(int));
    l->cache = calloc((size_t)ds->n_items, sizeof *l->cache);
    l->cache_w = calloc((size_t)ds->n_items, sizeof(int));
    l->cache_h = calloc((size_t)ds->n_items, sizeof(int));
    l->xbuf = calloc((size_t)l->nslots, sizeof *l->xbuf);
    l->lbuf = calloc((size_t)l->nslots, sizeof *l->lbuf);
    l->ibuf = calloc((size_t)l->nslots, sizeof *l->ibuf);
    l->slot_state = calloc((size_t)l->nslots, sizeof(int));
    l->slot_batch = calloc((size_t)l->nslots, sizeof(int));
    l->slot_n = calloc((size_t)l->nslots, sizeof(int));
    l->slot_err = calloc((size_t)l->nslots, sizeof *l->slot_err);
    l->threads = calloc((size_t)nthreads, sizeof(pthread_t));
    int ok = l->pool && l->order && l->cache && l->cache_w && l->cache_h && l->xbuf && l->lbuf &&
             l->ibuf && l->slot_state && l->slot_batch && l->slot_n && l->slot_err && l->threads;
    for (int s = 0; ok && s < l->nslots; s++) {
        l->xbuf[s] = malloc((size_t)l->o.batch * l->per_image * sizeof(float));
        l->lbuf[s] = malloc((size_t)l->o.batch * sizeof(int));
        l->ibuf[s] = malloc((size_t)l->o.batch * sizeof(int));
        ok = l->xbuf[s] && l->lbuf[s] && l->ibuf[s];
    }
    if (!ok) {
        loader_free(l);
        return error_set(err, "loader: out of memory for %d batches of %d at %dx%d", l->nslots,
                         opt->batch, p->size, p->size);
    }
    for (int i = 0, k = 0; i < ds->n_items; i++)
        if (ds->items[i].split == split)
            l->pool[k++] = i;
    input_stats_reset(&l->stats);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_ready, NULL);
    l->sync_ready = 1;
    l->epoch = -1;
    for (int t = 0; t < nthreads; t++) {
        if (pthread_create(&l->threads[t], NULL, worker, l)) {
            loader_free(l);
            return error_set(err, "loader: cannot start worker thread %d", t);
        }
        l->nthreads++;
    }
    *out = l;
    return 0;
}

void loader_epoch_order(const Loader *l, int epoch, int *order)
{
    memcpy(order, l->pool, (size_t)l->n * sizeof(int));
    if (l->o.shuffle) {
        Rng r;
        rng_stream(&r, l->o.seed, RNG_SHUFFLE, (uint64_t)epoch, 0);
        for (int i = l->n - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)rng_below(&r, (uint64_t)i + 1);
            int t = order[i]; order[i] = order[j]; order[j] = t;
        }
    }
}

int loader_start_epoch(Loader *l, int epoch, Error *err)
{
    return loader_start_epoch_at(l, epoch, 0, err);
}

int loader_start_epoch_at(Loader *l, int epoch, int first_batch, Error *err)
{
    if (epoch < 0)
        return error_set(err, "loader: epoch must be >= 0 (got %d)", epoch);
    if (first_batch < 0 || first_batch > l->nbatches)
        return error_set(err, "loader: first batch %d is outside 0..%d", first_batch,
                         l->nbatches);
    pthread_mutex_lock(&l->mu);
    l->active = 0;
    while (l->building > 0) /* a worker may still be filling a slot of the old epoch */
        pthread_cond_wait(&l->cv_ready, &l->mu);
    loader_epoch_order(l, epoch, l->order);
    for (int s = 0; s < l->nslots; s++)
        l->slot_state[s] = SLOT_FREE;
    l->epoch = epoch;
    l->next_claim = first_batch;
    l->next_take = first_batch;
    l->active = 1;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int loader_next(Loader *l, Batch *b, Error *err)
{
    double t0 = now_seconds();
    pthread_mutex_lock(&l->mu);
    if (l->epoch < 0) {
        pthread_mutex_unlock(&l->mu);
        return error_set(err, "loader: loader_start_epoch was not called");
    }
    if (l->next_take >= l->nbatches) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    int k = l->next_take, slot = k % l->nslots;
    /* the previous batch's slot is free again: let workers claim further ahead */
    l->next_take++;
    pthread_cond_broadcast(&l->cv_work);
    while (!(l->slot_batch[slot] == k &&
             (l->slot_state[slot] == SLOT_READY || l->slot_state[slot] == SLOT_FAILED)))
        pthread_cond_wait(&l->cv_ready, &l->mu);
    int failed = l->slot_state[slot] == SLOT_FAILED;
    if (failed) {
        error_set(err, "%s", l->slot_err[slot]);
        l->next_take = l->nbatches; /* the epoch cannot go on */
        l->active = 0;
    }
    l->st.wait_seconds += now_seconds() - t0;
    pthread_mutex_unlock(&l->mu);
    if (failed)
        return -1;
    b->x = l->xbuf[slot];
    b->labels = l->lbuf[slot];
    b->items = l->ibuf[slot];
    b->n = l->slot_n[slot];
    b->index = k;
    if (l->epoch == 0 && k < l->o.stats_batches)
        input_stats_add(&l->stats, b->x, (int64_t)b->n * l->p.size * l->p.size);
    return 1;
}

int loader_batches_per_epoch(const Loader *l)
{
    return l->nbatches;
}

int loader_size(const Loader *l)
{
    return l->n;
}

LoaderStats loader_stats(const Loader *l)
{
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    LoaderStats s = l->st;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
    return s;
}

const InputStats *loader_input_stats(const Loader *l)
{
    return &l->stats;
}

void loader_free(Loader *l)
{
    if (!l)
        return;
    if (l->nthreads > 0) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int t = 0; t < l->nthreads; t++)
            pthread_join(l->threads[t], NULL);
    }
    if (l->sync_ready) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_ready);
    }
    if (l->cache)
        for (int i = 0; i < l->ds->n_items; i++)
            free(l->cache[i]);
    for (int s = 0; s < l->nslots && l->xbuf; s++) {
        free(l->xbuf[s]);
        if (l->lbuf) free(l->lbuf[s]);
        if (l->ibuf) free(l->ibuf[s]);
    }
    free(l->xbuf); free(l->lbuf); free(l->ibuf);
    free(l->slot_state); free(l->slot_batch); free(l->slot_n); free(l->slot_err);
    free(l->cache); free(l->cache_w); free(l->cache_h);
    free(l->pool); free(l->order); free(l->threads);
    free(l);
}
