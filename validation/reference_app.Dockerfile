# Reference implementation of the app contract (validation/reference_app.py), for users
# with a registry. Offline machines build the same app onto the local Debian base image
# instead (see docs/validation.md).
#   docker build -f validation/reference_app.Dockerfile -t paper-trading-reference-app:dev validation/
# Offline (no registry): any Debian image with python3, e.g. the locally built test base:
#   docker build --build-arg BASE=paper-trading-base:test -f validation/reference_app.Dockerfile ...
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=3000 \
    PAPER_TRADING_MODE=true \
    ALLOW_REAL_TRADES=false

RUN groupadd --system --gid 1000 app \
 && useradd --system --uid 1000 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY reference_app.py /app/reference_app.py
RUN chmod 0755 /app && chmod 0644 /app/reference_app.py

USER 1000:1000
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python3", "-c", "import os,urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT','3000'), timeout=2); sys.exit(0)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "/app/reference_app.py"]
