/*
 * jsontext.h: the one way server/ turns JSON into text: API responses, events,
 * and the specs and reports it stores.
 *
 * jansson prints a real with 17 significant digits by default, so a user's 0.9
 * would come back as 0.90000000000000002. With 15 (DBL_DIG) every decimal of up
 * to 15 significant digits prints back as the same decimal, in its shortest
 * form (0.9 as 0.9, 1e-4 as 0.0001); a computed double that needs 16 or 17
 * digits to round-trip exactly moves by less than 1 part in 10^15.
 */
#ifndef RESNETD_JSONTEXT_H
#define RESNETD_JSONTEXT_H

#include <stddef.h>

#include <jansson.h>

/* Digits of a real in the text. */
#define JSONTEXT_REAL_DIGITS 15

/* json_dumps(v, flags) with reals at JSONTEXT_REAL_DIGITS significant digits
 * (flags must not carry a JSON_REAL_PRECISION of its own). Returns a string the
 * caller frees with free(), or NULL when v is NULL or memory ran out. Borrows v.
 * Safe from any thread. */
char *jsontext_dumps(const json_t *v, size_t flags);

#endif
