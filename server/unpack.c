/* unpack.c: safe unpacking of dataset archives; see unpack.h for the rules. */
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* libarchive reports "Unrecognized archive format" with ARCHIVE_ERRNO_FILE_FORMAT,
 * which its public header leaves undefined; on Linux it is EILSEQ. */
#define UNPACK_ERRNO_FILE_FORMAT EILSEQ
#define UNPACK_BUF_SIZE (64 * 1024)
#define UNPACK_CLEAR_MAX_DEPTH 256

/* ---- names ---- */

/* name made printable for an error message: control bytes as \xNN, cut at about
 * 200 bytes (names are user input and messages go to logs and JSON). */
static const char *unpack_printable(const char *name, char *buf, size_t len)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (o + 8 >= len || o >= 200) {
            snprintf(buf + o, len - o, "...");
            return buf;
        }
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", *p);
        else
            buf[o++] = (char)*p;
    }
    buf[o] = '\0';
    return buf;
}

/* "archive entry 'NAME': " and the formatted reason. */
__attribute__((format(printf, 3, 4)))
static int unpack_entry_error(Error *err, const char *name, const char *fmt, ...)
{
    char shown[256];
    char text[ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return error_set(err, "archive entry '%s': %s", unpack_printable(name, shown, sizeof shown),
                     text);
}

/* Junk that archivers add (see unpack.h); rel is a normalised path. */
static int unpack_is_junk(const char *rel)
{
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    if (strncmp(base, "._", 2) == 0 || strcmp(base, ".DS_Store") == 0 ||
        strcmp(base, "Thumbs.db") == 0)
        return 1;
    for (const char *c = rel;;) {
        size_t n = strcspn(c, "/");
        if (n == 8 && strncmp(c, "__MACOSX", 8) == 0)
            return 1;
        if (c[n] == '\0')
            return 0;
        c += n + 1;
    }
}

/* Checks an entry name and writes it to rel (UNPACK_MAX_PATH + 1 bytes) without
 * empty and "." components; an empty rel means dest itself. */
static int unpack_normalise(const char *name, char *rel, Error *err)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return unpack_entry_error(err, name, "the name has a control character");
        if (*p == '\\')
            return unpack_entry_error(err, name,
                                      "the name has a backslash (a Windows path? folders must "
                                      "be separated by '/')");
    }
    if (name[0] == '/')
        return unpack_entry_error(err, name, "absolute path (paths must be relative)");

    size_t o = 0;
    int depth = 0;
    const char *c = name;
    while (*c) {
        size_t n = strcspn(c, "/");
        if (n == 2 && c[0] == '.' && c[1] == '.')
            return unpack_entry_error(err, name,
                                      "a '..' component would leave the destination folder");
        if (n > 0 && !(n == 1 && c[0] == '.')) {
            if (o + (o > 0) + n > UNPACK_MAX_PATH)
                return unpack_entry_error(err, name, "the path is longer than %d bytes",
                                          UNPACK_MAX_PATH);
            if (o > 0) {
                rel[o++] = '/';
                depth++;
            }
            memcpy(rel + o, c, n);
            o += n;
        }
        c += n;
        if (*c == '/')
            c++;
    }
    rel[o] = '\0';
    if (depth > UNPACK_MAX_DEPTH)
        return unpack_entry_error(err, name, "nested deeper than %d folders", UNPACK_MAX_DEPTH);
    return 0;
}

/* Refuses every entry type but plain files and folders; *is_dir tells which. */
static int unpack_check_type(struct archive_entry *e, const char *name, int *is_dir, Error *err)
{
    const char *target = archive_entry_hardlink(e);
    char shown[256];
    if (target)
        return unpack_entry_error(err, name,
                                  "is a hard link to '%s': archives with links are refused",
                                  unpack_printable(target, shown, sizeof shown));
    target = archive_entry_symlink(e);
    if (target || archive_entry_filetype(e) == AE_IFLNK)
        return unpack_entry_error(err, name,
                                  "is a symbolic link to '%s': archives with links are refused",
                                  unpack_printable(target ? target : "", shown, sizeof shown));
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        *is_dir = 0;
        return 0;
    case AE_IFDIR:
        *is_dir = 1;
        return 0;
    case AE_IFCHR:
    case AE_IFBLK:
        return unpack_entry_error(err, name, "is a device: only files and folders are "
                                  "unpacked");
    case AE_IFIFO:
        return unpack_entry_error(err, name, "is a FIFO: only files and folders are "
                                  "unpacked");
    case AE_IFSOCK:
        return unpack_entry_error(err, name, "is a socket: only files and folders are "
                                  "unpacked");
    default:
        return unpack_entry_error(err, name, "has an unsupported type (0%o)",
                                  (unsigned)archive_entry_filetype(e));
    }
}

