# runbox itself, as a container that drives the host's engine through its socket.
#
#   cargo build --release --locked          # the binary this image carries (see below)
#   docker build -t runbox/server .
#   docker run -d --name runbox -p 8080:8080 \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     runbox/server
#
# The binary is built on the host and copied in: where no registry is reachable there is no
# Rust toolchain image to build in, and Debian's own rustc is older than the crate needs. The
# base is the one the sandbox images use (built locally by `runbox images build`); with a
# registry, `--build-arg BASE=debian:bookworm-slim` works the same.
ARG BASE=runbox/base:bookworm
FROM ${BASE}

# ca-certificates only: runbox talks to the engine over the mounted Unix socket.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A non-root user in a `docker` group. The socket's group on the host decides access:
# `--group-add <its gid>` at run time (the line above) gives it to the process.
ARG DOCKER_GID=999
RUN groupadd --system --gid "${DOCKER_GID}" docker \
 && useradd --system --uid 10001 --gid docker --home-dir /app --shell /usr/sbin/nologin runbox

WORKDIR /app
COPY config/ /app/config/
COPY images/ /app/images/
# The browser playground's bundle (`npm ci --prefix web && npm run --prefix web build` first).
COPY web/dist/ /app/web/dist/
COPY target/release/runbox /usr/local/bin/runbox

USER runbox
ENV RUNBOX_LISTEN=0.0.0.0:8080 \
    RUNBOX_CONFIG=/app/config/runbox.toml
EXPOSE 8080
# SIGTERM (docker stop) is a graceful shutdown: running jobs get server.shutdown_grace_secs.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/runbox"]
CMD ["serve"]
