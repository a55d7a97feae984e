"""api_load.py: the daemon's read path under load, while a job trains (make bench).

Starts `resnetd serve` on a free loopback port with a temporary data folder,
registers a small Fashion-MNIST set, submits a job long enough to train for the
whole measurement, then runs CLIENTS threads that each keep one HTTP/1.1
connection and GET /api/jobs/ID/metrics as fast as they can for SECONDS.
Prints one JSON object: requests/s, latency percentiles (ms), errors, and the
job's training images/s (steps finished x batch, from /steps) over the same
window next to its images/s in the 5 s before, without load.

    /usr/bin/python3 bench/api_load.py BUILD_DIR [--clients 32] [--seconds 10]
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="resnetd-load-") as tmp:
        root = os.path.join(tmp, "data")
        os.mkdir(root)
        subprocess.run([os.path.join(a.build, "tools", "fmnist_to_png"),
                        os.path.join(root, "fm"), "--classes", "0,1,7", "--per-class", "100",
                        "--size", "32"], check=True, capture_output=True)
        port = free_port()
        log = open(os.path.join(tmp, "log"), "wb")
        d = subprocess.Popen([os.path.join(a.build, "resnetd"), "serve", "--listen",
                              f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "var"),
                              "--data-root", root, "--log-level", "warn"],
                             stdout=log, stderr=log)
        try:
            for _ in range(200):
                try:
                    call(port, "GET", "/api/health")
                    break
                except OSError:
                    time.sleep(0.05)
            call(port, "POST", "/api/datasets", {"name": "fm", "path": "fm"})
            job = call(port, "POST", "/api/jobs", {
                "name": "load", "dataset": "fm", "weights": "random", "preprocess": "torch",
                "input_size": 32, "batch_size": 16, "augment": {"hflip": True},
                "phases": [{"epochs": 1000, "train": "all", "bn": "train",
                            "optimizer": {"type": "adam", "lr": 0.001}}]})
            jid = job["id"]
            while call(port, "GET", f"/api/jobs/{jid}")["epochs_done"] < 2:
                time.sleep(0.2)

            def steps_done():
                return len(call(port, "GET", f"/api/jobs/{jid}/steps")["steps"])

            # training alone: steps over 5 s, polled once a second (batch 16)
            s0, t0 = steps_done(), time.time()
            while time.time() - t0 < 5:
                time.sleep(1)
            alone = (steps_done() - s0) * 16 / (time.time() - t0)
            lat, errors, stop = [], [0], time.time() + a.seconds
            lock = threading.Lock()

            def client():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                mine = []
                while time.time() < stop:
                    t0 = time.perf_counter()
                    try:
                        conn.request("GET", f"/api/jobs/{jid}/metrics")
                        r = conn.getresponse()
                        body = r.read()
                        if r.status != 200 or not json.loads(body)["epochs"]:
                            raise ValueError(r.status)
                        mine.append(time.perf_counter() - t0)
                    except Exception:
                        with lock:
                            errors[0] += 1
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.close()
                with lock:
                    lat.extend(mine)

            steps_before = steps_done()
            threads = [threading.Thread(target=client) for _ in range(a.clients)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.time() - t0
            under = (steps_done() - steps_before) * 16 / wall
            call(port, "POST", f"/api/jobs/{jid}/cancel")
            lat.sort()
            pct = lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
            print(json.dumps({"clients": a.clients, "seconds": round(wall, 2),
                              "requests": len(lat), "requests_per_s": round(len(lat) / wall, 1),
                              "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                              "errors": errors[0], "train_images_per_s_alone": round(alone, 1),
                              "train_images_per_s_under_load": round(under, 1)}))
        finally:
            d.terminate()
            d.wait(timeout=30)


if __name__ == "__main__":
    main()