/* ---- writing under dest ---- */

/* Opens the folder made of the first n bytes of rel under destfd, creating the
 * missing ones (counted in st->dirs) and following no symlink. Returns a
 * descriptor the caller closes unless it is destfd, or -1. */
static int unpack_open_dirs(int destfd, const char *rel, size_t n, const char *name,
                            UnpackStats *st, Error *err)
{
    char comp[UNPACK_MAX_PATH + 1];
    int fd = destfd;
    for (size_t i = 0; i < n;) {
        size_t k = strcspn(rel + i, "/");
        if (i + k > n)
            k = n - i;
        memcpy(comp, rel + i, k);
        comp[k] = '\0';
        int made = mkdirat(fd, comp, 0755) == 0;
        int sub = made || errno == EEXIST
                      ? openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : -1;
        int e = errno;
        if (fd != destfd)
            close(fd);
        if (sub < 0) {
            /* ELOOP: a symlink, which this code never creates; refused all the same */
            if (e == ENOTDIR || e == ELOOP)
                return unpack_entry_error(err, name, "'%.*s' is needed as a folder but is a file",
                                          (int)(i + k), rel);
            return unpack_entry_error(err, name, "cannot create folder '%.*s': %s", (int)(i + k),
                                      rel, strerror(e));
        }
        st->dirs += (uint64_t)made;
        fd = sub;
        i += k + 1;
    }
    return fd;
}

static int unpack_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int unpack_too_big(Error *err, uint64_t max)
{
    return error_set(err, "archive unpacks to more than %llu bytes (the limit)",
                     (unsigned long long)max);
}

/* Writes the data of the current entry to the new file rel. */
static int unpack_file(struct archive *a, struct archive_entry *e, int destfd, const char *rel,
                       const char *name, uint64_t max_bytes, char *buf, UnpackStats *st,
                       Error *err)
{
    if (max_bytes && archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
        (uint64_t)archive_entry_size(e) > max_bytes - st->bytes)
        return unpack_too_big(err, max_bytes);

    const char *slash = strrchr(rel, '/');
    int dirfd = slash ? unpack_open_dirs(destfd, rel, (size_t)(slash - rel), name, st, err)
                      : destfd;
    if (dirfd < 0)
        return -1;
    const char *base = slash ? slash + 1 : rel;
    int fd = openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    int e_open = errno;
    if (dirfd != destfd)
        close(dirfd);
    if (fd < 0) {
        if (e_open == EEXIST)
            return unpack_entry_error(err, name, "the path appears twice in the archive");
        return unpack_entry_error(err, name, "cannot create the file: %s", strerror(e_open));
    }

    int rc = -1;
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, UNPACK_BUF_SIZE);
        if (n == 0)
            break;
        if (n < 0) {
            /* warnings too: for data they mean a bad checksum */
            unpack_entry_error(err, name, "cannot read its data: %s", archive_error_string(a));
            goto done;
        }
        if (max_bytes && (uint64_t)n > max_bytes - st->bytes) {
            unpack_too_big(err, max_bytes);
            goto done;
        }
        if (unpack_write_all(fd, buf, (size_t)n) != 0) {
            unpack_entry_error(err, name, "cannot write the file: %s", strerror(errno));
            goto done;
        }
        st->bytes += (uint64_t)n;
    }
    rc = 0;
done:
    if (close(fd) != 0 && rc == 0)
        rc = unpack_entry_error(err, name, "cannot write the file: %s", strerror(errno));
    if (rc == 0)
        st->files++;
    return rc;
}

/* ---- clearing ---- */

/* Removes everything inside the open folder dirfd (kept open); path (PATH_MAX
 * bytes, holding the folder's name for messages) is extended while descending. */
