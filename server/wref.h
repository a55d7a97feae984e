/*
 * wref.h: what a job's "weights" names, resolved to a file, one rule for the
 * API (at submit) and the worker (at start).
 *
 *   "random"        no file: seeded random initialisation
 *   "job:ID"        job ID's exported model (data_dir/jobs/ID/model.safetensors),
 *                   which a completed job wrote: its best epoch's weights when
 *                   early stopping restored them, else its last epoch's
 *   "FILE"          a file in the weights folder (dropped there, uploaded with
 *                   PUT /api/weights/FILE, or pulled from the manifest)
 *   "NAME"          a name of the manifest of named weights (fetch.h), or
 *   "imagenet"      the variant's default name there: the manifest's file in the
 *                   weights folder, downloaded first when it is not there yet
 * A file of the weights folder wins over a manifest name spelt the same.
 */
#ifndef RESNETD_WREF_H
#define RESNETD_WREF_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fetch.h"

typedef enum { WREF_RANDOM, WREF_FILE, WREF_JOB, WREF_NAMED } WrefKind;

typedef struct {
    WrefKind kind;
    int64_t job;              /* WREF_JOB: the job */
    const FetchEntry *entry;  /* WREF_NAMED: the manifest's entry (borrowed) */
    int cached;               /* WREF_NAMED: its file is in the weights folder */
    char file[256];           /* WREF_FILE, WREF_NAMED: the file's name in the weights folder */
    char path[8500];          /* the file to load ("" for random) */
} Wref;

/* Parses and resolves weights. variant: the job's "variant" ("" or NULL: the
 * default), for "imagenet". manifest may be NULL (named weights are off;
 * manifest_error says why). A file name must be plain (no '/', not starting
 * with '.'); "job:ID" a positive id. Does not check that a job completed or
 * that a FILE exists beyond choosing between a file and a manifest name.
 * Errors say what is wrong with the value. */
int wref_resolve(const char *weights, const char *variant, const char *weights_dir,
                 const char *data_dir, const FetchManifest *manifest, const char *manifest_error,
                 Wref *out, Error *err);

#endif
