# syntax=docker/dockerfile:1
# earlyexit as a model server: gRPC (native API, Open Inference Protocol, grpc.health.v1) on 8081,
# HTTP (Open Inference Protocol REST, /metrics) on 8080.
#
#   docker build -t earlyexit .                                   # the server; mount a model at /mnt/models
#   docker run -p 8080:8080 -p 8081:8081 -v "$PWD/runs/quickstart:/mnt/models:ro" \
#       -e EARLYEXIT_TOKEN=change-me earlyexit
#   docker build --target baked --build-arg MODEL_DIR=runs/quickstart -t earlyexit-quickstart .
#
# See docs/serving.md ("Containers and Kubernetes").

# --- build: the release binary, CPU only (the default features) ---
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p earlyexit-cli --bin earlyexit \
    && cp target/release/earlyexit /usr/local/bin/earlyexit

# --- runtime: the binary on a slim base, as an unprivileged user ---
FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home earlyexit
COPY --from=build /usr/local/bin/earlyexit /usr/local/bin/earlyexit
USER 10001
EXPOSE 8080 8081
# A run folder (config.toml, model.json, weights.safetensors, policy.json) or a bare model folder
# with --model and --policy; KServe's storage initializer puts models at /mnt/models.
# Listening beyond loopback needs a token (EARLYEXIT_TOKEN), TLS, or --insecure behind a mesh
# that authenticates; without one the server refuses to start and says so.
ENTRYPOINT ["earlyexit"]
CMD ["serve", "--run", "/mnt/models", "--listen", "0.0.0.0:8081", "--http-listen", "0.0.0.0:8080"]

# --- baked: the same image with a model folder inside (MODEL_DIR, relative to the build context) ---
FROM runtime AS baked
ARG MODEL_DIR
COPY --chown=10001 ${MODEL_DIR} /mnt/models
