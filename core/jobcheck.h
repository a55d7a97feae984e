/*
 * jobcheck.h: everything about a job that can be known before it trains,
 * checked when it is submitted (POST /api/jobs, `resnetd train`), so that a job
 * that would fail a moment after starting is refused with the JSON path of the
 * field at fault instead.
 *
 * jobcheck_run, after jobspec_parse accepted the spec's syntax:
 *   variant       the job's "variant" agrees with the weights'
 *   weights       the file exists, its header is a valid safetensors file, and
 *                 every backbone tensor has the name and shape of a ResNet50
 *                 variant (the data are read and checked as a job would)
 *   preprocess    resolves against what the weights declare (jobcheck_preprocess)
 *   class_weight  every class it names exists in the dataset
 *   phases[i].train  the selector resolves against the weights' variant
 *   batch_size    the training memory estimate fits this machine's memory (its
 *                 physical memory, or a cgroup limit below it)
 * and describes what the job will run with (JobResolved), which the daemon
 * stores and shows next to the spec.
 */
#ifndef RESNETD_JOBCHECK_H
#define RESNETD_JOBCHECK_H

#include <stddef.h>

#include "error.h"
#include "jobspec.h"
#include "preprocess.h"
#include "resnet.h"

/* The normalisation a job with "weights": "random" and "preprocess": "auto"
 * uses: random weights declare none, and torch's is the variant's own. */
#define JOBCHECK_RANDOM_PREPROCESS "torch"

typedef struct {
    ResnetVariant variant;       /* from the weights (torchvision for random ones) */
    char preprocess[16];         /* the normalisation mode in force */
    const char *preprocess_from; /* static: "job", "weights" or "default for random weights" */
    int overridden;              /* the job forced a mode against the weights' */
    double memory_bytes;         /* the training memory estimate */
    double memory_limit;         /* what this machine offers */
} JobResolved;

/* Resolves the job's normalisation into *norm against what the weights declare
 * (declared: NULL or "" for random weights, where "auto" means
 * JOBCHECK_RANDOM_PREPROCESS). *from receives where it came from (static
 * string). Errors say why, without the "preprocess: " prefix. */
int jobcheck_preprocess(const JobSpec *s, const char *declared, Normalization *norm,
                        int *overridden, const char **from, Error *err);

/* Checks s as described above. weights_path is the file to load (NULL when
 * s->weights is "random"); classes[0..n_classes) are the dataset's class
 * names (classes NULL: not known yet, class_weight is not checked). On failure
 * returns -1, err says why and path receives the JSON path of the field
 * ("weights", "preprocess", "class_weight.NAME", "phases[1].train",
 * "batch_size"). Allocates and frees a model (about 200 MB) for the weights and
 * selector checks. */
int jobcheck_run(const JobSpec *s, const char *weights_path, const char *const *classes,
                 int n_classes, JobResolved *out, char *path, size_t path_len, Error *err);

/* What a weights file that is not on disk yet (a named download) declares: the
 * manifest's word for it. */
typedef struct {
    ResnetVariant variant;
    char preprocess[16];
} JobDeclared;

/* jobcheck_run for weights known by what they declare: the variant and the
 * preprocessing are checked against decl, the rest as for random weights. */
int jobcheck_run_declared(const JobSpec *s, const JobDeclared *decl, const char *const *classes,
                          int n_classes, JobResolved *out, char *path, size_t path_len,
                          Error *err);

/* The architecture a job builds into *out: the weights' (weights non-NULL),
 * which s->variant must not contradict ("variant: ..." error), or for random
 * weights s->variant's (torchvision when unset). */
int jobcheck_variant(const JobSpec *s, const ResnetVariant *weights, ResnetVariant *out,
                     Error *err);

/* Bytes of memory this process may use: physical memory, or the cgroup (v2 or
 * v1) limit when lower. */
double jobcheck_memory_limit(void);

#endif
