/*
 * test_unpack.c: server/unpack.c on archives written here with libarchive's
 * writer: good tar, tar.gz, tar.bz2, tar.xz and zip (contents, modes, stats,
 * UTF-8 names, junk skipped, dataset root), and every refusal (zip-slip,
 * absolute paths, links, devices, FIFOs, control characters, limits, not an
 * archive, truncated and corrupt data), each one checked to leave dest empty
 * and nothing outside it. Also unpack_clear_dir next to symlinks that point out.
 */
#include "testutil.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unpack.h"

enum { FMT_TAR, FMT_TAR_GZ, FMT_TAR_BZ2, FMT_TAR_XZ, FMT_ZIP, FMT_ZIP_STORE, FMT_RAW_GZ };

/* One entry to write. type: 'f' file, 'd' folder, 's' symlink (data = target),
 * 'h' hard link (data = target), 'c' character device, 'p' FIFO. */
typedef struct {
    const char *name;
    char type;
    const char *data; /* file contents (size bytes, or strlen when size is 0) */
    size_t size;
    int perm;         /* 0: 0644 for files, 0755 for folders */
} TestEntry;

/* Writes the entries to path in format fmt. Runs in C.UTF-8 for the thread:
 * libarchive 3.6's pax writer crashes on a UTF-8 name set in the C locale. */
static void write_archive(const char *path, int fmt, const TestEntry *ents, size_t n)
{
    locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    assert_non_null(utf8);
    locale_t old = uselocale(utf8);
    struct archive *a = archive_write_new();
    assert_non_null(a);
    int ok = ARCHIVE_OK;
    switch (fmt) {
    case FMT_ZIP:
        ok |= archive_write_set_format_zip(a);
        break;
    case FMT_ZIP_STORE:
        ok |= archive_write_set_format_zip(a);
        ok |= archive_write_zip_set_compression_store(a);
        break;
    case FMT_RAW_GZ:
        ok |= archive_write_set_format_raw(a);
        ok |= archive_write_add_filter_gzip(a);
        break;
    default:
        ok |= archive_write_set_format_pax_restricted(a);
        if (fmt == FMT_TAR_GZ)
            ok |= archive_write_add_filter_gzip(a);
        if (fmt == FMT_TAR_BZ2)
            ok |= archive_write_add_filter_bzip2(a);
        if (fmt == FMT_TAR_XZ)
            ok |= archive_write_add_filter_xz(a);
    }
    assert_int_equal(ok, ARCHIVE_OK);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        const TestEntry *t = &ents[i];
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname_utf8(e, t->name);
        archive_entry_set_mtime(e, 1700000000, 0);
        size_t size = 0;
        switch (t->type) {
        case 'f':
            size = t->size ? t->size : strlen(t->data);
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, t->perm ? t->perm : 0644);
            archive_entry_set_size(e, (la_int64_t)size);
            break;
        case 'd':
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, t->perm ? t->perm : 0755);
            break;
        case 's':
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_perm(e, 0777);
            archive_entry_set_symlink(e, t->data);
            break;
        case 'h':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_hardlink(e, t->data);
            archive_entry_set_size(e, 0);
            break;
        case 'c':
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_perm(e, 0666);
            archive_entry_set_rdevmajor(e, 1);
            archive_entry_set_rdevminor(e, 3);
            break;
        case 'p':
            archive_entry_set_filetype(e, AE_IFIFO);
            archive_entry_set_perm(e, 0644);
            break;
        default:
            fail_msg("bad test entry type %c", t->type);
        }
        if (archive_write_header(a, e) != ARCHIVE_OK)
            fail_msg("writing header of %s: %s", t->name, archive_error_string(a));
        if (size)
            assert_int_equal(archive_write_data(a, t->data, size), (la_ssize_t)size);
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    uselocale(old);
    freelocale(utf8);
}

