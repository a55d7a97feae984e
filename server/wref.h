/*
 * wref.h: what a job's "weights" names, resolved to a file, one rule for the
 * API (at submit) and the worker (at start).
 *
 *   "random"        no file: seeded random initialisation
 *   "job:ID"        job ID's exported model (data_dir/jobs/ID/model.safetensors),
 *                   which a completed job wrote: its best epoch's weights when
 *                   early stopping restored them, else its last epoch's
 *   "NAME"          a file in the weights folder (dropped there, uploaded with
 *                   PUT /api/weights/NAME, or pulled from the manifest)
 */
#ifndef RESNETD_WREF_H
#define RESNETD_WREF_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum { WREF_RANDOM, WREF_FILE, WREF_JOB } WrefKind;

typedef struct {
    WrefKind kind;
    int64_t job;          /* WREF_JOB: the job */
    char file[256];       /* WREF_FILE: the file's name in the weights folder */
    char path[8500];      /* the file to load ("" for random) */
} Wref;

/* Parses and resolves weights. A name must be a plain file name (no '/', not
 * starting with '.'); "job:ID" a positive id. Does not look at the file: the
 * caller checks that path exists (and, for a job, that the job completed).
 * Errors say what is wrong with the value. */
int wref_resolve(const char *weights, const char *weights_dir, const char *data_dir, Wref *out,
                 Error *err);

#endif
