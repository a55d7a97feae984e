/*
 * events.h: the live event hub between the training worker and the SSE clients.
 *
 * The worker publishes (never blocks beyond a short mutex hold); each client
 * reads at its own pace from a ring of the last EVENTS_RING events. A client
 * that falls further behind than the ring holds has lost events: it is told so
 * (events_next returns EVENTS_LOST) and disconnected.
 */
#ifndef RESNETD_EVENTS_H
#define RESNETD_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#define EVENTS_RING 1024

typedef struct EventHub EventHub;

EventHub *events_create(void);
void events_free(EventHub *h);

/* Publishes one event of job: type ("state", "step", "epoch", "finding") and
 * its JSON data (copied). final marks the job's last event. */
void events_publish(EventHub *h, int64_t job, const char *type, const char *data, int final);

/* The sequence number the next published event will get. */
uint64_t events_head(EventHub *h);

enum { EVENTS_OK = 0, EVENTS_TIMEOUT = 1, EVENTS_LOST = 2, EVENTS_CLOSED = 3 };

/* Waits up to timeout_ms for the first event of job with sequence >= *seq;
 * on EVENTS_OK copies it as an SSE frame ("id: ..\nevent: ..\ndata: ..\n\n",
 * malloc'd) into *frame, sets *final, and advances *seq past it. */
int events_next(EventHub *h, int64_t job, uint64_t *seq, int timeout_ms, char **frame,
                int *final);

/* Wakes every waiting reader with EVENTS_CLOSED (daemon shutdown). */
void events_close(EventHub *h);

#endif
