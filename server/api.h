/*
 * api.h: the REST API over libmicrohttpd (docs/api.md is the contract).
 *
 * One thread per connection (libmicrohttpd's MHD_USE_THREAD_PER_CONNECTION):
 * a handler may block (an event stream waits for events, a dataset upload is
 * unpacked and scanned) without holding up anyone else. Handlers read the store
 * through a connection of their own thread, and change the queue through the
 * store and the worker; they never touch the model.
 */
#ifndef RESNETD_API_H
#define RESNETD_API_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "events.h"
#include "fetch.h"
#include "puller.h"
#include "worker.h"

typedef struct {
    const char *host;           /* listen address */
    int port;                   /* 0: any free port (see api_port) */
    const char *db_path;
    const char *data_dir;
    const char *data_root;      /* "" : registering server folders is off */
    const char *weights_dir;
    const char *web_dir;        /* the dashboard's files */
    const char *token;          /* "" : no token */
    size_t body_limit, upload_limit, cache_bytes;
    uint64_t max_pixels;
    int max_jobs_queued;
    int threads;
    Worker *worker;
    EventHub *events;
    const FetchManifest *manifest;  /* named weights; NULL when it did not load */
    const char *manifest_error;     /* why it did not load ("" when it did) */
    Puller *puller;                 /* their downloads */
} ApiConfig;

typedef struct Api Api;

int api_start(Api **out, const ApiConfig *cfg, Error *err);

/* The port actually listened on. */
int api_port(const Api *a);

/* Stops accepting connections and new jobs; requests in flight finish. */
void api_quiesce(Api *a);

/* Stops the HTTP server (waits for the connection threads) and frees it. */
void api_stop(Api *a);

#endif