/* out (PATH_MAX bytes) = dir/name; fails the test when it does not fit. */
static void path_join(char *out, const char *dir, const char *name)
{
    if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
        fail_msg("path too long: %s/%s", dir, name);
}

/* A fresh folder tmp/name, its path in out (PATH_MAX bytes). */
static void make_dir(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%s", testutil_tmp_path(name));
    if (mkdir(out, 0755) != 0)
        fail_msg("mkdir %s: %s", out, strerror(errno));
}

/* Entries directly inside dir. */
static int count_inside(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("opendir %s: %s", dir, strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static mode_t current_umask(void)
{
    mode_t m = umask(022);
    umask(m);
    return m;
}

/* dir/rel is a regular file holding exactly len bytes of data, mode 0644 less the umask. */
static void assert_file(const char *dir, const char *rel, const char *data, size_t len)
{
    char path[PATH_MAX];
    path_join(path, dir, rel);
    struct stat sb;
    if (lstat(path, &sb) != 0)
        fail_msg("%s: %s", path, strerror(errno));
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0644 & ~current_umask());
    assert_int_equal((size_t)sb.st_size, len);
    char *got = malloc(len + 1);
    assert_non_null(got);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(got, 1, len + 1, f), len);
    fclose(f);
    assert_memory_equal(got, data, len);
    free(got);
}

static void assert_dir(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    path_join(path, dir, rel);
    struct stat sb;
    if (lstat(path, &sb) != 0)
        fail_msg("%s: %s", path, strerror(errno));
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0755 & ~current_umask());
}

/* Unpacking archive into dest fails with a message holding want and want2
 * (when not NULL), leaves dest empty and stats zeroed. */
static void expect_refused(const char *archive, const char *dest, const UnpackLimits *lim,
                           const char *want, const char *want2)
{
    UnpackStats st = {1, 1, 1, 1};
    Error err = {{0}};
    int rc = unpack_archive(archive, dest, lim, &st, &err);
    print_message("refused: %s\n", err.msg);
    assert_int_equal(rc, -1);
    if (!strstr(err.msg, want) || (want2 && !strstr(err.msg, want2)))
        fail_msg("message '%s' lacks '%s'%s%s", err.msg, want, want2 ? " or " : "",
                 want2 ? want2 : "");
    assert_int_equal(count_inside(dest), 0);
    assert_int_equal(st.files + st.dirs + st.bytes + st.skipped, 0);
}

/* Deterministic bytes that do not compress. */
static void fill_random(char *buf, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (char)(seed >> 56);
    }
}

static const TestEntry classes_tree[] = {
    {"./", 'd', NULL, 0, 0},
    {"./daisy/", 'd', NULL, 0, 0700},
    {"./daisy/1.jpg", 'f', "daisy one", 0, 0777},
    {"./daisy/2.jpg", 'f', "daisy two!", 0, 04755},
    {"rose/sub/1.jpg", 'f', "rose", 0, 0},
    {"rose/empty.jpg", 'f', "", 0, 0},
};

static void test_good_formats(void **state)
{
    (void)state;
    const int fmts[] = {FMT_TAR, FMT_TAR_GZ, FMT_TAR_BZ2, FMT_TAR_XZ, FMT_ZIP};
    const char *names[] = {"tar", "tar.gz", "tar.bz2", "tar.xz", "zip"};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX], root[PATH_MAX];
        char sub[64];
        snprintf(sub, sizeof sub, "good-%s", names[i]);
        make_dir(dir, sub);
        path_join(dest, dir, "dest");
        assert_int_equal(mkdir(dest, 0755), 0);
        /* a misleading name: the format comes from the content */
        path_join(archive, dir, "upload.bin");
        write_archive(archive, fmts[i], classes_tree,
                      sizeof classes_tree / sizeof classes_tree[0]);

        UnpackStats st;
        Error err = {{0}};
        if (unpack_archive(archive, dest, NULL, &st, &err) != 0)
            fail_msg("%s: %s", names[i], err.msg);
        assert_dir(dest, "daisy");
        assert_dir(dest, "rose");
        assert_dir(dest, "rose/sub");
        assert_file(dest, "daisy/1.jpg", "daisy one", 9);
        assert_file(dest, "daisy/2.jpg", "daisy two!", 10);
        assert_file(dest, "rose/sub/1.jpg", "rose", 4);
        assert_file(dest, "rose/empty.jpg", "", 0);
        assert_int_equal(count_inside(dest), 2);
        assert_int_equal(st.files, 4);
        assert_int_equal(st.dirs, 3); /* daisy explicit, rose and rose/sub implied */
        assert_int_equal(st.bytes, 9 + 10 + 4);
        assert_int_equal(st.skipped, 0);
        /* two classes at the top: the root is dest itself */
        assert_int_equal(unpack_dataset_root(dest, root, sizeof root, &err), 0);
        assert_string_equal(root, dest);
    }
}

