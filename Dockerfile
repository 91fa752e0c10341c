# One image for every role: `docker run stargazer api`, `… coordinator`, `… standalone`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stargazer && strip target/release/stargazer

FROM node:20-bookworm-slim AS frontend
WORKDIR /frontend
COPY frontend/ ./
RUN npm ci --no-audit --no-fund && NEXT_TELEMETRY_DISABLED=1 npm run build

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 stargazer
COPY --from=build /src/target/release/stargazer /usr/local/bin/stargazer
COPY --from=frontend /frontend/out /srv/frontend
USER stargazer
WORKDIR /var/lib/stargazer
ENV STARGAZER_LOG_FORMAT=json \
    STARGAZER_API__FRONTEND_DIR=/srv/frontend
ENTRYPOINT ["stargazer"]
CMD ["standalone"]
