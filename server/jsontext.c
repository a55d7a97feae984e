/* jsontext.c: JSON to text with reals as users write them (see jsontext.h). */
#include "jsontext.h"

char *jsontext_dumps(const json_t *v, size_t flags)
{
    return v ? json_dumps(v, flags | JSON_REAL_PRECISION(JSONTEXT_REAL_DIGITS)) : NULL;
}