static void test_zip_single_top_dir_and_junk(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX], root[PATH_MAX], want[PATH_MAX];
    make_dir(dir, "zip-top");
    path_join(dest, dir, "dest");
    assert_int_equal(mkdir(dest, 0755), 0);
    path_join(archive, dir, "flowers.zip");
    const TestEntry ents[] = {
        {"flowers/", 'd', NULL, 0, 0},
        {"flowers/daisy/", 'd', NULL, 0, 0},
        {"flowers/daisy/a.jpg", 'f', "AAAA", 0, 0},
        {"flowers/caf\xc3\xa9 cr\xc3\xa8me/b.jpg", 'f', "BB", 0, 0},
        {"__MACOSX/", 'd', NULL, 0, 0},
        {"__MACOSX/flowers/daisy/._a.jpg", 'f', "resource fork", 0, 0},
        {"flowers/daisy/._a.jpg", 'f', "resource fork", 0, 0},
        {".DS_Store", 'f', "finder", 0, 0},
        {"flowers/daisy/.DS_Store", 'f', "finder", 0, 0},
        {"flowers/Thumbs.db", 'f', "explorer", 0, 0},
    };
    write_archive(archive, FMT_ZIP, ents, sizeof ents / sizeof ents[0]);
    UnpackStats st;
    Error err = {{0}};
    if (unpack_archive(archive, dest, NULL, &st, &err) != 0)
        fail_msg("%s", err.msg);
    assert_file(dest, "flowers/daisy/a.jpg", "AAAA", 4);
    assert_file(dest, "flowers/caf\xc3\xa9 cr\xc3\xa8me/b.jpg", "BB", 2);
    assert_int_equal(count_inside(dest), 1);
    char path[PATH_MAX];
    path_join(path, dest, "flowers/daisy");
    assert_int_equal(count_inside(path), 1);
    path_join(path, dest, "flowers");
    assert_int_equal(count_inside(path), 2);
    assert_int_equal(st.files, 2);
    assert_int_equal(st.dirs, 3);
    assert_int_equal(st.bytes, 6);
    assert_int_equal(st.skipped, 6);

    assert_int_equal(unpack_dataset_root(dest, root, sizeof root, &err), 0);
    path_join(want, dest, "flowers");
    assert_string_equal(root, want);
    /* a hidden entry next to the folder does not count (the scan skips it too) */
    path_join(path, dest, ".hidden");
    testutil_write_file(path, "x", 1);
    assert_int_equal(unpack_dataset_root(dest, root, sizeof root, &err), 0);
    assert_string_equal(root, want);
    /* out too short */
    assert_int_equal(unpack_dataset_root(dest, root, strlen(want), &err), -1);
    assert_non_null(strstr(err.msg, "longer than"));
    /* a file next to it: dest is the root */
    path_join(path, dest, "labels.txt");
    testutil_write_file(path, "x", 1);
    assert_int_equal(unpack_dataset_root(dest, root, sizeof root, &err), 0);
    assert_string_equal(root, dest);

    /* a single symlink to a folder is not taken as the root */
    char only[PATH_MAX];
    make_dir(only, "zip-top-link");
    path_join(path, only, "flowers");
    assert_int_equal(symlink(dir, path), 0);
    assert_int_equal(unpack_dataset_root(only, root, sizeof root, &err), 0);
    assert_string_equal(root, only);
    /* an empty folder is its own root */
    make_dir(only, "zip-top-empty");
    assert_int_equal(unpack_dataset_root(only, root, sizeof root, &err), 0);
    assert_string_equal(root, only);
    assert_int_equal(unpack_dataset_root(testutil_tmp_path("no-such"), root, sizeof root, &err),
                     -1);
    assert_non_null(strstr(err.msg, "cannot read folder"));
}

