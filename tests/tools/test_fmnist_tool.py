"""test_fmnist_tool.py: tools/fmnist_to_png, run as a user runs it, on the real
Fashion-MNIST files of Debian's dataset-fashion-mnist package.

Run from the repository root with Debian's Python:
    /usr/bin/python3 -m unittest -v tests/tools/test_fmnist_tool.py
The binary is $RESNETD_BUILD_DIR/tools/fmnist_to_png (tests/run.sh sets it; default
build/tools/fmnist_to_png).

- Classes 0,1,2 with 20 per class at size 32: folder names, counts, 32x32 8-bit gray
  PNGs (parsed here with struct + zlib), and pixels equal to a numpy bilinear resize
  of the IDX images (decoded here with gzip + numpy) within 1 grey level.
- Size 28 (a copy) and 56 (pixel replication) compared exactly with the IDX data.
- Selection: the first N of each class in file order; --seed gives another,
  reproducible choice; --counts gives an imbalanced set; --layout split.
- Bad arguments exit 2 with a message; a missing source folder, malformed IDX files
  and a non-empty OUT_DIR exit 1 with a message naming the file (and offset).
"""

import gzip
import os
import struct
import subprocess
import tempfile
import unittest
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RESNETD_BUILD_DIR") or os.path.join(ROOT, "build")
TOOL = os.path.join(BUILD, "tools", "fmnist_to_png")
SOURCE = "/usr/share/datasets/fashion-mnist"
NAMES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def run(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=300)


