# Shared by the scripts: installing what they need, starting throwaway servers.

# Installs the Debian packages the tests and the demo need, when missing.
ensure_packages() {
  local need=()
  command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  for extra in "$@"; do command -v "$extra" >/dev/null 2>&1 || need+=("$extra"); done
  if ((${#need[@]})); then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing Debian packages: ${need[*]}" >&2
    # A proxy serving a stale InRelease fails an index now and then: once more past it.
    $sudo apt-get update -qq ||
      { sleep 15; $sudo apt-get update -qq -o Acquire::http::No-Cache=true -o Acquire::By-Hash=force; }
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

# start_postgres DIR [PORT]: initdb and start PostgreSQL in DIR (on PORT, else a free one); sets PG_PORT.
start_postgres() {
  local dir=$1 bindir run=()
  bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    run=(runuser -u postgres --)
  fi
  PG_PORT=${2:-$(free_port)}
  "${run[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir -c fsync=off" start >/dev/null
}

stop_postgres() {
  local dir=$1 bindir run=()
  bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
  "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
}

# start_victoria DIR: starts VictoriaMetrics in DIR; sets VM_PORT and VM_PID.
start_victoria() {
  local dir=$1
  VM_PORT=$(free_port)
  victoria-metrics -storageDataPath="$dir/vm" -httpListenAddr="127.0.0.1:$VM_PORT" \
    -retentionPeriod=100y -search.latencyOffset=0s >"$dir/vm.log" 2>&1 &
  VM_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$VM_PORT/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "VictoriaMetrics did not start; see $dir/vm.log" >&2
  return 1
}
