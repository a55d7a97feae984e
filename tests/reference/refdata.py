"""Shared plumbing of the reference generators: a stamp that skips regeneration
while the generating script and its library version are unchanged, and an atomic
JSON write that updates the stamp last."""
import hashlib
import json
import os


class Stamp:
    def __init__(self, out, name, script, version):
        os.makedirs(out, exist_ok=True)
        with open(script, "rb") as fh:
            self.digest = hashlib.sha256(fh.read()).hexdigest() + " " + version
        self.out = out
        self.path = os.path.join(out, name + ".stamp")

    def fresh(self):
        """True when the data in out were made by this very script and version."""
        if not os.path.exists(self.path):
            return False
        with open(self.path) as f:
            return f.read() == self.digest

    def write_json(self, filename, obj):
        """Writes obj to out/filename atomically, then the stamp."""
        path = os.path.join(self.out, filename)
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f)
        os.replace(path + ".tmp", path)
        with open(self.path, "w") as f:
            f.write(self.digest)
