#!/usr/bin/env bash
# Local single-node Apache Kafka broker (KRaft, combined broker+controller) for
# leadscore tests and benchmarks. Jars come from Maven Central via ./pom.xml.
# Everything listens on 127.0.0.1 only. See README.md in this directory.
#
#   kafka.sh install [HOME]              resolve jars into HOME/libs (cached); prints libs dir
#   kafka.sh start --dir D [--port P] [--controller-port C] [--prop k=v]... [--fresh] [--timeout S]
#                  [--watch-pid PID]   (kill the broker and remove D when PID exits)
#   kafka.sh stop --dir D                SIGTERM, wait, SIGKILL if needed
#   kafka.sh kill --dir D                SIGKILL (crash test)
#   kafka.sh restart --dir D [--timeout S]  start again, same ports + data, no reformat
#   kafka.sh status --dir D              exit 0 if the broker process is alive
#   kafka.sh bootstrap --dir D           print 127.0.0.1:P
#   kafka.sh topic create NAME (--dir D | --bootstrap-server B) [--partitions N] [--compact] [--config k=v]...
#   kafka.sh topic list|describe|delete [NAME] (--dir D | --bootstrap-server B)
#   kafka.sh run CLASS [ARGS...]         run any main class with the Kafka classpath
#   kafka.sh classpath                   print the java classpath ("LIBS/*")
#
# Environment:
#   LOCAL_KAFKA_HOME       install dir (default ~/.cache/leadscore/kafka-<version>)
#   LOCAL_KAFKA_HEAP       broker heap opts (default "-Xms256m -Xmx1g")
#   LOCAL_KAFKA_JVM_OPTS   extra broker JVM opts (default "-XX:+UseSerialGC", see README)
#   LOCAL_KAFKA_TOOL_JVM_OPTS  JVM opts for `run`/`topic` (default "-Xmx512m -XX:+UseSerialGC
#                              -XX:TieredStopAtLevel=1": quick CLI start; set "" for perf tools)
#   LOCAL_KAFKA_LOG_LEVEL  broker root log level (default INFO)
#   LOCAL_KAFKA_MVN_ARGS         extra args for mvn (e.g. "-o")
#   JAVA / MVN                 java / mvn executables
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$SCRIPT_DIR/pom.xml"
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)
[[ -n "$KAFKA_VERSION" ]] || { echo "kafka.sh: cannot read kafka.version from $POM" >&2; exit 2; }
KAFKA_HOME_DIR=${LOCAL_KAFKA_HOME:-$HOME/.cache/leadscore/kafka-$KAFKA_VERSION}
MARKER=.leadscore-installed

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }
now_ms() { date +%s%3N; }

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# ---------------------------------------------------------------- install
do_install() {
  local home=${1:-$KAFKA_HOME_DIR}
  home=$(realpath -m "$home")
  local want; want=$(pom_hash)
  if [[ -f "$home/$MARKER" && "$(cat "$home/$MARKER")" == "$want" ]]; then
    echo "$home/libs"; return 0
  fi
  mkdir -p "$(dirname "$home")"
  # Serialise concurrent installs of the same home.
  exec 9>"$home.lock"
  flock 9
  if [[ -f "$home/$MARKER" && "$(cat "$home/$MARKER")" == "$want" ]]; then
    exec 9>&-; echo "$home/libs"; return 0
  fi
  # Leftovers of interrupted installs (safe to remove: we hold the lock).
  rm -rf "$home".tmp.* "$home".old.*
  local t0; t0=$(now_ms)
  local tmp; tmp=$(mktemp -d "$home.tmp.XXXXXX")
  log "installing Kafka $KAFKA_VERSION jars into $home (via $MVN) ..."
  # shellcheck disable=SC2086
  # (sed strips the bare colour-reset codes mvn 3.8 -q prints even in batch mode)
  if ! "$MVN" -q -B -Dstyle.color=never ${LOCAL_KAFKA_MVN_ARGS:-} -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp/libs" 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2; then
    rm -rf "$tmp"; exec 9>&-; die "mvn dependency:copy-dependencies failed"
  fi
  ls "$tmp/libs"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; exec 9>&-; die "no kafka jar resolved"; }
  echo "$want" > "$tmp/$MARKER"
  if [[ -e "$home" ]]; then            # stale/partial/outdated install: swap it out
    local old; old=$(mktemp -d "$home.old.XXXXXX")
    mv -T "$home" "$old/x" && rm -rf "$old"
  fi
  mv -T "$tmp" "$home"
  exec 9>&-
  log "installed in $(( $(now_ms) - t0 )) ms ($(du -sh "$home" | cut -f1))"
  echo "$home/libs"
}

