/*
 * select.h: the `train` selector of a job phase: which layers of a Resnet are
 * trainable, and which BN layers use batch statistics while training.
 *
 * Selectors (docs/selectors.md has worked examples):
 *   head            only the head dense layers (m->out_fc, and m->hidden_fc if any)
 *   all             every layer
 *   stage:N         N in 2..5: Keras conv stages N..5 (torchvision layer(N-1)..layer4)
 *                   plus the head
 *   from:BLOCK      BLOCK as Keras names it ("conv4_block6") or torchvision does
 *                   ("layer3.5"): that block's first layer and everything after it,
 *                   plus the head; "from:conv1" and "from:stem" mean all
 *   keras_last:N    N in 1..175: exactly the layers that Keras's model.layers[-N:]
 *                   names for ResNet50 without top (REFERENCE.md gives the order),
 *                   plus the head. Layers without weights (input, padding, pooling,
 *                   ReLU, Add) count towards N but select nothing.
 * The head is trainable under every selector.
 */
#ifndef RESNETD_SELECT_H
#define RESNETD_SELECT_H

#include <stddef.h>

#include "error.h"
#include "resnet.h"

/* Which BN layers of the trainable ones use batch statistics while training
 * (a phase's "bn"). Layers that are not trainable never do. */
typedef enum {
    BN_AUTO = 0,  /* those whose weights were not loaded from a file (Layer.loaded == 0):
                   * random layers learn their statistics, pretrained ones keep theirs */
    BN_FROZEN,    /* none: inference mode with the running statistics */
    BN_TRAIN      /* all */
} BnMode;

/* Number of layers in Keras's ResNet50(include_top=False).layers. */
#define SELECT_KERAS_LAYERS 175
#define SELECT_NAME_MAX 40

/* Sets every layer's `trainable` from the selector and its `batch_stats` to
 * (kind == LAYER_BN && trainable && (bn == BN_TRAIN || (bn == BN_AUTO &&
 * !loaded))): a frozen layer never uses batch statistics. *n_selected (may be NULL) receives the number of trainable layers.
 * On error (unknown selector, out-of-range number, unknown block) returns -1 with
 * a message that names the selector and what was expected, and leaves m unchanged.
 * m is modified, selector is borrowed. */
int select_trainable(Resnet *m, const char *selector, BnMode bn, int *n_selected,
                     Error *err);

/* Writes the first min(max, SELECT_KERAS_LAYERS) names of Keras's
 * ResNet50(include_top=False).layers, in order ("input_layer", "conv1_pad", ...,
 * "conv5_block3_out"), into names, and returns SELECT_KERAS_LAYERS. names may be
 * NULL when max is 0. */
int select_keras_layer_names(char names[][SELECT_NAME_MAX], int max);

/* Writes a one-line summary of the current selection into buf (always
 * NUL-terminated when len > 0), e.g.
 * "22 of 108 layers trainable (15 BN with batch statistics), 14988293 of 23518277
 *  parameters, lowest conv4_block5_2_conv (layer3.4.conv2)".
 * Returns buf. */
const char *select_describe(const Resnet *m, char *buf, size_t len);

/* BN layers that are trainable, were not loaded from a weights file, and run in
 * inference mode (their running statistics 0 and 1 never change): what an
 * explicit "bn": "frozen" does to randomly initialised layers. */
int select_frozen_random_bn(const Resnet *m);

/* The name of a BnMode as a job spec writes it ("auto", "frozen", "train"). */
const char *select_bn_name(BnMode bn);

#endif
