# syntax=docker/dockerfile:1
#
# billing-portal: a two-stage build. The builder compiles a release binary;
# the runtime image holds only that binary and what it links against.
#
#   docker build -t billing-portal .
#   docker run --rm -p 127.0.0.1:8080:8080 -e DATABASE_URL=postgres://... \
#     -e STRIPE_SECRET_KEY=sk_test_... -e STRIPE_WEBHOOK_SECRET=whsec_... \
#     -e AUTH_JWT_SECRET="$(openssl rand -hex 32)" billing-portal
#
# It listens on 0.0.0.0 inside the container, so it refuses to start on the
# development defaults of the two secrets (they are published in the source).
#
# Checked by scripts/validate-deploy (no Docker engine is needed for that).

# ---------------------------------------------------------------- builder ---
FROM rust:1-bookworm AS builder
WORKDIR /src

# The whole context is copied (see .dockerignore) instead of a "dummy src"
# dependency layer: Cargo.toml may gain [[bench]]/[[test]] targets whose files
# must exist for cargo to read the manifest. BuildKit cache mounts keep the
# crates.io downloads and the compiled dependencies between builds instead.
# Config files, migrations and the page assets are embedded in the binary at
# compile time (include_str!, embed_migrations!), so they are needed here only.
COPY . .

# --locked: build exactly what Cargo.lock says, or fail.
# --no-default-features: no local Stripe emulator (the `emulator` feature, on
# for `cargo run`), none of its code or dependencies; the image refuses to
# start without STRIPE_SECRET_KEY whatever APP_ENV says.
# pq-sys is built with its "bundled" feature (a static libpq); that libpq links
# the system OpenSSL, whose headers (libssl-dev) and pkg-config rust:1-bookworm
# already has. The binary is copied out of the cache mount within the same
# RUN, because the mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features --bin billing-portal \
 && install -m 0755 target/release/billing-portal /usr/local/bin/billing-portal

# ---------------------------------------------------------------- runtime ---
# Same Debian release as the builder, so glibc and libssl3 match.
FROM debian:bookworm-slim AS runtime

# ca-certificates: for TLS to Postgres with sslmode=verify-*, and any tool in
#   the image (the Stripe client itself uses rustls with built-in roots).
# libssl3: the bundled libpq is linked against libssl.so.3/libcrypto.so.3
#   (ldd shows them); it is not statically included.
# curl: the HEALTHCHECK below (the binary has no health-check subcommand).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid so volume permissions and runAsNonRoot policies are
# predictable. The binary needs no writable files: config, migrations and
# page assets are compiled in.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app

COPY --from=builder /usr/local/bin/billing-portal /usr/local/bin/billing-portal

# The service defaults to 127.0.0.1, which is unreachable from outside a
# container; listen on every interface here.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    RUST_LOG=info

EXPOSE 8080
USER 10001:10001

# /readyz answers 200 only while the database is reachable (503 otherwise),
# so "healthy" means "can serve". Shell form so a changed $PORT is followed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT:-8080}/readyz" >/dev/null || exit 1

# `serve` applies pending migrations before it listens; `migrate`, `token`
# and later subcommands run as `docker run IMAGE <subcommand>`.
ENTRYPOINT ["billing-portal"]
CMD ["serve"]
