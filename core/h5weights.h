/*
 * h5weights.h: reading Keras 2 HDF5 ResNet50 weight files (.h5) with libhdf5.
 *
 * The C twin of tools/h5_to_safetensors.py: the same layouts, names, checks and
 * messages, so that a .h5 can be used wherever a converted .safetensors can.
 *
 * Layouts (Keras 2 save_weights, and model.save, whose weights sit under a group
 * `model_weights`): the weights root carries a list-of-strings attribute
 * `layer_names`; each listed layer is a group whose attribute `weight_names` lists
 * its datasets relative to it ("conv1_conv/kernel:0"). A list too large for one
 * object header is split into `layer_names0`, `layer_names1`, ... (Keras's
 * save_attributes_to_hdf5_group). Strings may be fixed-length (h5py writes numpy
 * byte-string arrays so) or variable-length.
 *
 * Tensors are named `<layer>.<weight>`, the weight being the last path component of
 * its weight name without the ":0" suffix ("conv1_conv.kernel"), in file order
 * (layer_names, then weight_names). Layouts are kept (conv kernels HWIO, dense
 * kernels (in, out)). Every floating-point dataset (f16, f32, f64, either byte
 * order) reads as float32 with the bits numpy's astype("<f4") gives.
 *
 * Checks, each a message that starts with "PATH: ": not HDF5 or unreadable
 * ("cannot open as HDF5: " and libhdf5's reason), no layer_names (with a hint for a
 * Keras 3 .weights.h5), a listed layer without a group, a listed weight without a
 * dataset, two weights of one layer with the same name, a non-float dataset, then,
 * all at once, the missing, misshapen and unexpected tensors of Keras ResNet50
 * (the 53 convs with kernel and bias, the 53 BNs with gamma, beta, moving_mean,
 * moving_variance; `predictions` optional with any class count), as
 * "not Keras ResNet50 weights:\n  missing 4 tensors: ..." (lists shortened when
 * the message would not fit an Error).
 *
 * Threads: any thread may call these functions; one mutex inside serialises every
 * libhdf5 call (a serial libhdf5 build is not thread-safe), so a long read blocks
 * other readers until it ends. libhdf5's own error printing is switched off.
 *
 * Ownership: h5weights_open returns an H5Weights that owns the open file and the
 * tensor table until h5weights_close.
 */
#ifndef RESNETD_H5WEIGHTS_H
#define RESNETD_H5WEIGHTS_H

#include <stdint.h>

#include "error.h"

#define H5WEIGHTS_MAX_DIMS 8

typedef struct {
    char *name;      /* "<layer>.<weight>", owned */
    char *dataset;   /* "<layer>/<weight name>" as listed, for messages, owned */
    int ndim;
    int64_t shape[H5WEIGHTS_MAX_DIMS];
} H5Tensor;

typedef struct H5Weights H5Weights;

/* 1 when path starts with the HDF5 signature "\x89HDF\r\n\x1a\n" at byte 0, or at
 * 512, 1024, 2048, ... (after a user block); 0 otherwise, also when path cannot be
 * read (the reader that is tried next reports why). */
int h5weights_is_hdf5(const char *path);

/* Opens path, reads its layer and weight lists and every dataset's type and shape
 * (no data), and runs every check above. On failure returns -1 with *out NULL. */
int h5weights_open(H5Weights **out, const char *path, Error *err);

/* Accepts NULL. */
void h5weights_close(H5Weights *h);

int h5weights_count(const H5Weights *h);

/* Borrowed from h, 0 <= i < h5weights_count(h). */
const H5Tensor *h5weights_tensor(const H5Weights *h, int i);

/* Reads tensor i converted to float32 into out (the product of its shape floats,
 * caller-allocated). On failure (a damaged or truncated file) the message names the
 * file, the dataset and libhdf5's reason. */
int h5weights_read_f32(H5Weights *h, int i, float *out, Error *err);

#endif
