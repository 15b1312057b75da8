# One image for the API workers and the Ray nodes: the actors import the same
# engine code the API does, so both must run the same onsale build.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY api api
COPY persistence persistence
COPY lua lua
COPY bench bench
RUN pip install --no-cache-dir .
ENV ONSALE_HOST=0.0.0.0
EXPOSE 8000
CMD ["onsale", "serve", "--workers", "2"]