static int unpack_clear_fd(int dirfd, char *path, int depth, Error *err)
{
    int fd = dup(dirfd);
    if (fd < 0)
        return error_set(err, "cannot read folder '%s': %s", path, strerror(errno));
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return error_set(err, "cannot read folder '%s': %s", path, strerror(errno));
    }
    int rc = 0;
    size_t plen = strlen(path);
    /* Passes until one removes nothing: POSIX leaves open whether readdir sees
     * every entry when entries are removed during the scan. */
    for (int removed = 1; removed && rc == 0;) {
        removed = 0;
        rewinddir(d); /* the duplicate shares dirfd's offset, which may be at the end */
        struct dirent *de;
        while (rc == 0 && (errno = 0, de = readdir(d))) {
            const char *n = de->d_name;
            if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
                continue;
            snprintf(path + plen, PATH_MAX - plen, "/%s", n);
            struct stat sb;
            if (fstatat(dirfd, n, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno != ENOENT)
                    rc = error_set(err, "cannot remove '%s': %s", path, strerror(errno));
                continue;
            }
            if (S_ISDIR(sb.st_mode)) {
                if (depth >= UNPACK_CLEAR_MAX_DEPTH) {
                    rc = error_set(err, "cannot remove '%s': nested deeper than %d folders", path,
                                   UNPACK_CLEAR_MAX_DEPTH);
                    continue;
                }
                int sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) {
                    rc = error_set(err, "cannot remove '%s': %s", path, strerror(errno));
                    continue;
                }
                rc = unpack_clear_fd(sub, path, depth + 1, err);
                close(sub);
                if (rc == 0 && unlinkat(dirfd, n, AT_REMOVEDIR) != 0)
                    rc = error_set(err, "cannot remove '%s': %s", path, strerror(errno));
            } else if (unlinkat(dirfd, n, 0) != 0) {
                rc = error_set(err, "cannot remove '%s': %s", path, strerror(errno));
            }
            removed++;
        }
        if (rc == 0 && errno != 0)
            rc = error_set(err, "cannot read folder '%s': %s", path, strerror(errno));
        path[plen] = '\0';
    }
    path[plen] = '\0';
    closedir(d);
    return rc;
}

static int unpack_clear_at(int dirfd, const char *dir, Error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", dir);
    return unpack_clear_fd(dirfd, path, 0, err);
}

int unpack_clear_dir(const char *dir, Error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return error_set(err, "cannot open folder '%s': %s", dir, strerror(errno));
    int rc = unpack_clear_at(fd, dir, err);
    close(fd);
    return rc;
}

/* 1 when the open folder fd has no entry, 0 when it has, -1 on error (errno). */
static int unpack_is_empty(int fd)
{
    int dfd = dup(fd);
    if (dfd < 0)
        return -1;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return -1;
    }
    rewinddir(d);
    int empty = 1;
    struct dirent *de;
    while ((errno = 0, de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    if (empty && errno != 0)
        empty = -1;
    int e = errno;
    closedir(d);
    errno = e;
    return empty;
}

/* ---- unpacking ---- */

/* Reads every entry of the opened archive a into destfd. */
static int unpack_entries(struct archive *a, int destfd, const UnpackLimits *lim, char *buf,
                          UnpackStats *st, Error *err)
{
    uint64_t max_entries = lim ? lim->max_entries : 0;
    uint64_t max_bytes = lim ? lim->max_total_bytes : 0;
    uint64_t entries = 0;
    char rel[UNPACK_MAX_PATH + 1];
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
            return error_set(err, "cannot read the archive after %llu entries: %s",
                             (unsigned long long)entries, archive_error_string(a));
        entries++;
        if (max_entries && entries > max_entries)
            return error_set(err, "the archive has more than %llu entries (the limit)",
                             (unsigned long long)max_entries);
        /* a warning alone (e.g. an unreadable user name) is harmless; one that
         * leaves no name is not */
        const char *name = archive_entry_pathname(e);
        if (!name)
            return error_set(err, "archive entry %llu: the name cannot be read: %s",
                             (unsigned long long)entries,
                             r == ARCHIVE_WARN ? archive_error_string(a) : "no name");
        int is_dir = 0;
        if (unpack_normalise(name, rel, err) != 0 || unpack_check_type(e, name, &is_dir, err) != 0)
            return -1;
        if (rel[0] == '\0') {
            if (is_dir)
                continue; /* "./": dest itself */
            return unpack_entry_error(err, name, "the path is empty");
        }
        if (unpack_is_junk(rel)) {
            st->skipped++;
            continue; /* libarchive skips the data at the next header */
        }
        if (is_dir) {
            int fd = unpack_open_dirs(destfd, rel, strlen(rel), name, st, err);
            if (fd < 0)
                return -1;
            if (fd != destfd)
                close(fd);
        } else if (unpack_file(a, e, destfd, rel, name, max_bytes, buf, st, err) != 0) {
            return -1;
        }
    }
}

