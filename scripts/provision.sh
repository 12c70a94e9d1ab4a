#!/usr/bin/env bash
# Provisions the real services the test-suite and benchmarks run against, idempotently:
#   - Apache Kafka's broker jars from Maven Central, cached under $HAWSER_CACHE (default ~/.cache/hawser);
#   - PostgreSQL's server binaries, Mosquitto (broker and clients: the MQTT tests' clients and the
#     benchmarks' reference broker), libcoap's clients (libcoap3-bin) and kcat from Debian's packages,
#     installed only when missing;
#   - with `build-deps` only the build tools DTLSSocket's sdist needs (autoconf, automake, libtool).
# Quiet when everything is already there; scripts/services.py starts and stops the servers themselves.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# One place names the Kafka version: the pom (scripts/_service_base.py reads it from there too).
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka-pom.xml")"
cache="${HAWSER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hawser}"
kafka_home="$cache/kafka-$KAFKA_VERSION"
marker="$kafka_home/.complete"

say() { printf 'provision: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root to run: $*"
        return 1
    fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        apt_updated=1
    fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Build tools for the one dependency built from source -------------------------------------------------
# DTLSSocket (tinydtls, CoAP over DTLS) ships only as an sdist whose build runs autoreconf. The Makefile
# calls `provision.sh build-deps` before installing Python packages, so `make run` gets these too.
build_missing=()
for tool in autoreconf:autoconf automake:automake libtoolize:libtool make:make cc:gcc; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || build_missing+=("${tool##*:}")
done
if [ "${#build_missing[@]}" -gt 0 ]; then
    apt_install "${build_missing[@]}"
fi
if [ "${1:-}" = "build-deps" ]; then
    exit 0
fi

# --- Java and Maven (normally already on the machine) -------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
    apt_install default-jre-headless
fi
if ! command -v mvn >/dev/null 2>&1; then
    apt_install maven
fi

# --- Kafka jars -----------------------------------------------------------------------------------------
if [ ! -f "$marker" ]; then
    say "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION into $kafka_home/libs"
    mkdir -p "$kafka_home"
    staging="$kafka_home/libs.partial"
    rm -rf "$staging"
    mvn -q -B -Dstyle.color=never -f "$here/kafka-pom.xml" \
        -Dmaven.repo.local="$cache/m2" \
        -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies \
        -DincludeScope=runtime \
        -DoutputDirectory="$staging"
    jars=$(find "$staging" -maxdepth 1 -name '*.jar' | wc -l)
    if [ ! -f "$staging/kafka_2.13-$KAFKA_VERSION.jar" ] || [ "$jars" -lt 20 ]; then
        say "Kafka classpath looks incomplete ($jars jars in $staging)"
        exit 1
    fi
    rm -rf "$kafka_home/libs"
    mv "$staging" "$kafka_home/libs"
    echo "$jars" >"$marker"
    say "Kafka $KAFKA_VERSION ready: $jars jars"
fi

# --- PostgreSQL server ----------------------------------------------------------------------------------
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    apt_install postgresql
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        say "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
        exit 1
    fi
fi

# --- Mosquitto: mosquitto_pub/mosquitto_sub for the MQTT tests, the broker as the benchmarks' reference ----
mqtt_missing=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    mqtt_missing+=(mosquitto)
fi
if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
    mqtt_missing+=(mosquitto-clients)
fi
if [ "${#mqtt_missing[@]}" -gt 0 ]; then
    apt_install "${mqtt_missing[@]}"
    # Only the binaries are wanted: a system broker started by the package would hold port 1883,
    # the default of Hawser's own MQTT endpoint. Tests and benches start their own on free ports.
    if [[ " ${mqtt_missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1 \
            && systemctl is-active --quiet mosquitto 2>/dev/null; then
        say "stopping and disabling the mosquitto system service the package started"
        as_root systemctl disable --now --quiet mosquitto || say "could not stop the mosquitto service"
    fi
fi

# --- libcoap's command-line clients (coap-client-notls / coap-client-openssl) for the CoAP tests ----------
if ! command -v coap-client-notls >/dev/null 2>&1 || ! command -v coap-client-openssl >/dev/null 2>&1; then
    apt_install libcoap3-bin
fi

# --- kcat (README examples and manual checks read topics with it) --------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        apt_updated=1
    fi
    if apt-cache show kcat >/dev/null 2>&1; then
        apt_install kcat || say "could not install kcat; skipping it (only the README's examples use it)"
    else
        say "kcat is not in Debian's package index here; skipping it (only the README's examples use it)"
    fi
fi
