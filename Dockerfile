# resnetd in a container: README.md, "Container".
#   make web && docker build -t resnetd .   (or: podman build --format docker -t resnetd .)
#   docker run -d --name resnetd -p 8080:8080 -v resnetd-data:/var/lib/resnetd \
#              -e RESNETD_TOKEN="$(cat token)" resnetd
#
# Stage 1 compiles build/resnetd on Debian bookworm with the -dev packages of
# tools/debian-packages.txt (the test-only ones left out). Stage 2 is
# bookworm-slim with only the runtime libraries, the binary, the dashboard's files
# and the default configuration: no compiler, no headers.

FROM debian:bookworm AS build
# the package layer first, so that changing the sources does not download it again
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libopenblas-openmp-dev libjansson-dev \
      libmicrohttpd-dev libpng-dev libjpeg62-turbo-dev libsqlite3-dev libarchive-dev \
      libcurl4-openssl-dev libssl-dev libhdf5-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY core/ core/
COPY server/ server/
RUN make -j"$(nproc)" build/resnetd

FROM debian:bookworm-slim
# the runtime packages of the -dev ones above (libcurl4 and libssl3 for named
# weights' downloads and hashes; libhdf5-103-1 for Keras .h5 weights, libhdf5-dev's
# library on bookworm; libopenblas0-openmp puts
# libopenblas.so.0 in /usr/lib/x86_64-linux-gnu/openblas-openmp, the binary's
# rpath), and curl for the HEALTHCHECK
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libopenblas0-openmp libgomp1 libjansson4 libmicrohttpd12 libpng16-16 \
      libjpeg62-turbo zlib1g libsqlite3-0 libarchive13 libcurl4 libssl3 libhdf5-103-1 \
      curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 resnetd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/resnetd --no-create-home \
      --shell /usr/sbin/nologin resnetd \
 && install -d -o resnetd -g resnetd -m 0755 /var/lib/resnetd /var/lib/resnetd/weights \
      /var/lib/resnetd/datasets /var/lib/resnetd/jobs
COPY --from=build /src/build/resnetd /usr/bin/resnetd
# the dashboard: its files and web/vendor/ (uPlot, which `make web` installs from
# npm as web/package-lock.json pins it; .dockerignore leaves node_modules out)
COPY web/ /usr/share/resnetd/web/
COPY config/resnetd.conf /etc/resnetd/resnetd.conf
# the manifest of named weights: weights_manifest's default finds it here
COPY config/weights.json /etc/resnetd/weights.json
# every library resolves, the binary runs and finds the weights manifest (this
# fails the build otherwise)
RUN ! ldd /usr/bin/resnetd | grep 'not found' && /usr/bin/resnetd version \
 && /usr/bin/resnetd weights list >/dev/null \
 && { test -f /usr/share/resnetd/web/vendor/uPlot.iife.min.js \
      || { echo "web/vendor/ is missing: run 'make web' before building the image"; exit 1; }; }

# Configuration: RESNETD_* variables (docs/configuration.md), e.g. -e RESNETD_TOKEN,
# -e RESNETD_THREADS. They override /etc/resnetd/resnetd.conf (all defaults,
# commented out; mount your own over it), flags after the image name override both.
# 0.0.0.0 is not loopback: the daemon refuses to start without RESNETD_TOKEN
# unless RESNETD_INSECURE=1.
ENV RESNETD_CONFIG=/etc/resnetd/resnetd.conf \
    RESNETD_LISTEN=0.0.0.0:8080 \
    RESNETD_DATA_DIR=/var/lib/resnetd \
    RESNETD_DATA_ROOT=/var/lib/resnetd/datasets
# resnetd.db, weights/, datasets/ (uploads; server-side folders mounted below it),
# jobs/ID/ (checkpoints, exported weights)
VOLUME ["/var/lib/resnetd"]
WORKDIR /var/lib/resnetd
USER 10001:10001
EXPOSE 8080
# reads need no token; the port follows RESNETD_LISTEN
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${RESNETD_LISTEN##*:}/api/health" || exit 1
# the daemon is PID 1: SIGTERM finishes the running batch, writes the job's
# checkpoint and exits 0 (give it time: docker stop -t 60)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/resnetd", "serve"]