/* Runs libarchive over the archive open on fd, unpacking into destfd. */
static int unpack_read(int fd, int destfd, const UnpackLimits *limits, UnpackStats *st,
                       Error *err)
{
    int rc = -1;
    struct archive *a = NULL;
    char *buf = malloc(UNPACK_BUF_SIZE);
    /* C.UTF-8 for this thread while libarchive converts names (see unpack.h);
     * without it, in the C locale, zip entries with UTF-8 names have no name. */
    locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    locale_t old = utf8 ? uselocale(utf8) : (locale_t)0;
    if (!buf || !(a = archive_read_new())) {
        error_set(err, "out of memory");
        goto fail;
    }
    /* no archive_read_support_filter_all: some of those run external programs */
    if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_support_format_zip(a) != ARCHIVE_OK ||
        archive_read_support_filter_gzip(a) < ARCHIVE_WARN ||
        archive_read_support_filter_bzip2(a) < ARCHIVE_WARN ||
        archive_read_support_filter_xz(a) < ARCHIVE_WARN ||
        archive_read_support_filter_zstd(a) < ARCHIVE_WARN) {
        error_set(err, "libarchive: %s", archive_error_string(a));
        goto fail;
    }
    if (archive_read_open_fd(a, fd, UNPACK_BUF_SIZE) != ARCHIVE_OK) {
        if (archive_errno(a) == UNPACK_ERRNO_FILE_FORMAT)
            error_set(err, "not a tar, tar.gz or zip archive");
        else
            error_set(err, "the archive cannot be read: %s", archive_error_string(a));
        goto fail;
    }
    rc = unpack_entries(a, destfd, limits, buf, st, err);
fail:
    archive_read_free(a);
    if (utf8) {
        uselocale(old);
        freelocale(utf8);
    }
    free(buf);
    return rc;
}

int unpack_archive(const char *path, const char *dest, const UnpackLimits *limits,
                   UnpackStats *stats, Error *err)
{
    Error local;
    if (!err)
        err = &local;
    if (stats)
        memset(stats, 0, sizeof *stats);
    int rc = -1, fd = -1, started = 0;
    UnpackStats st = {0};
    struct stat sb;

    int destfd = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (destfd < 0) {
        error_set(err, "cannot open destination folder '%s': %s", dest, strerror(errno));
        goto fail;
    }
    int empty = unpack_is_empty(destfd);
    if (empty != 1) {
        if (empty < 0)
            error_set(err, "cannot read destination folder '%s': %s", dest, strerror(errno));
        else
            error_set(err, "destination folder '%s' is not empty", dest);
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        error_set(err, "cannot open archive '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        error_set(err, "cannot open archive '%s': not a regular file", path);
        goto fail;
    }
    started = 1;
    rc = unpack_read(fd, destfd, limits, &st, err);
    if (rc == 0 && stats)
        *stats = st;

fail:
    /* only what this call wrote is removed: a dest that was not empty is left as it was */
    if (rc != 0 && started) {
        Error cerr;
        if (unpack_clear_at(destfd, dest, &cerr) != 0) {
            size_t n = strlen(err->msg);
            snprintf(err->msg + n, sizeof err->msg - n, " (and emptying '%s' failed: %s)", dest,
                     cerr.msg);
        }
    }
    if (fd >= 0)
        close(fd);
    if (destfd >= 0)
        close(destfd);
    return rc;
}

int unpack_dataset_root(const char *dest, char *out, size_t len, Error *err)
{
    DIR *d = opendir(dest);
    if (!d)
        return error_set(err, "cannot read folder '%s': %s", dest, strerror(errno));
    int count = 0, only_dir = 0;
    char only[256] = "";
    struct dirent *de;
    while ((errno = 0, de = readdir(d))) {
        const char *n = de->d_name;
        if (n[0] == '.' || unpack_is_junk(n))
            continue;
        if (++count == 1) {
            struct stat sb;
            only_dir = fstatat(dirfd(d), n, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
                       S_ISDIR(sb.st_mode);
            snprintf(only, sizeof only, "%s", n);
        }
    }
    int e = errno;
    closedir(d);
    if (e != 0)
        return error_set(err, "cannot read folder '%s': %s", dest, strerror(e));
    int n = count == 1 && only_dir ? snprintf(out, len, "%s/%s", dest, only)
                                   : snprintf(out, len, "%s", dest);
    if (n < 0 || (size_t)n >= len)
        return error_set(err, "dataset root under '%s' is longer than %zu bytes", dest, len - 1);
    return 0;
}
