# One image for every service: `nango serve <server|orchestrator|jobs|runner|persist>`, `nango migrate`.
#   docker build -t nango:0.1.0 .
#   docker run --rm nango:0.1.0 --version

# Build wheels (ours and every dependency) in a throwaway stage, so the image carries no build tools.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY gen ./gen
COPY nango ./nango
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NANGO_DATA_DIR=/var/lib/nango
RUN groupadd --system --gid 10001 nango \
 && useradd --system --uid 10001 --gid nango --home-dir /var/lib/nango --no-create-home --shell /usr/sbin/nologin nango \
 && mkdir -p /var/lib/nango \
 && chown nango:nango /var/lib/nango
# the wheels are mounted, not copied, so no layer keeps them (BuildKit, the default since Docker 23)
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels pip install --no-index --find-links=/wheels /wheels/nango-*.whl
USER 10001:10001
WORKDIR /var/lib/nango
# REST 3003, server gRPC 3004, jobs 3005, runner 3006, persist 3007, orchestrator 3008, Connect UI 3009
EXPOSE 3003 3004 3005 3006 3007 3008 3009
ENTRYPOINT ["nango"]
CMD ["serve", "server"]