/* A folder tmp/name holding only dest/, and the archive path next to it. */
static void refusal_setup(const char *name, char *dir, char *dest, char *archive)
{
    make_dir(dir, name);
    path_join(dest, dir, "dest");
    assert_int_equal(mkdir(dest, 0755), 0);
    snprintf(archive, PATH_MAX, "%s.archive", dir);
}

static void test_zip_slip(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX];
    const char *evil[] = {"../evil.txt", "a/../../evil.txt", "ok/../../../evil.txt", "a/.."};
    const int fmts[] = {FMT_TAR_GZ, FMT_ZIP};
    for (size_t f = 0; f < 2; f++) {
        for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "slip-%zu-%zu", f, i);
            refusal_setup(name, dir, dest, archive);
            /* good entries first, so that there is something to clean up */
            const TestEntry ents[] = {
                {"ok/1.txt", 'f', "fine", 0, 0},
                {evil[i], 'f', "gotcha", 0, 0},
                {"ok/2.txt", 'f', "fine", 0, 0},
            };
            write_archive(archive, fmts[f], ents, 3);
            expect_refused(archive, dest, NULL, evil[i], "'..'");
            /* nothing next to dest, nor one level further up */
            assert_int_equal(count_inside(dir), 1);
            assert_false(exists(testutil_tmp_path("evil.txt")));

            /* dest is usable again */
            const TestEntry good[] = {{"ok/1.txt", 'f', "fine", 0, 0}};
            write_archive(archive, fmts[f], good, 1);
            Error err = {{0}};
            if (unpack_archive(archive, dest, NULL, NULL, &err) != 0)
                fail_msg("%s", err.msg);
            assert_file(dest, "ok/1.txt", "fine", 4);
        }
    }
}

