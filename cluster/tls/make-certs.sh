#!/usr/bin/env bash
# Make a private CA and the TLS certificates of a dask_rec cluster with openssl.
#
#   cluster/tls/make-certs.sh [--out DIR] [--san LIST] [--days N] [--force]
#
#   --out DIR    where to write (default: cluster/tls/certs beside this script) [DASK_REC_TLS_OUT]
#   --san LIST   extra subjectAltNames for every certificate, comma-separated openssl syntax,
#                e.g. "DNS:scheduler,DNS:dask-rec-scheduler.default.svc" (always included:
#                DNS:localhost, IP:127.0.0.1) [DASK_REC_TLS_SAN]
#   --days N     validity of every certificate (default 365) [DASK_REC_TLS_DAYS]
#   --force      overwrite existing files
#   -h, --help   this help
#
# Writes, all PEM:
#   ca.pem       CA certificate: give it to every process (--tls-ca-file)
#   ca-key.pem   CA private key: keep it off the cluster; only needed to make more certificates
#   scheduler.pem, scheduler-key.pem   the scheduler's certificate and key
#   worker.pem,    worker-key.pem      the workers' certificate and key
#   client.pem,    client-key.pem      the clients' (dask-rec commands') certificate and key
#
# Dask uses mutual TLS: every side presents a certificate signed by the CA and checks the
# other's, so a client without client.pem/client-key.pem cannot even connect. Dask does not
# check host names, but the SANs make the certificates usable by other TLS tools too.
set -euo pipefail

die() { echo "make-certs: error: $*" >&2; exit 2; }

OUT="${DASK_REC_TLS_OUT:-$(cd "$(dirname "$0")" && pwd -P)/certs}"
SAN_EXTRA="${DASK_REC_TLS_SAN:-}"
DAYS="${DASK_REC_TLS_DAYS:-365}"
FORCE=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --out) [ "$#" -ge 2 ] || die "--out needs a value"; OUT="$2"; shift ;;
    --san) [ "$#" -ge 2 ] || die "--san needs a value"; SAN_EXTRA="$2"; shift ;;
    --days) [ "$#" -ge 2 ] || die "--days needs a value"; DAYS="$2"; shift ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$DAYS" in ''|*[!0-9]*) die "--days must be a positive integer; got '$DAYS'" ;; esac
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (apt-get install openssl)"

mkdir -p "$OUT"
if [ "$FORCE" != 1 ] && [ -e "$OUT/ca.pem" ]; then
  die "$OUT/ca.pem exists; pass --force to make new certificates"
fi
umask 077  # private keys readable by their owner only
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

SAN="DNS:localhost,IP:127.0.0.1"
[ -n "$SAN_EXTRA" ] && SAN="$SAN,$SAN_EXTRA"

# EC P-256 keys: small and fast, and accepted by Python's ssl at its default security level.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

newkey "$OUT/ca-key.pem"
openssl req -x509 -new -key "$OUT/ca-key.pem" -sha256 -days "$DAYS" -subj "/CN=dask-rec test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$OUT/ca.pem"

for name in scheduler worker client; do
  newkey "$OUT/$name-key.pem"
  openssl req -new -key "$OUT/$name-key.pem" -subj "/CN=dask-rec-$name" -out "$WORK/$name.csr"
  cat >"$WORK/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$SAN
EOF
  # every Dask process is both a TLS server and a TLS client: serverAuth and clientAuth
  openssl x509 -req -in "$WORK/$name.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca-key.pem" -CAcreateserial \
    -CAserial "$WORK/ca.srl" -days "$DAYS" -sha256 -extfile "$WORK/$name.ext" -out "$OUT/$name.pem" 2>/dev/null
done
chmod 644 "$OUT"/ca.pem "$OUT"/scheduler.pem "$OUT"/worker.pem "$OUT"/client.pem
chmod 600 "$OUT"/*-key.pem

echo "make-certs: wrote ca.pem, {scheduler,worker,client}.pem and their -key.pem files to $OUT (SAN: $SAN)" >&2
echo "$OUT"
