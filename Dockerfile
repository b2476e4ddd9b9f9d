# The image the manifests in deploy/kubernetes run. Build it from the repository root:
#   docker build -t registry.example.com/keymig:0.1.0 .
# (push it to your registry under the name the manifests use, or change both.)
# Debian 12, as scripts/install-deps: the build stage has the build packages, the image
# only the shared libraries keymig links (tests/metrics/check_manifests.py compares this
# list with the binary's).

FROM debian:12 AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      cmake g++ make pkg-config \
      libboost-dev libssl-dev libpqxx-dev libpq-dev libtbb-dev libyaml-cpp-dev \
      prometheus-cpp-dev libcurl4-openssl-dev libcli11-dev nlohmann-json3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No tests in the image: they need a PostgreSQL server, Catch2 and Python's cryptography.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build build -j"$(nproc)" --target keymig \
 && strip build/keymig \
 && build/keymig --version

FROM debian:12-slim
ARG DEBIAN_FRONTEND=noninteractive
# ca-certificates: an https Pushgateway. The database's CA is mounted (PGSSLROOTCERT).
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libpq5 libpqxx-6.4 libtbb12 libyaml-cpp0.7 libcurl4 libprometheus-cpp-core1.0 \
      libssl3 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/keymig /usr/local/bin/keymig
# The uid/gid the manifests run as (runAsUser/runAsGroup 65532). keymig writes nothing
# but what it is told to (a metrics textfile, a backup), so the root filesystem can be
# read-only; HOME is /tmp, the one writable place the pods mount.
USER 65532:65532
ENV HOME=/tmp
WORKDIR /tmp
LABEL org.opencontainers.image.title="keymig" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Re-encrypts Fernet tokens in PostgreSQL"
ENTRYPOINT ["keymig"]
CMD ["--help"]
