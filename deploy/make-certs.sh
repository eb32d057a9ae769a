#!/bin/sh
# Make the TLS certificates of a kmdist Dask cluster: a certificate authority for this
# cluster only, and one certificate and key signed by it that the scheduler, the workers
# and the clients (flow runs, `kmdist segment --scheduler`) present to each other. A
# process without them cannot connect (Dask's TLS authenticates both ends).
#
#   deploy/make-certs.sh DIR [NAME ...]
#
# writes into DIR (created, mode 700; existing certificates are kept unless --force):
#   ca.pem          the authority's certificate: every process trusts what it signed
#   tls.crt         the certificate, also valid for HTTPS on the names below
#   tls.key         its private key (mode 600): whoever holds it can run code on the cluster
#   dask-tls.env    `source` it to give a shell Dask's TLS settings for these files
# The authority's own key is deleted once it has signed: to renew or revoke, make new
# ones (run again with --force) and restart every process.
#
# NAMEs (host names or IP addresses) are added to the names the certificate is valid for:
# localhost, 127.0.0.1, dask-scheduler (compose) and kmdist-scheduler (Kubernetes).
# Dask itself does not check names, only the authority; HTTPS clients of the dashboard do.
# Needs the `openssl` command. Valid for KMDIST_CERT_DAYS days (default 825).
set -eu

usage() {
    echo "usage: $0 [--force] DIR [NAME ...]" >&2
    exit 2
}
force=false
if [ "${1:-}" = "--force" ]; then
    force=true
    shift
fi
[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
dir=$1
shift
days=${KMDIST_CERT_DAYS:-825}
command -v openssl >/dev/null || { echo "$0: needs the openssl command" >&2; exit 1; }

mkdir -p "$dir"
chmod 700 "$dir"
dir=$(cd "$dir" && pwd)
if [ -e "$dir/tls.key" ] && [ "$force" = false ]; then
    echo "$0: $dir/tls.key exists; keeping it (--force makes new certificates)" >&2
    exit 0
fi

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

names="DNS:localhost,IP:127.0.0.1,DNS:dask-scheduler,DNS:kmdist-scheduler"
names="$names,DNS:kmdist-scheduler.kmdist.svc,DNS:kmdist-scheduler.kmdist.svc.cluster.local"
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) names="$names,DNS:$name" ;; # a host name (or an IPv6 address: DNS)
        *) names="$names,IP:$name" ;;
    esac
done

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.pem" -days "$days" \
    -subj "/CN=kmdist Dask cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=kmdist-dask" 2>/dev/null
cat >"$work/ext.cnf" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $names
EOF
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -out "$work/tls.crt" -days "$days" -extfile "$work/ext.cnf" 2>/dev/null
openssl verify -CAfile "$work/ca.pem" "$work/tls.crt" >/dev/null

cat >"$work/dask-tls.env" <<EOF
# Dask's TLS settings for the certificates in this folder (deploy/make-certs.sh).
# \`source\` this file in every shell that starts a Dask scheduler or worker, a Prefect
# worker or kmdist: connections without TLS, or without these certificates, are refused.
export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
export DASK_DISTRIBUTED__COMM__TLS__CA_FILE='$dir/ca.pem'
export DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT='$dir/tls.crt'
export DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY='$dir/tls.key'
export DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT='$dir/tls.crt'
export DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY='$dir/tls.key'
export DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT='$dir/tls.crt'
export DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY='$dir/tls.key'
# The dashboards over HTTPS, and dashboard links that say so.
export DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CERT='$dir/tls.crt'
export DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__KEY='$dir/tls.key'
EOF

# Readable by their owner only; the authority's key is not kept.
chmod 644 "$work/ca.pem" "$work/tls.crt" "$work/dask-tls.env"
chmod 600 "$work/tls.key"
for f in ca.pem tls.crt tls.key dask-tls.env; do
    mv -f "$work/$f" "$dir/$f"
done
echo "TLS certificates for Dask in $dir (valid $days days); in each shell: source $dir/dask-tls.env"
