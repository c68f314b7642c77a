# Portcullis in a container. Built with the official Swift image (Swift 6.3.1, the toolchain this project is
# built and tested with), run on Ubuntu 24.04 with only the runtime libraries. `portcullis serve` is PID 1: it
# forks nothing, handles SIGTERM (removing its nftables table) and SIGHUP (reload) itself, and needs no shell.
# The container needs CAP_NET_ADMIN (compose: cap_add: [NET_ADMIN]) and nothing else; privileged is not needed.

FROM swift:6.3.1-noble AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcre2-dev libnftnl-dev libmnl-dev libsqlite3-dev pkg-config \
    libcurl4-openssl-dev libssl-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
# The manifest names the test targets too: SwiftPM wants their folders present even for a product build.
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product portcullis --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/portcullis" /out/portcullis

FROM ubuntu:24.04
# curl brings libcurl and OpenSSL's libraries (webhooks) under whatever names the release gives them (Ubuntu 24.04:
# libcurl4t64, libssl3t64); ca-certificates is the store HTTPS webhooks (and PostgreSQL's verify-full) are verified
# against; libpq5 is PostgreSQL's client library (`[cluster]`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcre2-8-0 libnftnl11 libmnl0 libsqlite3-0 libpq5 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/portcullis /usr/local/bin/portcullis
# The default tree; mount a jail.d/jail.local (and portcullis.local) over it, as compose.yaml does.
COPY config/ /etc/portcullis/
VOLUME ["/var/lib/portcullis"]
EXPOSE 9191
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "health", "--url", "http://127.0.0.1:9191"]
ENTRYPOINT ["/usr/local/bin/portcullis", "serve", "--config", "/etc/portcullis"]
