/*
 * weights.h: loading and saving a Resnet's parameters as safetensors, and loading
 * them from Keras 2 HDF5 files.
 *
 * Reading detects the format from the file's first bytes, not its name: the HDF5
 * signature (at byte 0, or 512, 1024, ... after a user block) goes to h5weights.h,
 * which reads, names and checks a Keras .h5 exactly as tools/h5_to_safetensors.py
 * does; anything else is read as safetensors. Either way the tensors are named and
 * checked as below, and a Keras .h5 gives the same WeightsInfo and parameters as
 * the file the converter makes of it (its default preprocessing "caffe", as it
 * carries no metadata). Writing is safetensors only.
 *
 * Two naming schemes are read, detected from the tensor names:
 *   torch: torchvision/timm state-dict names ("conv1.weight", "layer1.0.bn1.running_mean",
 *          "layer1.0.downsample.0.weight", "fc.weight"), conv OIHW, dense (out, in);
 *          "num_batches_tracked" entries are accepted and ignored.
 *   keras: Keras layer names ("conv1_conv.kernel", "conv2_block1_1_bn.moving_variance",
 *          "predictions.kernel"; "/" or "." as separator, an optional ":0" suffix and a
 *          repeated layer group as h5 paths have them), conv HWIO, dense (in, out).
 * The variant follows the naming (torch -> torchvision v1.5, keras -> Keras v1);
 * a "variant" metadata entry must agree. Metadata "preprocess" says which input
 * normalisation the weights expect (default: "torch" for torchvision, "caffe" for
 * Keras). A file without the head ("fc"/"predictions") holds the backbone only.
 */
#ifndef RESNETD_WEIGHTS_H
#define RESNETD_WEIGHTS_H

#include "error.h"
#include "resnet.h"

typedef enum { NAMING_TORCH, NAMING_KERAS } WeightsNaming;

typedef struct {
    ResnetVariant variant;
    WeightsNaming naming;
    char preprocess[16];    /* "torch", "caffe", "tf", "custom" ... */
    int has_head;           /* the file carries a classifier */
    int head_classes;       /* its number of classes */
    int head_hidden;        /* units of its hidden layer, 0 for none */
    int n_tensors;          /* entries in the file (including ignored ones) */
    size_t n_params;        /* parameters (weights and biases) in the file's model */
    char *classes;          /* metadata "classes" (a JSON array), owned; NULL if absent */
    int hdf5;               /* read from a Keras HDF5 file (h5weights.h), not safetensors */
} WeightsInfo;

/* Frees what weights_probe allocated in info (accepts a zeroed struct). */
void weights_info_free(WeightsInfo *info);

/* Reads the header of path (safetensors or Keras .h5) and describes it; release
 * with weights_info_free. On failure info holds nothing to free. Any thread may
 * call it, also while another loads (h5weights.h serialises libhdf5). */
int weights_probe(const char *path, WeightsInfo *info, Error *err);

/* Loads every backbone tensor of path into m (whose variant must match the
 * file's) and, when load_head, the head too (its shape must match m's head).
 * Every tensor is validated (missing, wrong shape, unexpected name) before m is
 * changed: on error m is untouched. On success every layer read is marked
 * `loaded`. */
int weights_load(Resnet *m, const char *path, int load_head, Error *err);

/* What to write: the parameters, or (for tests) their gradients in the same layout. */
typedef enum { WEIGHTS_PARAMS, WEIGHTS_GRADS } WeightsSource;

/* Writes m's parameters (or gradients) in the naming's layout with metadata
 * format/variant/preprocess plus the extra pairs meta_kv[2*i], meta_kv[2*i+1]
 * (n_meta pairs). Atomic (temporary file, fsync, rename). */
int weights_save(const Resnet *m, const char *path, WeightsNaming naming, WeightsSource source,
                 const char *preprocess, const char *const *meta_kv, int n_meta, Error *err);

/* The file name of canonical parameter p under naming (buffer of size len). */
void weights_file_name(const Resnet *m, int param, WeightsNaming naming, char *out, size_t len);

const char *weights_naming_name(WeightsNaming n);

/* 1 when a folder entry called name is a weights file to list (GET /api/weights):
 * not hidden, and ending in ".safetensors", ".h5" or ".hdf5". Listing goes by name
 * so that it need not open every file; weights_probe then reads each by content. */
int weights_file_listable(const char *name);

#endif
