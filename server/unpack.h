/*
 * unpack.h: safe unpacking of uploaded dataset archives (libarchive).
 *
 * The module is called unpack and not archive because the build puts server/ on
 * the include path: a server/archive.h would shadow libarchive's <archive.h>.
 *
 * Formats are detected from the content, never the name: tar (ustar, pax, GNU),
 * tar compressed with gzip, bzip2, xz or zstd, and zip. An upload is hostile
 * input, so unpack_archive writes nothing but plain folders (0755) and regular
 * files (0644, both less the umask), each one at a path checked component by
 * component, and refuses the whole archive, naming the entry, for:
 *   - an absolute path, any ".." component, a backslash (a Windows path that
 *     would otherwise become one odd file name), a control character, a path
 *     that is empty once "." and empty components are dropped (a folder entry
 *     "./" is dest itself and is accepted), more than UNPACK_MAX_DEPTH folders
 *     or a path longer than UNPACK_MAX_PATH bytes;
 *   - any link, symbolic or hard (a dataset needs none, so none is ever made),
 *     a device, a FIFO, a socket or an unknown entry type;
 *   - a path that appears twice, or a file where a folder is needed;
 *   - more data than limits->max_total_bytes (counted as it is written, so a
 *     header that lies about a size gains nothing) or more entries than
 *     limits->max_entries (every entry counts, skipped ones too);
 *   - a file that is not an archive of those formats, or one that is truncated
 *     or corrupt (libarchive's reason, e.g. a bad CRC).
 * Creation walks dest with openat/mkdirat from a descriptor of dest, opening
 * each folder with O_NOFOLLOW and each file with O_CREAT | O_EXCL | O_NOFOLLOW,
 * so nothing is ever written through a symlink, even one planted while
 * unpacking. On any error dest is emptied again (unpack_clear_dir).
 *
 * Junk that archivers add is skipped silently and counted in
 * UnpackStats.skipped: any path with a "__MACOSX" component, AppleDouble files
 * ("._name"), ".DS_Store" and "Thumbs.db".
 *
 * Names are read as UTF-8 (pax and zip record it), whatever the process
 * locale: the calling thread is switched to C.UTF-8 while libarchive runs
 * (uselocale, per thread; the process locale is not touched).
 *
 * Errors about the content do not name `path` (usually a temporary file): the
 * caller wraps them with the upload's own name. All functions may be called
 * from several threads at once, on different folders.
 */
#ifndef RESNETD_UNPACK_H
#define RESNETD_UNPACK_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Deepest folder nesting accepted in an archive (flowers/train/daisy/x.jpg is 3). */
#define UNPACK_MAX_DEPTH 64
/* Longest accepted entry path, in bytes after normalisation. */
#define UNPACK_MAX_PATH 1024

typedef struct {
    uint64_t max_total_bytes; /* sum of the unpacked file sizes; 0 = no limit */
    uint64_t max_entries;     /* entries read, skipped junk included; 0 = no limit */
} UnpackLimits;

typedef struct {
    uint64_t files;   /* regular files written */
    uint64_t dirs;    /* folders created, explicit entries or implied by a path */
    uint64_t bytes;   /* sum of the sizes of the files written */
    uint64_t skipped; /* junk entries skipped (see above) */
} UnpackStats;

/* Unpacks the archive file at path into dest, an existing empty folder (a
 * folder that is not empty is refused and left as it is, since a failure
 * empties dest). limits may be NULL (no limits); stats may be NULL and is
 * filled on success only (zeroed on failure). */
int unpack_archive(const char *path, const char *dest, const UnpackLimits *limits,
                   UnpackStats *stats, Error *err);

/* Removes everything inside dir but not dir itself, without following any
 * symlink (a symlink inside is removed, not what it points to; dir itself being
 * a symlink is an error). Gives up on folders nested deeper than 256. */
int unpack_clear_dir(const char *dir, Error *err);

/* The dataset root of an unpacked archive, written to out (len bytes):
 * dest/NAME when dest holds exactly one entry, a folder NAME (not a symlink),
 * besides hidden entries (skipped by the dataset scan too) and junk; dest
 * itself otherwise. Fails when dest cannot be read or out is too short. */
int unpack_dataset_root(const char *dest, char *out, size_t len, Error *err);

#endif