libs_dir() { do_install "$KAFKA_HOME_DIR"; }

# Log config for CLI tools: warnings only, on stderr.
tools_log_cfg() {
  local f="$KAFKA_HOME_DIR/tools-log4j2.properties"
  if [[ ! -f "$f" ]]; then
    cat > "$f.$$" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
    mv -f "$f.$$" "$f"
  fi
  echo "$f"
}

run_class() {
  local libs; libs=$(libs_dir)
  local cfg; cfg=$(tools_log_cfg)
  # shellcheck disable=SC2086
  "$JAVA" ${LOCAL_KAFKA_TOOL_JVM_OPTS--Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1} -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$cfg" -cp "$libs/*" "$@"
}

# ---------------------------------------------------------------- ports / pids
pick_ports() {   # prints N distinct free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid file is trusted only if the process is alive (not a zombie) and is
# our broker for this data dir.
broker_pid() {
  local d=$1 pid
  [[ -f "$d/broker.pid" ]] || return 1
  pid=$(cat "$d/broker.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  local state; state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$state" != Z && "$state" != X ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $d/server.properties" || return 1
  echo "$pid"
}

wait_gone() {   # pid, timeout seconds
  local pid=$1 deadline=$(( $(date +%s) + $2 ))
  while (( $(date +%s) < deadline )); do
    local st; st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
    [[ "$st" == Z || "$st" == X ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- broker
write_config() {   # dir port cport extra-props...
  local d=$1 p=$2 c=$3; shift 3
  cat > "$d/server.properties" <<EOF
# Generated by deploy/local-kafka/kafka.sh -- single-node KRaft test broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$c
listeners=PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$c
advertised.listeners=PLAINTEXT://127.0.0.1:$p
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$d/logs

# Single replica everywhere (internal topics default to RF 3).
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the defaults (50) -> first group/txn use is fast.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4

# Test friendliness.
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
# After a SIGKILL the restarted broker cannot register until the controller has
# expired the old session (default 9 s) -> restart-after-kill took ~13 s.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
# Compaction: check often; tests set segment.bytes / min.cleanable.dirty.ratio per topic.
log.cleaner.backoff.ms=1000
log.cleaner.dedupe.buffer.size=33554432
log.retention.check.interval.ms=30000

# 2-core box.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF
  if (( $# )); then
    echo "" >> "$d/server.properties"
    echo "# --prop overrides (last one wins)" >> "$d/server.properties"
    local kv
    for kv in "$@"; do
      [[ "$kv" == *=* ]] || die "--prop expects key=value, got '$kv'"
      echo "$kv" >> "$d/server.properties"
    done
  fi
  cat > "$d/log4j2.properties" <<EOF
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${LOCAL_KAFKA_LOG_LEVEL:-INFO}
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
  echo "127.0.0.1:$p" > "$d/bootstrap"
  echo "$p $c" > "$d/ports"
}

launch_and_wait() {   # dir timeout
  local d=$1 timeout=$2
  local libs; libs=$(libs_dir)
  local p c; read -r p c < "$d/ports"
  local port
  for port in "$p" "$c"; do
    port_open "$port" && die "port 127.0.0.1:$port is already in use"
  done
  local t0; t0=$(now_ms)
  local -a jvm
  # shellcheck disable=SC2206
  jvm=(${LOCAL_KAFKA_HEAP:--Xms256m -Xmx1g} ${LOCAL_KAFKA_JVM_OPTS:--XX:+UseSerialGC}
       -Djava.awt.headless=true -Dlog4j2.configurationFile="$d/log4j2.properties")
  {
    echo "===== $(date -Is) kafka.sh launching broker (Kafka $KAFKA_VERSION) ====="
  } >> "$d/broker.log"
  rm -f "$d/broker.pid"
  # setsid: the broker survives the caller's process group / terminal; the inner
  # bash writes its own pid and then execs java, so broker.pid is the JVM's pid.
  setsid -f bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$d/broker.pid" \
    "$JAVA" "${jvm[@]}" -cp "$libs/*" kafka.Kafka "$d/server.properties" \
    </dev/null >>"$d/broker.log" 2>&1
  local deadline=$(( $(date +%s) + timeout )) pid=""
  while [[ ! -s "$d/broker.pid" ]] && (( $(date +%s) < deadline )); do sleep 0.05; done
  # Client config for the readiness probe: fail fast instead of retrying 60 s.
  cat > "$d/probe-client.properties" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
  while :; do
    if ! pid=$(broker_pid "$d"); then
      log "broker exited during startup; tail of $d/broker.log:"
      tail -n 40 "$d/broker.log" >&2
      return 1
    fi
    if port_open "$p"; then
      # A real metadata request through the Java admin client.
      if run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$p" \
           --command-config "$d/probe-client.properties" --list >/dev/null 2>"$d/probe.err"; then
        break
      fi
    fi
    if (( $(date +%s) >= deadline )); then
      log "broker not ready after ${timeout}s; tail of $d/broker.log:"
      tail -n 40 "$d/broker.log" >&2
      [[ -s "$d/probe.err" ]] && { log "last probe error:"; tail -n 5 "$d/probe.err" >&2; }
      return 1
    fi
    sleep 0.2
  done
  rm -f "$d/probe.err"
  log "broker pid $pid ready in $(( $(now_ms) - t0 )) ms (log: $d/broker.log)"
  echo "127.0.0.1:$p"
}

parse_dir_opts() {   # sets DIR PORT CPORT PROPS FRESH TIMEOUT WATCH
  DIR="" PORT="" CPORT="" PROPS=() FRESH=0 TIMEOUT=60 WATCH=""
  while (( $# )); do
    case $1 in
      --dir) DIR=$2; shift 2;;
      --dir=*) DIR=${1#*=}; shift;;
      --port) PORT=$2; shift 2;;
      --port=*) PORT=${1#*=}; shift;;
      --controller-port) CPORT=$2; shift 2;;
      --controller-port=*) CPORT=${1#*=}; shift;;
      --prop) PROPS+=("$2"); shift 2;;
      --prop=*) PROPS+=("${1#*=}"); shift;;
      --fresh) FRESH=1; shift;;
      --watch-pid) WATCH=$2; shift 2;;
      --timeout) TIMEOUT=$2; shift 2;;
      --timeout=*) TIMEOUT=${1#*=}; shift;;
      *) die "unknown option '$1'";;
    esac
  done
  [[ -n "$DIR" ]] || die "--dir DATADIR is required"
  DIR=$(realpath -m "$DIR")
}

cmd_start() {
  parse_dir_opts "$@"
  mkdir -p "$DIR"
  if broker_pid "$DIR" >/dev/null; then die "broker already running in $DIR (pid $(cat "$DIR/broker.pid"))"; fi
  if [[ -f "$DIR/server.properties" || -d "$DIR/logs" ]]; then
    if (( FRESH )); then
      rm -rf "$DIR/logs" "$DIR/server.properties" "$DIR/log4j2.properties" "$DIR/bootstrap" \
             "$DIR/ports" "$DIR/broker.pid" "$DIR/broker.log" "$DIR/probe-client.properties"
    else
      die "$DIR already holds a broker; use 'restart --dir $DIR' to reuse it or 'start --fresh' to wipe it"
    fi
  fi
  local libs; libs=$(libs_dir)
  if [[ -z "$PORT" || -z "$CPORT" ]]; then
    local a b; read -r a b < <(pick_ports 2)
    if [[ -z "$PORT" ]]; then PORT=$a; [[ "$PORT" == "$CPORT" ]] && PORT=$b; fi
    if [[ -z "$CPORT" ]]; then CPORT=$b; [[ "$CPORT" == "$PORT" ]] && CPORT=$a; fi
  fi
  [[ "$PORT" != "$CPORT" ]] || die "--port and --controller-port must differ"
  local port
  for port in "$PORT" "$CPORT"; do
    port_open "$port" && die "port 127.0.0.1:$port is already in use"
  done
  write_config "$DIR" "$PORT" "$CPORT" "${PROPS[@]}"
  local cid
  # Same format as `StorageTool random-uuid` (base64url of 16 random bytes, not
  # starting with '-'), without paying for another JVM start.
  cid=$(python3 -c 'import base64,os
while True:
    u=base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not u.startswith("-"): print(u); break')
  run_class kafka.tools.StorageTool format --ignore-formatted -t "$cid" \
      -c "$DIR/server.properties" >"$DIR/format.log" 2>&1 \
    || { cat "$DIR/format.log" >&2; die "storage format failed"; }
  echo "$cid" > "$DIR/cluster.id"
  launch_and_wait "$DIR" "$TIMEOUT"
  if [[ -n "$WATCH" ]]; then
    # Tests: the broker (and its data) go when the test process goes, however it ends.
    setsid "$SCRIPT_DIR/kafka.sh" _watch "$DIR" "$WATCH" </dev/null >/dev/null 2>&1 &
  fi
}

cmd_watch() {   # dir pid: wait for pid to exit, then kill the broker and remove dir
  local d=$1 w=$2 pid
  while kill -0 "$w" 2>/dev/null; do sleep 1; done
  if pid=$(broker_pid "$d"); then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$d"
}

cmd_restart() {
  parse_dir_opts "$@"
  [[ -f "$DIR/server.properties" && -f "$DIR/ports" ]] || die "$DIR has no broker config; use start"
  [[ ${#PROPS[@]} -eq 0 && -z "$PORT" && -z "$CPORT" ]] || die "restart reuses the existing config; --port/--prop not allowed"
  if broker_pid "$DIR" >/dev/null; then do_stop "$DIR" 60; fi
  launch_and_wait "$DIR" "$TIMEOUT"
}

do_stop() {   # dir timeout
  local d=$1 t=$2 pid
  if ! pid=$(broker_pid "$d"); then log "no running broker in $d"; rm -f "$d/broker.pid"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$t"; then
    log "broker pid $pid did not exit within ${t}s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid still alive after SIGKILL"
  fi
  rm -f "$d/broker.pid"
  log "broker pid $pid stopped"
}

cmd_stop() { parse_dir_opts "$@"; do_stop "$DIR" "$TIMEOUT"; }

cmd_kill() {
  parse_dir_opts "$@"
  local pid
  if ! pid=$(broker_pid "$DIR"); then log "no running broker in $DIR"; return 0; fi
  kill -KILL "$pid"
  wait_gone "$pid" 10 || die "pid $pid still alive after SIGKILL"
  rm -f "$DIR/broker.pid"
  log "broker pid $pid killed (SIGKILL)"
}

cmd_status() {
  parse_dir_opts "$@"
  local pid
  if pid=$(broker_pid "$DIR"); then echo "running pid=$pid bootstrap=$(cat "$DIR/bootstrap")"; else echo "stopped"; return 1; fi
}

cmd_topic() {
  local sub=${1:-}; shift || true
  local name="" bs="" dir="" parts=1 compact=0
  local -a cfgs=()
  while (( $# )); do
    case $1 in
      --dir) dir=$2; shift 2;;
      --bootstrap-server) bs=$2; shift 2;;
      --partitions) parts=$2; shift 2;;
      --compact) compact=1; shift;;
      --config) cfgs+=(--config "$2"); shift 2;;
      -*) die "unknown topic option '$1'";;
      *) [[ -z "$name" ]] || die "unexpected argument '$1'"; name=$1; shift;;
    esac
  done
  if [[ -z "$bs" ]]; then
    [[ -n "$dir" ]] || die "topic: need --dir DATADIR or --bootstrap-server HOST:PORT"
    bs=$(cat "$(realpath -m "$dir")/bootstrap")
  fi
  local -a tc=(org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs")
  case $sub in
    create)
      [[ -n "$name" ]] || die "topic create NAME"
      (( compact )) && cfgs+=(--config cleanup.policy=compact)
      run_class "${tc[@]}" --create --topic "$name" --partitions "$parts" \
        --replication-factor 1 "${cfgs[@]}" >&2
      echo "$name";;
    delete) [[ -n "$name" ]] || die "topic delete NAME"; run_class "${tc[@]}" --delete --topic "$name";;
    describe) run_class "${tc[@]}" --describe ${name:+--topic "$name"};;
    list) run_class "${tc[@]}" --list;;
    *) die "topic create|delete|describe|list";;
  esac
}

usage() { awk 'NR>1 && !/^#/{exit} NR>1{sub(/^# ?/,""); print}' "$0"; }

main() {
  local cmd=${1:-}; shift || true
  case $cmd in
    install) do_install "${1:-$KAFKA_HOME_DIR}";;
    start) cmd_start "$@";;
    _watch) cmd_watch "$@";;
    stop) cmd_stop "$@";;
    kill) cmd_kill "$@";;
    restart) cmd_restart "$@";;
    status) cmd_status "$@";;
    bootstrap) parse_dir_opts "$@"; cat "$DIR/bootstrap";;
    topic) cmd_topic "$@";;
    run) [[ $# -ge 1 ]] || die "run CLASS [ARGS...]"; run_class "$@";;
    classpath) echo "$(libs_dir)/*";;
    version) echo "$KAFKA_VERSION";;
    -h|--help|help|"") usage;;
    *) usage >&2; exit 2;;
  esac
}

main "$@"
