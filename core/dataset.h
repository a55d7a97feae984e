/*
 * dataset.h: image datasets on disk, the scan that finds them, and the report.
 *
 * Layouts (the ones users already have):
 *   ROOT/<class>/...                      one pool; a stratified validation split
 *                                         (val_fraction of each class, chosen with seed)
 *   ROOT/train/<class>/... + ROOT/val/<class>/...   (or validation/ for val)
 * Files are found recursively under each class folder (as torchvision's
 * ImageFolder and Keras's image_dataset_from_directory do) and sorted by path;
 * class names are sorted by byte order (Python's sorted()), which gives the label
 * index, as both frameworks do. Hidden entries (starting with '.') are skipped.
 *
 * Every file is decoded once during the scan (content decides the format). A file
 * that fails (truncated, corrupt, zero bytes, not an image, over the pixel limit)
 * is skipped and listed in problems with its path and the decoder's reason; the
 * scan goes on. Errors that stop the scan: root missing or not a folder, root or a
 * symlink inside it resolving outside allowed_root, a class with no usable image,
 * no image at all, a val split missing a class of train or the reverse.
 *
 * Ownership: dataset_scan fills a Dataset the caller frees with dataset_free.
 */
#ifndef RESNETD_DATASET_H
#define RESNETD_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1, SPLIT_COUNT = 2 };

typedef struct {
    char *path;            /* absolute, owned */
    int label;             /* index into classes */
    int split;             /* SPLIT_TRAIN or SPLIT_VAL */
    int width, height;     /* native size */
    uint64_t hash;         /* 64-bit hash of the decoded RGB pixels and size */
} DatasetItem;

typedef struct {
    char *path;            /* owned */
    char *reason;          /* owned: the decoder's or the scan's reason */
} DatasetProblem;

typedef struct {
    int count[SPLIT_COUNT];
} ClassCounts;

typedef struct {
    int total[SPLIT_COUNT];
    double imbalance[SPLIT_COUNT];   /* largest class count / smallest, per split */
    int width_min, width_median, width_max;    /* native sizes over both splits */
    int height_min, height_median, height_max;
    int n_gray, n_alpha;             /* files that were grayscale / had alpha */
    int n_cross_duplicates;          /* val images whose pixels also appear in train */
    int n_problems;
    double mean[SPLIT_COUNT][3];     /* per channel (RGB) mean of raw 0..255 pixels */
    double std[SPLIT_COUNT][3];
    /* per split: the spread (population std) of the images' own channel means,
     * the files stored as grayscale, and the median shorter side */
    double image_mean_std[SPLIT_COUNT][3];
    int gray[SPLIT_COUNT];
    int side_median[SPLIT_COUNT];
} DatasetReport;

typedef struct {
    char *root;                      /* resolved absolute path, owned */
    int split_layout;                /* 1: train/ and val/ folders; 0: split by fraction */
    int n_classes;
    char **classes;                  /* sorted names, owned */
    ClassCounts *counts;             /* per class */
    int n_items;
    DatasetItem *items;              /* sorted by (split, label, path) */
    int n_problems;
    DatasetProblem *problems;
    int n_duplicates;                /* pairs (train index, val index) with equal pixels */
    int (*duplicates)[2];
    DatasetReport report;
} Dataset;

typedef struct {
    const char *allowed_root;   /* NULL: anywhere; else root must resolve inside it */
    double val_fraction;        /* class-folder layout: fraction per class for val (0..1) */
    uint64_t seed;              /* for that split */
    uint64_t max_pixels;        /* per image; 0 = no limit */
    int threads;                /* decode threads; <= 0: one per core */
} DatasetOptions;

/* Default options: allowed_root NULL, val_fraction 0.2, seed 0, max_pixels
 * 50,000,000 (about 7071 x 7071), threads 0. */
DatasetOptions dataset_default_options(void);

int dataset_scan(Dataset *ds, const char *root, const DatasetOptions *opt, Error *err);
void dataset_free(Dataset *ds);

/* Index of the class named name, or -1. */
int dataset_class_index(const Dataset *ds, const char *name);

#endif