static void test_absolute_and_bad_names(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX], target[PATH_MAX];
    refusal_setup("absolute", dir, dest, archive);
    path_join(target, dir, "abs-target.txt");
    const TestEntry abs_ent[] = {{"ok.txt", 'f', "x", 0, 0}, {target, 'f', "gotcha", 0, 0}};
    write_archive(archive, FMT_TAR, abs_ent, 2);
    expect_refused(archive, dest, NULL, target, "absolute path");
    assert_false(exists(target));
    write_archive(archive, FMT_ZIP, abs_ent, 2);
    expect_refused(archive, dest, NULL, target, "absolute path");
    assert_false(exists(target));

    const TestEntry ctrl[] = {{"ok.txt", 'f', "x", 0, 0}, {"a/b\nc.txt", 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR_GZ, ctrl, 2);
    expect_refused(archive, dest, NULL, "'a/b\\x0ac.txt'", "control character");

    const TestEntry bslash[] = {{"a\\b.txt", 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR, bslash, 1);
    expect_refused(archive, dest, NULL, "a\\b.txt", "backslash");

    const TestEntry dot[] = {{"ok.txt", 'f', "x", 0, 0}, {".//.", 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR, dot, 2);
    expect_refused(archive, dest, NULL, "'.//.'", "path is empty");

    const TestEntry twice[] = {{"a/x.txt", 'f', "1", 0, 0}, {"a//./x.txt", 'f', "2", 0, 0}};
    write_archive(archive, FMT_TAR, twice, 2);
    expect_refused(archive, dest, NULL, "a//./x.txt", "appears twice");

    const TestEntry file_as_dir[] = {{"a", 'f', "1", 0, 0}, {"a/x.txt", 'f', "2", 0, 0}};
    write_archive(archive, FMT_TAR, file_as_dir, 2);
    expect_refused(archive, dest, NULL, "'a/x.txt'", "'a' is needed as a folder but is a file");

    char deep[4 * (UNPACK_MAX_DEPTH + 2)] = "";
    for (int i = 0; i <= UNPACK_MAX_DEPTH; i++)
        strcat(deep, "d/");
    strcat(deep, "f");
    const TestEntry deep_ent[] = {{deep, 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR, deep_ent, 1);
    expect_refused(archive, dest, NULL, "d/d/d/", "nested deeper than 64 folders");
    /* one level less is fine */
    const TestEntry ok_deep[] = {{deep + 2, 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR, ok_deep, 1);
    Error err = {{0}};
    UnpackStats st;
    if (unpack_archive(archive, dest, NULL, &st, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(st.dirs, UNPACK_MAX_DEPTH);
    assert_int_equal(unpack_clear_dir(dest, &err), 0);

    char longname[UNPACK_MAX_PATH + 8];
    for (size_t i = 0; i < sizeof longname - 1; i++)
        longname[i] = i % 100 == 99 ? '/' : 'n';
    longname[sizeof longname - 1] = '\0';
    const TestEntry long_ent[] = {{longname, 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR, long_ent, 1);
    expect_refused(archive, dest, NULL, "nnnnnnn", "longer than 1024 bytes");
}

static void test_links_and_special_files(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX];
    refusal_setup("links", dir, dest, archive);

    const TestEntry sym[] = {{"data/a.txt", 'f', "a", 0, 0},
                             {"data/passwd", 's', "../../etc/passwd", 0, 0}};
    write_archive(archive, FMT_TAR_GZ, sym, 2);
    expect_refused(archive, dest, NULL, "'data/passwd': is a symbolic link to '../../etc/passwd'",
                   "links are refused");
    write_archive(archive, FMT_ZIP, sym, 2);
    expect_refused(archive, dest, NULL, "'data/passwd': is a symbolic link", "links are refused");

    /* a link to a folder, then a file "through" it: refused at the link */
    const TestEntry sym_dir[] = {{"data", 's', "/tmp", 0, 0}, {"data/x.txt", 'f', "x", 0, 0}};
    write_archive(archive, FMT_TAR, sym_dir, 2);
    expect_refused(archive, dest, NULL, "'data': is a symbolic link to '/tmp'", NULL);

    const TestEntry hard[] = {{"data/a.txt", 'f', "a", 0, 0}, {"data/b.txt", 'h', "data/a.txt", 0, 0}};
    write_archive(archive, FMT_TAR, hard, 2);
    expect_refused(archive, dest, NULL, "'data/b.txt': is a hard link to 'data/a.txt'",
                   "links are refused");

    const TestEntry dev[] = {{"data/a.txt", 'f', "a", 0, 0}, {"data/null", 'c', NULL, 0, 0}};
    write_archive(archive, FMT_TAR, dev, 2);
    expect_refused(archive, dest, NULL, "'data/null': is a device", NULL);

    const TestEntry fifo[] = {{"data/a.txt", 'f', "a", 0, 0}, {"data/pipe", 'p', NULL, 0, 0}};
    write_archive(archive, FMT_TAR, fifo, 2);
    expect_refused(archive, dest, NULL, "'data/pipe': is a FIFO", NULL);
    assert_int_equal(count_inside(dir), 1);
}

static void test_limits(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX];
    refusal_setup("limits", dir, dest, archive);
    char kb[1000];
    memset(kb, 'k', sizeof kb);
    const TestEntry three[] = {
        {"c/1", 'f', kb, sizeof kb, 0},
        {"c/2", 'f', kb, sizeof kb, 0},
        {"c/3", 'f', kb, sizeof kb, 0},
    };
    write_archive(archive, FMT_TAR_GZ, three, 3);
    UnpackLimits lim = {2500, 0};
    expect_refused(archive, dest, &lim, "unpacks to more than 2500 bytes", NULL);
    /* exactly at the limit is fine */
    lim.max_total_bytes = 3000;
    UnpackStats st;
    Error err = {{0}};
    if (unpack_archive(archive, dest, &lim, &st, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(st.bytes, 3000);
    assert_int_equal(unpack_clear_dir(dest, &err), 0);

    /* entries: c/1..3 and junk count, "./" too */
    const TestEntry four[] = {
        {"./", 'd', NULL, 0, 0},
        {"c/1", 'f', "1", 0, 0},
        {"c/._1", 'f', "junk", 0, 0},
        {"c/2", 'f', "2", 0, 0},
    };
    write_archive(archive, FMT_ZIP, four, 4);
    lim = (UnpackLimits){0, 3};
    expect_refused(archive, dest, &lim, "more than 3 entries", NULL);
    lim.max_entries = 4;
    if (unpack_archive(archive, dest, &lim, &st, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(st.files, 2);
    assert_int_equal(st.skipped, 1);
    assert_int_equal(unpack_clear_dir(dest, &err), 0);

    /* a compression bomb in small: 8 MiB of zeros is a few KiB of gzip; both
     * the size in the header and the data written are held to the limit */
    size_t big = 8u << 20;
    char *zeros = calloc(big, 1);
    assert_non_null(zeros);
    const TestEntry bomb[] = {{"c/ok", 'f', "ok", 0, 0}, {"c/zeros", 'f', zeros, big, 0}};
    write_archive(archive, FMT_TAR_GZ, bomb, 2);
    struct stat sb;
    assert_int_equal(stat(archive, &sb), 0);
    assert_true(sb.st_size < 64 * 1024);
    lim = (UnpackLimits){1u << 20, 0};
    expect_refused(archive, dest, &lim, "unpacks to more than 1048576 bytes", NULL);

    /* A zip whose headers lie: every size field of c/zeros says 100 bytes, so
     * the size check before writing passes, and libarchive hands out the whole
     * 8 MiB before it notices; the count of the bytes written stops it. */
    write_archive(archive, FMT_ZIP, bomb, 2);
    FILE *fp = fopen(archive, "rb");
    assert_non_null(fp);
    unsigned char zip[64 * 1024];
    size_t len = fread(zip, 1, sizeof zip, fp);
    fclose(fp);
    assert_true(len < sizeof zip);
    int patched = 0;
    const uint32_t big32 = (uint32_t)big, lie = 100;
    for (size_t i = 0; i + 28 <= len; i++) {
        /* uncompressed size: local header +22, data descriptor +12, central directory +24 */
        static const struct { char sig[4]; size_t at; } fields[] = {
            {"PK\3\4", 22}, {"PK\7\10", 12}, {"PK\1\2", 24}};
        for (size_t f = 0; f < 3; f++)
            if (memcmp(zip + i, fields[f].sig, 4) == 0 &&
                memcmp(zip + i + fields[f].at, &big32, 4) == 0) {
                memcpy(zip + i + fields[f].at, &lie, 4);
                patched++;
            }
    }
    assert_true(patched >= 2); /* at least the central directory and one more */
    testutil_write_file(archive, zip, len);
    expect_refused(archive, dest, &lim, "unpacks to more than 1048576 bytes", NULL);

    /* the size in a header alone is refused before any data is read: a tar
     * cut after 4 KiB says "too big", not "truncated" */
    write_archive(archive, FMT_TAR, bomb, 2);
    fp = fopen(archive, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(zip, 1, 4096, fp), 4096);
    fclose(fp);
    testutil_write_file(archive, zip, 4096);
    expect_refused(archive, dest, &lim, "unpacks to more than 1048576 bytes", NULL);
    free(zeros);
    assert_int_equal(count_inside(dir), 1);
}

static void test_not_an_archive(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX];
    refusal_setup("junk", dir, dest, archive);
    char noise[5000];
    fill_random(noise, sizeof noise, 7);
    noise[0] = 'J'; /* not a gzip, bzip2, xz or zstd magic by chance */
    testutil_write_file(archive, noise, sizeof noise);
    expect_refused(archive, dest, NULL, "not a tar, tar.gz or zip archive", NULL);
    testutil_write_file(archive, "", 0);
    expect_refused(archive, dest, NULL, "not a tar, tar.gz or zip archive", NULL);
    char text[2000];
    memset(text, 'a', sizeof text);
    testutil_write_file(archive, text, sizeof text);
    expect_refused(archive, dest, NULL, "not a tar, tar.gz or zip archive", NULL);
    /* gzip around something that is not a tar */
    const TestEntry raw[] = {{"data", 'f', "just some text, gzipped", 0, 0}};
    write_archive(archive, FMT_RAW_GZ, raw, 1);
    expect_refused(archive, dest, NULL, "not a tar, tar.gz or zip archive", NULL);

    Error err = {{0}};
    assert_int_equal(unpack_archive(testutil_tmp_path("no-such.tgz"), dest, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open archive"));
    assert_non_null(strstr(err.msg, "no-such.tgz"));
    assert_int_equal(unpack_archive(dir, dest, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
}

static void test_truncated_and_corrupt(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX];
    refusal_setup("truncated", dir, dest, archive);
    size_t n = 300 * 1000;
    char *data = malloc(n);
    assert_non_null(data);
    fill_random(data, n, 42);
    const TestEntry ents[] = {
        {"a/small.txt", 'f', "small", 0, 0},
        {"a/big.bin", 'f', data, n, 0},
        {"b/after.txt", 'f', "after", 0, 0},
    };
    const int fmts[] = {FMT_TAR_GZ, FMT_TAR, FMT_ZIP};
    for (size_t f = 0; f < 3; f++) {
        write_archive(archive, fmts[f], ents, 3);
        FILE *fp = fopen(archive, "rb");
        assert_non_null(fp);
        char *whole = malloc(n + 100000);
        assert_non_null(whole);
        size_t len = fread(whole, 1, n + 100000, fp);
        fclose(fp);
        assert_true(len > n);
        /* cut in the middle of big.bin's data */
        testutil_write_file(archive, whole, len / 2);
        free(whole);
        /* libarchive's reasons: "truncated gzip input", "Truncated tar archive",
         * "ZIP decompression failed (-5)" */
        expect_refused(archive, dest, NULL, "'a/big.bin': cannot read its data",
                       fmts[f] == FMT_ZIP ? "ZIP" : "runcated");
    }

    /* a stored zip with one byte changed: libarchive's CRC check */
    const TestEntry stored[] = {{"a/x.txt", 'f', "MARKER-0123456789", 0, 0}};
    write_archive(archive, FMT_ZIP_STORE, stored, 1);
    FILE *fp = fopen(archive, "rb");
    assert_non_null(fp);
    char buf[4096];
    size_t len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    char *at = memmem(buf, len, "MARKER", 6);
    assert_non_null(at);
    at[0] = 'X';
    testutil_write_file(archive, buf, len);
    expect_refused(archive, dest, NULL, "'a/x.txt': cannot read its data", "ZIP bad CRC");
    free(data);
    assert_int_equal(count_inside(dir), 1);
}

static void test_destination_checks(void **state)
{
    (void)state;
    char dir[PATH_MAX], dest[PATH_MAX], archive[PATH_MAX], path[PATH_MAX];
    refusal_setup("dest", dir, dest, archive);
    const TestEntry ents[] = {{"c/1.txt", 'f', "1", 0, 0}};
    write_archive(archive, FMT_TAR, ents, 1);
    /* not empty: refused and left alone */
    path_join(path, dest, "mine.txt");
    testutil_write_file(path, "mine", 4);
    Error err = {{0}};
    assert_int_equal(unpack_archive(archive, dest, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "is not empty"));
    assert_file(dest, "mine.txt", "mine", 4);
    assert_int_equal(count_inside(dest), 1);
    /* a symlink as dest is not followed */
    char other[PATH_MAX], link[PATH_MAX];
    make_dir(other, "dest-other");
    path_join(link, dir, "link");
    assert_int_equal(symlink(other, link), 0);
    assert_int_equal(unpack_archive(archive, link, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open destination folder"));
    assert_int_equal(count_inside(other), 0);
    assert_int_equal(unpack_archive(archive, testutil_tmp_path("dest-missing"), NULL, NULL, &err),
                     -1);
    assert_non_null(strstr(err.msg, "cannot open destination folder"));
    /* NULL err and stats are allowed */
    assert_int_equal(unpack_archive(archive, other, NULL, NULL, NULL), 0);
    assert_file(other, "c/1.txt", "1", 1);
}

static void test_clear_dir_keeps_link_targets(void **state)
{
    (void)state;
    char inside[PATH_MAX], outside[PATH_MAX], path[PATH_MAX], keep[PATH_MAX], keepdir[PATH_MAX];
    make_dir(inside, "clear-inside");
    make_dir(outside, "clear-outside");
    path_join(keep, outside, "keep.txt");
    testutil_write_file(keep, "keep", 4);
    path_join(keepdir, outside, "sub");
    assert_int_equal(mkdir(keepdir, 0755), 0);
    path_join(path, outside, "sub/keep2.txt");
    testutil_write_file(path, "keep", 4);

    path_join(path, inside, "a.txt");
    testutil_write_file(path, "a", 1);
    path_join(path, inside, "d");
    assert_int_equal(mkdir(path, 0755), 0);
    path_join(path, inside, "d/e");
    assert_int_equal(mkdir(path, 0700), 0);
    path_join(path, inside, "d/e/b.txt");
    testutil_write_file(path, "b", 1);
    path_join(path, inside, "d/out"); /* a link to a folder outside */
    assert_int_equal(symlink(outside, path), 0);
    path_join(path, inside, "out");
    assert_int_equal(symlink(outside, path), 0);
    path_join(path, inside, "keep-link"); /* a link to a file outside */
    assert_int_equal(symlink(keep, path), 0);
    path_join(path, inside, "dangling");
    assert_int_equal(symlink("/nonexistent/x", path), 0);

    Error err = {{0}};
    assert_int_equal(unpack_clear_dir(inside, &err), 0);
    assert_int_equal(count_inside(inside), 0);
    assert_true(exists(inside));
    assert_file(outside, "keep.txt", "keep", 4);
    assert_file(outside, "sub/keep2.txt", "keep", 4);
    assert_int_equal(count_inside(outside), 2);

    /* the folder itself a symlink: refused, the target untouched */
    path_join(path, inside, "out");
    assert_int_equal(symlink(outside, path), 0);
    assert_int_equal(unpack_clear_dir(path, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open folder"));
    assert_int_equal(count_inside(outside), 2);
    assert_int_equal(unpack_clear_dir(testutil_tmp_path("clear-missing"), &err), -1);
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_formats),
        cmocka_unit_test(test_zip_single_top_dir_and_junk),
        cmocka_unit_test(test_zip_slip),
        cmocka_unit_test(test_absolute_and_bad_names),
        cmocka_unit_test(test_links_and_special_files),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_not_an_archive),
        cmocka_unit_test(test_truncated_and_corrupt),
        cmocka_unit_test(test_destination_checks),
        cmocka_unit_test(test_clear_dir_keeps_link_targets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
