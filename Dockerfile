# xapsproxy in a container image:
#
#   docker build --build-arg VERSION="$(git describe --always --dirty)" -t xapsproxy .
#   docker run -d --name xapsproxy -p 993:993 -p 143:143 \
#     -v xapsproxy-data:/var/lib/xapsproxy -v /etc/xapsproxy:/etc/xapsproxy:ro xapsproxy
#
# (podman build / podman run the same.) The image holds one static binary,
# the CA certificates it needs to reach APNs (api.push.apple.com) and an
# empty store directory: no shell, no package manager. README.md, "In a
# container", says what the configuration must contain; a complete example
# with Dovecot beside it is contrib/docker/compose.yaml.

# The build stage. The final stage takes four things from it, and nothing
# else: /out/xapsproxy, /out/var/lib/xapsproxy, /out/tmp and the CA bundle.
FROM golang:1.26-trixie AS build
# setcap: see "Ports below 1024" at the final stage.
RUN apt-get update -qq \
	&& apt-get install -y -qq --no-install-recommends libcap2-bin ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The context has no .git (.dockerignore), so Go cannot record the revision:
# `xapsproxy version` prints VERSION, or "(devel)" without it.
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.buildVersion=${VERSION}" \
		-o /out/xapsproxy ./cmd/xapsproxy \
	&& setcap cap_net_bind_service=+ep /out/xapsproxy \
	&& mkdir -p /out/var/lib/xapsproxy /out/tmp

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Without --chown: changing the owner clears the file capability (below).
# BuildKit (Docker's builder since 23.0) and buildah keep it in COPY
# --from; Docker's legacy builder drops it, and serve then says that 993
# needs CAP_NET_BIND_SERVICE.
COPY --from=build /out/xapsproxy /xapsproxy
# The store (store.path = "/var/lib/xapsproxy/xapsproxy.db"; watch.auth =
# "captured" puts its secret.key beside it). COPY makes the directory 0755
# whatever its mode in the build stage; xapsproxy creates its files 0600.
# Docker fills a new named volume from here, owner included; a bind-mounted
# host directory must be writable by uid 65532 itself (chown 65532 DIR).
COPY --from=build --chown=65532:65532 /out/var/lib/xapsproxy /var/lib/xapsproxy
VOLUME ["/var/lib/xapsproxy"]
# SQLite puts a large sort or statement journal in a temporary file, in
# /tmp: scratch has none, so the image brings one of the user's own (with
# --read-only, mount a tmpfs there).
COPY --from=build --chown=65532:65532 /out/tmp /tmp
# Not root. Files the configuration names (certificates, key, master
# password, events secret) must be readable by this uid (or gid), and the
# secret files not by others: xapsproxy refuses those open to others.
USER 65532:65532
# Ports below 1024 as non-root: the binary carries the file capability
# cap_net_bind_service (setcap above), which Docker's and podman's default
# capability sets let it keep, so it binds 993 and 143 as uid 65532 and
# holds no other privilege. Run with --cap-drop ALL, add it back
# (--cap-add NET_BIND_SERVICE), or the kernel refuses to start the binary
# ("exec /xapsproxy: operation not permitted"). With --security-opt no-new-privileges the
# file capability is ignored: then listen on ports above 1023 and publish
# them as 993 and 143 (-p 993:1993), or set the container's sysctl
# net.ipv4.ip_unprivileged_port_start=0 (Docker's default since 20.10;
# podman's is not).
# 9143: the admin listener (/healthz, /metrics; admin.listen = ":9143",
# publish it on loopback only). 9144: Dovecot's events (events.listen =
# ":9144"), for a Dovecot on the same container network; do not publish it.
EXPOSE 993 143 9143 9144
# No HEALTHCHECK: the image has no curl or shell to run one with, and the
# binary has no probe command. Point the orchestrator's HTTP check at
# http://CONTAINER:9143/healthz instead.
ENTRYPOINT ["/xapsproxy"]
CMD ["serve", "-config", "/etc/xapsproxy/config.toml"]
