/*
 * events.c: the event ring (see events.h).
 */
#include "events.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    uint64_t seq;
    int64_t job;
    char type[16];
    char *data;
    int final;
} Event;

struct EventHub {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    Event ring[EVENTS_RING];
    uint64_t head;   /* sequence of the next event */
    int closed;
};

EventHub *events_create(void)
{
    EventHub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    return h;
}

void events_free(EventHub *h)
{
    if (!h)
        return;
    for (int i = 0; i < EVENTS_RING; i++)
        free(h->ring[i].data);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void events_publish(EventHub *h, int64_t job, const char *type, const char *data, int final)
{
    char *copy = strdup(data);
    pthread_mutex_lock(&h->mu);
    Event *e = &h->ring[h->head % EVENTS_RING];
    free(e->data);
    e->seq = h->head++;
    e->job = job;
    snprintf(e->type, sizeof e->type, "%s", type);
    e->data = copy; /* NULL when out of memory: readers skip it */
    e->final = final;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
}

uint64_t events_head(EventHub *h)
{
    pthread_mutex_lock(&h->mu);
    uint64_t v = h->head;
    pthread_mutex_unlock(&h->mu);
    return v;
}

int events_next(EventHub *h, int64_t job, uint64_t *seq, int timeout_ms, char **frame,
                int *final)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    int rc = EVENTS_TIMEOUT;
    for (;;) {
        if (h->closed) {
            rc = EVENTS_CLOSED;
            break;
        }
        if (h->head > EVENTS_RING && *seq < h->head - EVENTS_RING) {
            rc = EVENTS_LOST;
            break;
        }
        for (; *seq < h->head; (*seq)++) {
            const Event *e = &h->ring[*seq % EVENTS_RING];
            if (e->job != job || !e->data)
                continue;
            size_t len = strlen(e->data) + strlen(e->type) + 64;
            *frame = malloc(len);
            if (*frame)
                snprintf(*frame, len, "id: %llu\nevent: %s\ndata: %s\n\n",
                         (unsigned long long)e->seq, e->type, e->data);
            *final = e->final;
            (*seq)++;
            rc = *frame ? EVENTS_OK : EVENTS_CLOSED;
            goto out;
        }
        if (pthread_cond_timedwait(&h->cond, &h->mu, &until) == ETIMEDOUT) {
            rc = EVENTS_TIMEOUT;
            break;
        }
    }
out:
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void events_close(EventHub *h)
{
    pthread_mutex_lock(&h->mu);
    h->closed = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
}
