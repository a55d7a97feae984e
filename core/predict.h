/*
 * predict.h: classifying images with an exported (fine-tuned) weights file, with
 * the preprocessing the file declares (its "preprocess", "input_size", "resize"
 * and "classes" metadata, as train_export writes them).
 *
 * A Predictor owns its model (planned for single-image inference). One thread
 * at a time per Predictor.
 */
#ifndef RESNETD_PREDICT_H
#define RESNETD_PREDICT_H

#include <stdint.h>

#include "error.h"
#include "image.h"

typedef struct Predictor Predictor;

typedef struct {
    int index;           /* class index (label order) */
    const char *name;    /* class name (borrowed from the Predictor) */
    float prob;          /* softmax probability */
} Prediction;

/* Loads weights that carry a classifier head. Files without "classes" metadata
 * name the classes "0", "1", ...; without "input_size" use 224; without
 * "resize" use squash. */
int predictor_load(Predictor **out, const char *weights_path, Error *err);
void predictor_free(Predictor *p);

int predictor_classes(const Predictor *p);
int predictor_input_size(const Predictor *p);

/* Top-k classes of one decoded image, most probable first; out holds k entries
 * (k is clamped to the class count; *n_out says how many were written). */
int predictor_run(Predictor *p, const Image *img, int k, Prediction *out, int *n_out, Error *err);

/* The same for an image file (PNG or JPEG, by content). */
int predictor_run_file(Predictor *p, const char *path, int k, Prediction *out, int *n_out,
                       Error *err);

#endif