def read_idx(prefix):
    """(images uint8 [n, 28, 28], labels uint8 [n]) of SOURCE/prefix-*."""
    with gzip.open(os.path.join(SOURCE, prefix + "-images-idx3-ubyte.gz"), "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 2051
    images = np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
    with gzip.open(os.path.join(SOURCE, prefix + "-labels-idx1-ubyte.gz"), "rb") as f:
        data = f.read()
    magic, n2 = struct.unpack(">II", data[:8])
    assert magic == 2049 and n2 == n
    return images, np.frombuffer(data, np.uint8, offset=8)


def read_png(path):
    """(width, height, bit depth, colour type, pixels uint8 [h, w]) for an 8-bit gray
    non-interlaced PNG; the five filter types undone here."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, (path, kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype != 0 or interlace != 0:
        return w, h, depth, ctype, None
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), np.int32)
    prev = np.zeros(w, np.int32)
    for y in range(h):
        row = raw[y * (w + 1):(y + 1) * (w + 1)]
        ftype, line = row[0], np.frombuffer(row[1:], np.uint8).astype(np.int32)
        cur = np.zeros(w, np.int32)
        for x in range(w):
            a = cur[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return w, h, depth, ctype, out.astype(np.uint8)


def bilinear(img, size):
    """Half-pixel-centre bilinear resize without antialiasing (torch's
    interpolate(mode="bilinear", align_corners=False)), rounded."""
    h, w = img.shape

    def coords(n_out, n_in):
        s = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        s = np.maximum(s, 0)
        i0 = s.astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, s - i0

    y0, y1, fy = coords(size, h)
    x0, x1, fx = coords(size, w)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx) + f[y0][:, x1] * fx
    bot = f[y1][:, x0] * (1 - fx) + f[y1][:, x1] * fx
    v = top * (1 - fy)[:, None] + bot * fy[:, None]
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


def listing(out):
    """{class folder: sorted file names} of a flat output folder."""
    return {d: sorted(os.listdir(os.path.join(out, d))) for d in sorted(os.listdir(out))}


class FmnistTool(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(TOOL):
            raise unittest.SkipTest(f"{TOOL} is not built (make build/tools/fmnist_to_png)")
        cls.tmp = tempfile.TemporaryDirectory(prefix="fmnist-test-")
        cls.images, cls.labels = read_idx("train")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def out(self, name):
        return os.path.join(self.tmp.name, name)

    def make(self, name, *args):
        out = self.out(name)
        r = run(out, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return out, r

    def first_of_class(self, c, n):
        return [int(i) for i in np.flatnonzero(self.labels == c)[:n]]

    def test_small_set_size_32(self):
        out, r = self.make("s32", "--classes", "0,1,2", "--per-class", "20", "--size", "32")
        files = listing(out)
        self.assertEqual(sorted(files), ["pullover", "t-shirt_top", "trouser"])
        for c in range(3):
            want = [f"train-{i:05d}.png" for i in self.first_of_class(c, 20)]
            self.assertEqual(files[NAMES[c]], want)
        self.assertIn("wrote 60 images of 32x32", r.stdout)
        self.assertRegex(r.stdout, r"1 trouser\s+20")
        worst = 0
        exact = total = 0
        for c in range(3):
            for name in files[NAMES[c]]:
                w, h, depth, ctype, px = read_png(os.path.join(out, NAMES[c], name))
                self.assertEqual((w, h, depth, ctype), (32, 32, 8, 0), name)
                idx = int(name[6:11])
                self.assertEqual(self.labels[idx], c)
                want = bilinear(self.images[idx], 32)
                d = np.abs(px.astype(int) - want.astype(int))
                worst = max(worst, int(d.max()))
                exact += int((d == 0).sum())
                total += d.size
        # the same formula in double: only a rounding tie can differ, by one level
        self.assertLessEqual(worst, 1)
        self.assertGreater(exact / total, 0.999)

    def test_size_28_is_exact(self):
        out, _ = self.make("s28", "--classes", "4,9", "--per-class", "5")
        first = self.first_of_class(4, 1)[0]
        _, _, _, _, px = read_png(os.path.join(out, "coat", f"train-{first:05d}.png"))
        np.testing.assert_array_equal(px, self.images[first])
        for name in os.listdir(os.path.join(out, "ankle_boot")):
            _, _, _, _, px = read_png(os.path.join(out, "ankle_boot", name))
            np.testing.assert_array_equal(px, self.images[int(name[6:11])])

    def test_size_56_replicates_pixels(self):
        out, _ = self.make("s56", "--classes", "8", "--per-class", "3", "--size", "56")
        for name in os.listdir(os.path.join(out, "bag")):
            w, h, _, _, px = read_png(os.path.join(out, "bag", name))
            self.assertEqual((w, h), (56, 56))
            want = np.repeat(np.repeat(self.images[int(name[6:11])], 2, 0), 2, 1)
            np.testing.assert_array_equal(px, want)

    def test_test_split_and_both(self):
        out, _ = self.make("test", "--split", "test", "--classes", "3", "--per-class", "4")
        images, labels = read_idx("t10k")
        want = [int(i) for i in np.flatnonzero(labels == 3)[:4]]
        self.assertEqual(listing(out), {"dress": [f"t10k-{i:05d}.png" for i in want]})
        _, _, _, _, px = read_png(os.path.join(out, "dress", f"t10k-{want[0]:05d}.png"))
        np.testing.assert_array_equal(px, images[want[0]])
        out, r = self.make("both", "--split", "both", "--layout", "split", "--classes", "5",
                           "--per-class", "3")
        self.assertEqual(sorted(os.listdir(out)), ["train", "val"])
        self.assertTrue(all(n.startswith("train-")
                            for n in os.listdir(os.path.join(out, "train", "sandal"))))
        self.assertEqual(len(os.listdir(os.path.join(out, "val", "sandal"))), 3)
        self.assertTrue(all(n.startswith("t10k-")
                            for n in os.listdir(os.path.join(out, "val", "sandal"))))
        self.assertIn("train 3, val 3", r.stdout)

    def test_seed_gives_another_reproducible_choice(self):
        a, _ = self.make("seed_a", "--classes", "6", "--per-class", "10", "--seed", "3")
        b, _ = self.make("seed_b", "--classes", "6", "--per-class", "10", "--seed", "3")
        c, _ = self.make("seed_c", "--classes", "6", "--per-class", "10", "--seed", "4")
        la, lb, lc = listing(a), listing(b), listing(c)
        self.assertEqual(la, lb)
        self.assertNotEqual(la, lc)
        first = [f"train-{i:05d}.png" for i in self.first_of_class(6, 10)]
        self.assertNotEqual(la["shirt"], first)
        for name in la["shirt"] + lc["shirt"]:
            self.assertEqual(self.labels[int(name[6:11])], 6)

    def test_counts_make_an_imbalanced_set(self):
        out, r = self.make("counts", "--counts", "0:30,7:3", "--size", "16")
        files = listing(out)
        self.assertEqual(sorted(files), ["sneaker", "t-shirt_top"])
        self.assertEqual(len(files["t-shirt_top"]), 30)
        self.assertEqual(len(files["sneaker"]), 3)
        self.assertEqual(files["sneaker"], [f"train-{i:05d}.png"
                                            for i in self.first_of_class(7, 3)])
        self.assertIn("wrote 33 images", r.stdout)

    def test_split_layout_by_fraction(self):
        out, r = self.make("split", "--layout", "split", "--classes", "0,1", "--per-class", "10",
                           "--val-fraction", "0.3")
        for c in (0, 1):
            train = os.listdir(os.path.join(out, "train", NAMES[c]))
            val = os.listdir(os.path.join(out, "val", NAMES[c]))
            self.assertEqual((len(train), len(val)), (7, 3))
            # file order: the last 3 of the 10 go to val
            first = [f"train-{i:05d}.png" for i in self.first_of_class(c, 10)]
            self.assertEqual(sorted(val), first[7:])
        self.assertIn("train 7, val 3", r.stdout)

    def test_progress_every_1000(self):
        _, r = self.make("progress", "--counts", "2:2000", "--size", "4")
        lines = [l for l in r.stderr.splitlines() if "images written" in l]
        self.assertEqual(lines, ["fmnist_to_png: 1000 of 2000 images written",
                                 "fmnist_to_png: 2000 of 2000 images written"])

    def test_bad_arguments_exit_2(self):
        cases = [
            ([], "no OUT_DIR"),
            (["x", "--size", "0"], "--size"),
            (["x", "--size", "abc"], "--size"),
            (["x", "--classes", "0,10"], "--classes"),
            (["x", "--classes", "1,1"], "--classes"),
            (["x", "--per-class", "0"], "--per-class"),
            (["x", "--counts", "0:5,0:6"], "--counts"),
            (["x", "--counts", "0-5"], "--counts"),
            (["x", "--counts", "0:5", "--per-class", "3"], "--counts"),
            (["x", "--split", "dev"], "--split"),
            (["x", "--layout", "tree"], "--layout"),
            (["x", "--seed", "-1"], "--seed"),
            (["x", "--val-fraction", "1"], "--val-fraction"),
            (["x", "--val-fraction", "0.2"], "--layout split"),
            (["x", "--frobnicate", "1"], "unknown option --frobnicate"),
            (["x", "--size"], "needs a value"),
            (["x", "y"], "more than one OUT_DIR"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = run(*[self.out(a) if a in ("x", "y") else a for a in args])
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(message, r.stderr)
                self.assertIn("usage:", r.stderr)
                self.assertFalse(os.path.exists(self.out("x")))
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage:", r.stdout)

    def test_missing_source_exits_1(self):
        missing = self.out("no-such-source")
        r = run(self.out("from_missing"), "--source", missing)
        self.assertEqual(r.returncode, 1)
        self.assertIn(missing, r.stderr)
        self.assertFalse(os.path.exists(self.out("from_missing")))

    def test_too_few_images_exits_1(self):
        r = run(self.out("too_many"), "--counts", "1:6001")
        self.assertEqual(r.returncode, 1)
        self.assertIn("6000 images of class 1 (trouser), 6001 were asked for", r.stderr)

    def test_malformed_idx_files_exit_1(self):
        with open(os.path.join(SOURCE, "t10k-images-idx3-ubyte.gz"), "rb") as f:
            good_images = gzip.decompress(f.read())
        with open(os.path.join(SOURCE, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
            good_labels = gzip.decompress(f.read())
        bad_labels = bytearray(good_labels)
        bad_labels[8 + 5] = 10
        cases = [
            ("magic", b"\x00\x00\x08\x04" + good_images[4:], good_labels,
             "images-idx3-ubyte.gz: offset 0: magic number 2052, expected 2051"),
            ("truncated", good_images[:16 + 28 * 28 * 3 + 100], good_labels,
             "images-idx3-ubyte.gz: truncated at offset 2468"),
            ("trailing", good_images + b"\x00", good_labels,
             "images-idx3-ubyte.gz: unexpected data at offset 7840016"),
            ("label_magic", good_images, b"\x00\x00\x08\x03" + good_labels[4:],
             "labels-idx1-ubyte.gz: offset 0: magic number 2051, expected 2049"),
            ("label_count", good_images, good_labels[:7] + b"\x0f" + good_labels[8:-1],
             "labels-idx1-ubyte.gz: offset 4: 9999 labels for 10000 images"),
            ("label_value", good_images, bytes(bad_labels),
             "labels-idx1-ubyte.gz: offset 13: label 10 is outside 0..9"),
            ("header", good_images[:10], good_labels,
             "images-idx3-ubyte.gz: truncated at offset 10"),
        ]
        for name, images, labels, message in cases:
            with self.subTest(case=name):
                src = self.out("src_" + name)
                os.makedirs(src)
                with gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz"), "wb", 1) as f:
                    f.write(images)
                with gzip.open(os.path.join(src, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
                    f.write(labels)
                out = self.out("out_" + name)
                r = run(out, "--source", src, "--split", "test", "--per-class", "1")
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(message, r.stderr)
                self.assertIn(src, r.stderr)
                self.assertFalse(os.path.exists(out))
        # a label file of the wrong kind is missing altogether
        src = self.out("src_nolabels")
        os.makedirs(src)
        with gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz"), "wb", 1) as f:
            f.write(good_images)
        r = run(self.out("out_nolabels"), "--source", src, "--split", "test")
        self.assertEqual(r.returncode, 1)
        self.assertIn("t10k-labels-idx1-ubyte.gz: cannot open", r.stderr)

    def test_refuses_non_empty_out_dir(self):
        out = self.out("nonempty")
        os.makedirs(out)
        with open(os.path.join(out, "keep.txt"), "w") as f:
            f.write("mine")
        r = run(out, "--classes", "0", "--per-class", "2")
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not empty", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertEqual(os.listdir(out), ["keep.txt"])
        r = run(out, "--classes", "0", "--per-class", "2", "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["keep.txt", "t-shirt_top"])
        # an empty existing folder is fine without --force
        empty = self.out("empty_existing")
        os.makedirs(empty)
        r = run(empty, "--classes", "0", "--per-class", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        # a file in the way
        r = run(os.path.join(out, "keep.txt"), "--classes", "0", "--per-class", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not a folder", r.stderr)


if __name__ == "__main__":
    unittest.main()
