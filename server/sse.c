/*
 * sse.c: a job's live events as server-sent events (GET /api/jobs/ID/events):
 * the job's state first, then what the worker publishes (events.h), with a
 * keep-alive comment when nothing happens; the stream ends after a final state.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "jsontext.h"
#include "log.h"

#define SSE_KEEPALIVE_MS 15000

typedef struct {
    Api *api;
    int64_t job;
    uint64_t seq;
    char *pending;       /* frame being sent */
    size_t off;
    int final_sent;
} Stream;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    Stream *s = cls;
    (void)pos;
    for (;;) {
        if (s->pending) {
            size_t left = strlen(s->pending + s->off), n = left < max ? left : max;
            memcpy(buf, s->pending + s->off, n);
            s->off += n;
            if (!s->pending[s->off]) {
                free(s->pending);
                s->pending = NULL;
                s->off = 0;
            }
            return (ssize_t)n;
        }
        if (s->final_sent)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int final = 0;
        int rc = events_next(s->api->cfg.events, s->job, &s->seq, SSE_KEEPALIVE_MS, &s->pending,
                             &final);
        if (rc == EVENTS_OK) {
            s->final_sent = final;
        } else if (rc == EVENTS_TIMEOUT) {
            s->pending = strdup(": keep-alive\n\n");
        } else {
            if (rc == EVENTS_LOST)
                log_msg(LOG_LEVEL_WARN, "events of job %lld: a client fell behind and was dropped",
                        (long long)s->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!s->pending)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls)
{
    Stream *s = cls;
    free(s->pending);
    free(s);
}

enum MHD_Result api_handle_job_events(struct MHD_Connection *c, Req *q)
{
    const int64_t id = q->id;
    Store *st;
    enum MHD_Result rc;
    Stream *s = calloc(1, sizeof *s);
    if (!s)
        return HTTP_ERROR(c, q, 500, NULL, "out of memory");
    s->api = q->api;
    s->job = id;
    s->seq = events_head(q->api->cfg.events); /* before reading the state: nothing is missed */
    json_t *j = api_job_or_answer(c, q, &st, &rc);
    if (!j) {
        free(s);
        return rc;
    }
    const char *state = json_string_value(json_object_get(j, "state"));
    json_t *ev = json_pack("{s:I, s:s, s:O}", "job", (json_int_t)id, "state", state, "error",
                           json_object_get(j, "error"));
    char *text = jsontext_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    size_t len = (text ? strlen(text) : 0) + 64;
    s->pending = malloc(len);
    if (s->pending)
        snprintf(s->pending, len, "event: state\ndata: %s\n\n", text ? text : "{}");
    free(text);
    s->final_sent = !strcmp(state, "completed") || !strcmp(state, "failed") ||
                    !strcmp(state, "cancelled");
    json_decref(j);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                               stream_read, s, stream_free);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return http_send(c, q, 200, r);
}
