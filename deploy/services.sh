#!/usr/bin/env bash
# Install-if-missing and run the real services the integration tests need:
# Mosquitto (MQTT), InfluxDB 1.8.10 (v2 HTTP API + Flux), NATS with JetStream and a
# node-opcua server with simulated machines (deploy/opcua), all bound to 127.0.0.1, with their data, logs and PIDs under one state directory.
# Mosquitto serves three listeners: plain and anonymous, TLS that requires a client
# certificate of a test CA (generated with openssl under <state>/pki), and plain with a
# password (user "millwright", random password generated into <state>/mqtt-password).
# node-opcua offers security None, Basic256Sha256 and the Aes* policies, trusts client
# certificates automatically, and checks user "millwright" against <state>/opcua-password; its
# node_modules are installed with `npm ci` into the tools dir, keyed by the lock file's hash.
#
# Usage: deploy/services.sh up|down|status
#
#   up      install what is missing, start what is not running, wait until ready,
#           write <state>/env. Running services are left alone (a warm `up` takes ~1 s),
#           except a Mosquitto whose test certificates or password had to be made anew.
#   down    stop exactly the recorded PIDs (TERM, then KILL after 10 s), remove PID files.
#   status  print each service; exit 0 if all run, 3 otherwise.
#
# Environment:
#   MILLWRIGHT_SERVICES_DIR       state dir (default <repo>/.services): data/ run/ log/ env
#   MILLWRIGHT_TOOLS_DIR          binary cache shared by clones
#                                 (default ${XDG_CACHE_HOME:-$HOME/.cache}/millwright/bin)
#   MILLWRIGHT_MQTT_PORT          1883 (anonymous)
#   MILLWRIGHT_MQTT_TLS_PORT      8883 (mutual TLS: client certificate required)
#   MILLWRIGHT_MQTT_AUTH_PORT     1884 (username and password required)
#   MILLWRIGHT_INFLUX_PORT        8086 (HTTP)
#   MILLWRIGHT_INFLUX_RPC_PORT    8088
#   MILLWRIGHT_NATS_PORT          4222
#   MILLWRIGHT_NATS_MONITOR_PORT  8222
#   MILLWRIGHT_OPCUA_PORT         4840 (node-opcua)
#   MILLWRIGHT_SERVICES_TIMEOUT   seconds to wait for each service to become ready (30)
#
# Use the services from a test run with:  . .services/env && go test ./...
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # keep '&' literal in ${var//pat/rep}

readonly INFLUX_VERSION=1.8.10
readonly NATS_VERSION=v2.15.2 # newest 2.15 patch on the module proxy
readonly SERVICES=(mosquitto influxdb nats opcua)

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$DEPLOY_DIR")
TEMPLATE_DIR=$DEPLOY_DIR/services

STATE_DIR=${MILLWRIGHT_SERVICES_DIR:-$REPO_DIR/.services}
TOOLS_DIR=${MILLWRIGHT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/millwright/bin}
mkdir -p "$STATE_DIR" "$TOOLS_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
TOOLS_DIR=$(cd "$TOOLS_DIR" && pwd)

MQTT_PORT=${MILLWRIGHT_MQTT_PORT:-1883}
MQTT_TLS_PORT=${MILLWRIGHT_MQTT_TLS_PORT:-8883}
MQTT_AUTH_PORT=${MILLWRIGHT_MQTT_AUTH_PORT:-1884}
INFLUX_PORT=${MILLWRIGHT_INFLUX_PORT:-8086}
INFLUX_RPC_PORT=${MILLWRIGHT_INFLUX_RPC_PORT:-8088}
NATS_PORT=${MILLWRIGHT_NATS_PORT:-4222}
NATS_MONITOR_PORT=${MILLWRIGHT_NATS_MONITOR_PORT:-8222}
OPCUA_PORT=${MILLWRIGHT_OPCUA_PORT:-4840}
READY_TIMEOUT=${MILLWRIGHT_SERVICES_TIMEOUT:-30}
for _var in MQTT_PORT MQTT_TLS_PORT MQTT_AUTH_PORT INFLUX_PORT INFLUX_RPC_PORT NATS_PORT NATS_MONITOR_PORT OPCUA_PORT; do
	if ! [[ ${!_var} =~ ^[0-9]+$ ]] || ((${!_var} < 1 || ${!_var} > 65535)); then
		printf 'services.sh: MILLWRIGHT_%s=%s is not a TCP port\n' "$_var" "${!_var}" >&2
		exit 1
	fi
done
unset _var
if ((MQTT_PORT == MQTT_TLS_PORT || MQTT_PORT == MQTT_AUTH_PORT || MQTT_TLS_PORT == MQTT_AUTH_PORT)); then
	printf 'services.sh: the MQTT ports must differ (MILLWRIGHT_MQTT_PORT=%s, MILLWRIGHT_MQTT_TLS_PORT=%s, MILLWRIGHT_MQTT_AUTH_PORT=%s)\n' \
		"$MQTT_PORT" "$MQTT_TLS_PORT" "$MQTT_AUTH_PORT" >&2
	exit 1
fi

MOSQUITTO_BIN=/usr/sbin/mosquitto
MOSQUITTO_SUB=/usr/bin/mosquitto_sub
MOSQUITTO_PASSWD=/usr/bin/mosquitto_passwd
INFLUXD_BIN=$TOOLS_DIR/influxd-$INFLUX_VERSION
NATS_BIN=$TOOLS_DIR/nats-server-$NATS_VERSION
INFLUX_DB=millwright

# Credentials of Mosquitto's TLS and password listeners. They survive `down`; `up` makes
# what is missing, and certificates that expire within a day.
PKI_DIR=$STATE_DIR/pki
MQTT_USER=millwright
MQTT_PASSWORD_FILE=$STATE_DIR/mqtt-password     # the password itself, for `password: file:...`
MOSQUITTO_PASSWD_FILE=$STATE_DIR/mosquitto.passwd # its hash, for Mosquitto
MQTT_CREDS_CHANGED=0                            # set by ensure_mqtt_credentials
MQTT_SECURE=1                                   # 0 while an older broker without them runs

# node-opcua: the server script, its pinned dependencies (installed once per lock file) and
# the password of its one user.
OPCUA_SRC_DIR=$DEPLOY_DIR/opcua
OPCUA_USER=millwright
OPCUA_PASSWORD_FILE=$STATE_DIR/opcua-password
OPCUA_PKI_DIR=$STATE_DIR/data/opcua/pki
OPCUA_MODULES_DIR= # set by ensure_node_opcua
OPCUA_CREDS_CHANGED=0

log() { printf '%s\n' "$*"; }
die() { printf 'services.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }

# ---------------------------------------------------------------------------------------
# Helpers

# as_root runs a command as root, through sudo when we are not root.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo -n "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

APT_UPDATED=0
apt_install() {
	command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
	local noninteractive=(env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a)
	local aptlog=$STATE_DIR/log/apt.log
	if [[ $APT_UPDATED -eq 0 ]]; then
		as_root "${noninteractive[@]}" apt-get update >>"$aptlog" 2>&1 ||
			{ tail -n 20 "$aptlog" >&2; die "apt-get update failed; full output in $aptlog"; }
		APT_UPDATED=1
	fi
	as_root "${noninteractive[@]}" apt-get install -y --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >>"$aptlog" 2>&1 ||
		{ tail -n 20 "$aptlog" >&2; die "apt-get install $* failed; full output in $aptlog"; }
}

# render TEMPLATE OUT KEY=VALUE... replaces @KEY@ with VALUE.
render() {
	local template=$1 out=$2 text kv
	shift 2
	text=$(<"$template")
	for kv in "$@"; do
		text=${text//"@${kv%%=*}@"/"${kv#*=}"}
	done
	printf '%s\n' "$text" >"$out.tmp"
	mv -f "$out.tmp" "$out"
}

pid_file() { printf '%s/run/%s.pid' "$STATE_DIR" "$1"; }
log_file() { printf '%s/log/%s.log' "$STATE_DIR" "$1"; }
ports_file() { printf '%s/run/%s.ports' "$STATE_DIR" "$1"; }

# our_pid SERVICE prints the recorded PID if that process is alive and is ours (its
# command line names our state dir), so a recycled PID is never mistaken for a service.
our_pid() {
	local f pid cmdline
	f=$(pid_file "$1")
	[[ -s $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	cmdline=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null) || return 1
	[[ $cmdline == *"$STATE_DIR/"* ]] || return 1
	printf '%s' "$pid"
}

port_busy() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

port_holder() {
	command -v ss >/dev/null || return 0
	ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\("[^"]*",pid=[0-9]*\).*/ (held by \1)/p' | head -1
}

# require_free PORT ENVVAR fails with a clear message when PORT is taken.
require_free() {
	if port_busy "$1"; then
		die "port 127.0.0.1:$1 is already in use$(port_holder "$1"); set $2 to another port (or stop what holds it)"
	fi
}

fail_start() { # SERVICE PID MESSAGE
	local svc=$1 pid=$2 msg=$3
	printf 'services.sh: %s %s; last lines of %s:\n' "$svc" "$msg" "$(log_file "$svc")" >&2
	tail -n 30 "$(log_file "$svc")" >&2 || true
	if [[ -n $pid ]]; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$(pid_file "$svc")" "$(ports_file "$svc")"
	exit 1
}

# wait_ready SERVICE PID CHECK... polls CHECK until it succeeds, the process dies or the
# timeout passes.
wait_ready() {
	local svc=$1 pid=$2 deadline
	shift 2
	deadline=$(($(now) + READY_TIMEOUT))
	until "$@"; do
		if [[ -n $pid ]] && ! alive "$pid"; then
			fail_start "$svc" "" "exited during startup"
		fi
		if (($(now) >= deadline)); then
			fail_start "$svc" "$pid" "was not ready after ${READY_TIMEOUT}s (check $1 kept failing)"
		fi
		sleep 0.2
	done
}

# launch SERVICE BIN ARGS... starts a detached process (own session, stdin from
# /dev/null, output appended to the service log) and records its PID.
launch() {
	local svc=$1
	shift
	local pf lf
	pf=$(pid_file "$svc")
	lf=$(log_file "$svc")
	printf '=== %s starting %s\n' "$(date -u +%FT%TZ)" "$*" >>"$lf"
	# A PID file left by a service that died with the machine would be read below as the
	# new process's PID, and its dead PID reported as a failed start.
	rm -f "$pf"
	# The inner shell writes its own PID and then execs the service, so the PID file
	# holds the service's PID whether or not setsid had to fork.
	# shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
	setsid nohup bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' "$pf" "$@" \
		</dev/null >>"$lf" 2>&1 9>&- &
	local i
	for i in $(seq 50); do
		[[ -s $pf ]] && break
		sleep 0.05
	done
	[[ -s $pf ]] || fail_start "$svc" "" "did not start"
	cat "$pf"
}

# alive PID: the process exists and has not exited (an exited service waits as a zombie
# until init reaps it, which can take seconds in containers).
alive() {
	local stat
	stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# stop_pid PID waits up to 10 s after TERM, then KILLs.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 100); do
		alive "$pid" || return 0
		sleep 0.1
	done
	log "stopping pid $pid: no exit 10 s after TERM, sending KILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		alive "$pid" || return 0
		sleep 0.1
	done
}

# recorded_ports SERVICE prints the ports the running instance was started with.
recorded_ports() { cat "$(ports_file "$1")" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------
# Installation

go_install() { # NAME PACKAGE@VERSION DEST [go install flags...]
	local name=$1 pkg=$2 dest=$3
	shift 3
	command -v go >/dev/null || die "go not found in PATH; it is needed to build $name"
	local tmp buildlog
	tmp=$(mktemp -d "$TOOLS_DIR/.build-$name.XXXXXX")
	buildlog=$STATE_DIR/log/build-$name.log
	if ! (cd "$tmp" && env CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false GOBIN="$tmp" \
		go install "$@" "$pkg") >"$buildlog" 2>&1; then
		rm -rf "$tmp"
		tail -n 30 "$buildlog" >&2
		die "go install $pkg failed; full output in $buildlog"
	fi
	local built
	built=$(find "$tmp" -maxdepth 1 -type f -perm -u+x | head -1)
	[[ -n $built ]] || die "go install $pkg produced no binary"
	mv -f "$built" "$dest" # same filesystem: atomic, safe against a parallel install
	rm -rf "$tmp"
}

# The Debian package enables a system broker on 1883 (and starts it where an init system
# runs). Keep it from starting at boot; ours runs with its own config instead.
disable_system_mosquitto() {
	as_root update-rc.d mosquitto disable >/dev/null 2>&1 || true
	if command -v systemctl >/dev/null; then
		as_root systemctl disable mosquitto >/dev/null 2>&1 || true
	fi
}

system_mosquitto_pids() { # mosquitto processes started with the Debian config
	local pid
	for pid in $(pgrep -x mosquitto || true); do
		if tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | grep -q '/etc/mosquitto/'; then
			echo "$pid"
		fi
	done
}

stop_system_mosquitto() {
	local pids i
	mapfile -t pids < <(system_mosquitto_pids)
	((${#pids[@]})) || return 0
	log "mosquitto: stopping and disabling the system mosquitto service (pid ${pids[*]}) that holds its port"
	disable_system_mosquitto
	if [[ $(systemctl is-system-running 2>/dev/null || true) =~ ^(running|degraded|starting)$ ]]; then
		as_root systemctl stop mosquitto >/dev/null 2>&1 || true
	elif [[ -x /etc/init.d/mosquitto ]]; then
		as_root /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
	fi
	for i in $(seq 50); do
		mapfile -t pids < <(system_mosquitto_pids)
		((${#pids[@]})) || return 0
		if ((i % 20 == 1)); then
			as_root kill -TERM "${pids[@]}" 2>/dev/null || true
		fi
		sleep 0.1
	done
	die "could not stop the system mosquitto (pid ${pids[*]}); stop it or set MILLWRIGHT_MQTT_PORT"
}

ensure_mosquitto() {
	[[ -x $MOSQUITTO_BIN && -x $MOSQUITTO_SUB && -x $MOSQUITTO_PASSWD ]] && return 0
	local t0
	t0=$(now)
	apt_install mosquitto mosquitto-clients
	disable_system_mosquitto
	stop_system_mosquitto
	[[ -x $MOSQUITTO_BIN ]] || die "apt-get install mosquitto did not provide $MOSQUITTO_BIN"
	log "mosquitto: installed $($MOSQUITTO_BIN -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -1) (Debian package) in $(($(now) - t0))s"
}

ensure_influxd() {
	[[ -x $INFLUXD_BIN ]] && return 0
	local t0
	t0=$(now)
	go_install influxd "github.com/influxdata/influxdb/cmd/influxd@v$INFLUX_VERSION" "$INFLUXD_BIN" \
		-ldflags "-X main.version=$INFLUX_VERSION"
	log "influxdb: installed $INFLUXD_BIN in $(($(now) - t0))s"
}

ensure_nats() {
	[[ -x $NATS_BIN ]] && return 0
	local t0
	t0=$(now)
	go_install nats-server "github.com/nats-io/nats-server/v2@$NATS_VERSION" "$NATS_BIN"
	log "nats: installed $NATS_BIN in $(($(now) - t0))s"
}

# ensure_node_opcua installs deploy/opcua's pinned dependencies with `npm ci` into
# $TOOLS_DIR/node-opcua-<hash of package-lock.json>, once per lock file, and sets
# OPCUA_MODULES_DIR to its node_modules.
ensure_node_opcua() {
	command -v node >/dev/null || die "node not found in PATH; install Node.js 20 (node-opcua 2.182.2 needs it)"
	command -v npm >/dev/null || die "npm not found in PATH; install it with Node.js 20"
	local hash dest
	hash=$(sha256sum "$OPCUA_SRC_DIR/package-lock.json" | cut -c1-16)
	dest=$TOOLS_DIR/node-opcua-$hash
	OPCUA_MODULES_DIR=$dest/node_modules
	[[ -f $OPCUA_MODULES_DIR/node-opcua/package.json ]] && return 0
	local t0 tmp buildlog
	t0=$(now)
	tmp=$(mktemp -d "$TOOLS_DIR/.build-node-opcua.XXXXXX")
	buildlog=$STATE_DIR/log/build-node-opcua.log
	cp "$OPCUA_SRC_DIR/package.json" "$OPCUA_SRC_DIR/package-lock.json" "$tmp/"
	if ! (cd "$tmp" && npm ci --no-audit --no-fund) >"$buildlog" 2>&1; then
		rm -rf "$tmp"
		tail -n 30 "$buildlog" >&2
		die "npm ci for node-opcua failed; full output in $buildlog"
	fi
	# Same filesystem: the rename is atomic; a parallel install that won keeps its copy.
	mv -T "$tmp" "$dest" 2>/dev/null || rm -rf "$tmp"
	[[ -f $OPCUA_MODULES_DIR/node-opcua/package.json ]] || die "npm ci did not install node-opcua into $dest"
	log "opcua: installed node-opcua $(node -p 'require(process.argv[1]).version' "$OPCUA_MODULES_DIR/node-opcua/package.json") into $dest in $(($(now) - t0))s"
}

# ensure_opcua_password makes a random password for $OPCUA_USER when it is missing and sets
# OPCUA_CREDS_CHANGED=1 when it wrote one.
ensure_opcua_password() {
	[[ -s $OPCUA_PASSWORD_FILE ]] && return 0
	ensure_openssl
	local pw
	pw=$(openssl rand -hex 16) || die "openssl rand failed"
	(umask 077 && printf '%s\n' "$pw" >"$OPCUA_PASSWORD_FILE.tmp")
	mv -f "$OPCUA_PASSWORD_FILE.tmp" "$OPCUA_PASSWORD_FILE"
	OPCUA_CREDS_CHANGED=1
	log "opcua: made a password for user $OPCUA_USER in $OPCUA_PASSWORD_FILE"
}

ensure_curl() {
	command -v curl >/dev/null && return 0
	apt_install curl ca-certificates
}

ensure_openssl() {
	command -v openssl >/dev/null && return 0
	apt_install openssl
	command -v openssl >/dev/null || die "apt-get install openssl did not provide openssl"
}

# pki_valid CA CERT... succeeds when every CERT (and its .key) exists, is signed by CA and is
# still valid a day from now. The CA is checked by naming it among the CERTs.
pki_valid() {
	local ca=$1 cert
	shift
	for cert in "$@"; do
		[[ -s $cert && -s ${cert%.pem}.key ]] || return 1
	done
	openssl verify -CAfile "$ca" -attime $(($(now) + 86400)) "$@" >/dev/null 2>&1
}

# new_cert NAME SUBJECT EXTENSIONS DAYS writes $PKI_DIR/NAME.key (EC P-256) and NAME.pem,
# self-signed for the CA, else signed by $PKI_DIR/ca.pem. The pair replaces the old one only
# once both are complete.
new_cert() {
	local name=$1 subject=$2 ext=$3 days=$4 cnf=$TEMPLATE_DIR/test-pki.cnf tmp pkilog
	pkilog=$STATE_DIR/log/pki.log
	tmp=$(mktemp -d "$PKI_DIR/.new-$name.XXXXXX")
	if [[ $name == ca ]]; then
		(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/key" &&
			openssl req -config "$cnf" -new -x509 -key "$tmp/key" -subj "$subject" -days "$days" \
				-extensions "$ext" -out "$tmp/pem") >>"$pkilog" 2>&1
	else
		(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/key" &&
			openssl req -config "$cnf" -new -key "$tmp/key" -subj "$subject" -out "$tmp/csr" &&
			openssl x509 -req -in "$tmp/csr" -CA "$PKI_DIR/ca.pem" -CAkey "$PKI_DIR/ca.key" \
				-set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$cnf" -extensions "$ext" \
				-out "$tmp/pem") >>"$pkilog" 2>&1
	fi || {
		rm -rf "$tmp"
		tail -n 20 "$pkilog" >&2
		die "openssl could not make the test certificate $name; full output in $pkilog"
	}
	chmod 644 "$tmp/pem"
	mv -f "$tmp/key" "$PKI_DIR/$name.key"
	mv -f "$tmp/pem" "$PKI_DIR/$name.pem"
	rm -rf "$tmp"
}

# ensure_test_pki makes the test PKI under $PKI_DIR where a part is missing, not signed by
# the CA or expires within a day: ca.pem, server.pem (localhost, 127.0.0.1, ::1) and
# client.pem, each with its .key. It sets MQTT_CREDS_CHANGED=1 when it wrote anything.
ensure_test_pki() {
	local ca=$PKI_DIR/ca.pem server=$PKI_DIR/server.pem client=$PKI_DIR/client.pem
	pki_valid "$ca" "$ca" "$server" "$client" && return 0 # the fast path of a warm `up`
	local t0 made=()
	t0=$(date +%s.%N)
	mkdir -p "$PKI_DIR"
	chmod 700 "$PKI_DIR"
	if ! pki_valid "$ca" "$ca"; then
		new_cert ca "/CN=Millwright test CA" ca_ext 3650
		made+=(ca)
	fi
	if ((${#made[@]})) || ! pki_valid "$ca" "$server"; then
		new_cert server "/CN=localhost" server_ext 825
		made+=(server)
	fi
	if ((${#made[@]})) || ! pki_valid "$ca" "$client"; then
		new_cert client "/CN=millwright-test-client" client_ext 825
		made+=(client)
	fi
	pki_valid "$ca" "$ca" "$server" "$client" || die "the test PKI in $PKI_DIR does not verify after generating it; see $STATE_DIR/log/pki.log"
	MQTT_CREDS_CHANGED=1
	log "mosquitto: made test certificates (${made[*]}) in $PKI_DIR in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s"
}

# ensure_mqtt_password makes a random password for $MQTT_USER and Mosquitto's password file
# when either is missing. It sets MQTT_CREDS_CHANGED=1 when it wrote them.
ensure_mqtt_password() {
	if [[ -s $MQTT_PASSWORD_FILE && -s $MOSQUITTO_PASSWD_FILE ]] &&
		grep -q "^$MQTT_USER:" "$MOSQUITTO_PASSWD_FILE"; then
		return 0
	fi
	local pw
	pw=$(openssl rand -hex 16) || die "openssl rand failed"
	rm -f "$MQTT_PASSWORD_FILE.tmp" "$MOSQUITTO_PASSWD_FILE.tmp"
	(umask 077 && printf '%s\n' "$pw" >"$MQTT_PASSWORD_FILE.tmp" &&
		"$MOSQUITTO_PASSWD" -c -b "$MOSQUITTO_PASSWD_FILE.tmp" "$MQTT_USER" "$pw") >>"$STATE_DIR/log/pki.log" 2>&1 ||
		die "mosquitto_passwd could not write $MOSQUITTO_PASSWD_FILE; see $STATE_DIR/log/pki.log"
	mv -f "$MOSQUITTO_PASSWD_FILE.tmp" "$MOSQUITTO_PASSWD_FILE"
	mv -f "$MQTT_PASSWORD_FILE.tmp" "$MQTT_PASSWORD_FILE"
	MQTT_CREDS_CHANGED=1
	log "mosquitto: made a password for user $MQTT_USER in $MQTT_PASSWORD_FILE"
}

ensure_mqtt_credentials() {
	ensure_mosquitto # mosquitto_passwd
	ensure_openssl
	ensure_test_pki
	ensure_mqtt_password
}

# ---------------------------------------------------------------------------------------
# Readiness checks

# mosquitto_round_trip PORT [mosquitto_sub options]: a real MQTT round trip, the broker's
# retained $SYS version message.
mosquitto_round_trip() {
	local port=$1
	shift
	# shellcheck disable=SC2016 # $SYS is a topic, not a variable
	"$MOSQUITTO_SUB" -h 127.0.0.1 -p "$port" -i "services-sh-$$-$port" -t '$SYS/broker/version' \
		-C 1 -W 2 "$@" >/dev/null 2>&1
}

mosquitto_ready() { mosquitto_round_trip "$MQTT_PORT"; }

mosquitto_tls_ready() { # with the client certificate, checking the server's against the CA
	mosquitto_round_trip "$MQTT_TLS_PORT" --cafile "$PKI_DIR/ca.pem" \
		--cert "$PKI_DIR/client.pem" --key "$PKI_DIR/client.key"
}

mosquitto_auth_ready() { mosquitto_round_trip "$MQTT_AUTH_PORT" -u "$MQTT_USER" -P "$(<"$MQTT_PASSWORD_FILE")"; }

mosquitto_all_ready() { # the listeners that the running broker has
	mosquitto_ready || return 1
	((MQTT_SECURE)) || return 0
	mosquitto_tls_ready && mosquitto_auth_ready
}

influx_ready() {
	[[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$INFLUX_PORT/ping") == 204 ]]
}

nats_ready() { curl -sf -o /dev/null -m 2 "http://127.0.0.1:$NATS_MONITOR_PORT/healthz"; }

opcua_ready() { port_busy "$OPCUA_PORT"; } # node-opcua listens once its address space is built

influx_create_db() {
	local out
	out=$(curl -sS -m 10 -XPOST "http://127.0.0.1:$INFLUX_PORT/query" \
		--data-urlencode "q=CREATE DATABASE $INFLUX_DB") || die "influxdb: CREATE DATABASE $INFLUX_DB failed"
	[[ $out != *'"error"'* ]] || die "influxdb: CREATE DATABASE $INFLUX_DB failed: $out"
}

# ---------------------------------------------------------------------------------------
# Services

# adopt_ports SERVICE VAR... sets the port variables from what a running instance was
# started with, warning when the environment asks for different ones.
adopt_ports() {
	local svc=$1
	shift
	local recorded var i=0 want
	read -r -a recorded <<<"$(recorded_ports "$svc")"
	[[ ${#recorded[@]} -eq $# ]] || return 0
	for var in "$@"; do
		want=${!var}
		if [[ $want != "${recorded[$i]}" ]]; then
			log "$svc: warning: running on port ${recorded[$i]}, not $want (MILLWRIGHT_$var); run 'down' first to change it" >&2
			printf -v "$var" '%s' "${recorded[$i]}"
		fi
		i=$((i + 1))
	done
}

mosquitto_addrs() {
	printf 'tcp://127.0.0.1:%s' "$MQTT_PORT"
	((MQTT_SECURE)) || return 0
	printf ', ssl://127.0.0.1:%s (client certificate), tcp://127.0.0.1:%s (password)' "$MQTT_TLS_PORT" "$MQTT_AUTH_PORT"
}

up_mosquitto() {
	local pid recorded
	ensure_mqtt_credentials
	if pid=$(our_pid mosquitto); then
		read -r -a recorded <<<"$(recorded_ports mosquitto)"
		if ((${#recorded[@]} == 1)); then
			# Started by an older services.sh, with the plain listener only.
			MQTT_SECURE=0
			adopt_ports mosquitto MQTT_PORT
			log "mosquitto: warning: running without the TLS and password listeners (started by an older services.sh); run 'down' then 'up' to add them" >&2
		elif ((MQTT_CREDS_CHANGED)); then
			log "mosquitto: restarting (pid $pid) to load the new test certificates or password"
			stop_pid "$pid"
			rm -f "$(pid_file mosquitto)" "$(ports_file mosquitto)"
			pid=
		else
			adopt_ports mosquitto MQTT_PORT MQTT_TLS_PORT MQTT_AUTH_PORT
		fi
		if [[ -n $pid ]]; then
			wait_ready mosquitto "$pid" mosquitto_all_ready
			log "mosquitto: already running (pid $pid) at $(mosquitto_addrs)"
			return
		fi
	fi
	if [[ $MQTT_PORT == 1883 ]] && port_busy "$MQTT_PORT"; then
		stop_system_mosquitto # only if the holder is the Debian service
	fi
	require_free "$MQTT_PORT" MILLWRIGHT_MQTT_PORT
	require_free "$MQTT_TLS_PORT" MILLWRIGHT_MQTT_TLS_PORT
	require_free "$MQTT_AUTH_PORT" MILLWRIGHT_MQTT_AUTH_PORT
	local data=$STATE_DIR/data/mosquitto conf=$STATE_DIR/mosquitto.conf
	mkdir -p "$data"
	render "$TEMPLATE_DIR/mosquitto.conf.tmpl" "$conf" \
		USER="$(id -un)" MQTT_PORT="$MQTT_PORT" MQTT_TLS_PORT="$MQTT_TLS_PORT" MQTT_AUTH_PORT="$MQTT_AUTH_PORT" \
		PKI_DIR="$PKI_DIR" PASSWORD_FILE="$MOSQUITTO_PASSWD_FILE" DATA_DIR="$data" LOG_FILE="$(log_file mosquitto)"
	pid=$(launch mosquitto "$MOSQUITTO_BIN" -c "$conf")
	wait_ready mosquitto "$pid" mosquitto_ready
	wait_ready mosquitto "$pid" mosquitto_tls_ready
	wait_ready mosquitto "$pid" mosquitto_auth_ready
	echo "$MQTT_PORT $MQTT_TLS_PORT $MQTT_AUTH_PORT" >"$(ports_file mosquitto)"
	log "mosquitto: started (pid $pid) at $(mosquitto_addrs)"
}

up_influxdb() {
	local pid
	if pid=$(our_pid influxdb); then
		adopt_ports influxdb INFLUX_PORT INFLUX_RPC_PORT
		wait_ready influxdb "$pid" influx_ready
		influx_create_db
		log "influxdb: already running (pid $pid) at http://127.0.0.1:$INFLUX_PORT"
		return
	fi
	ensure_influxd
	require_free "$INFLUX_PORT" MILLWRIGHT_INFLUX_PORT
	require_free "$INFLUX_RPC_PORT" MILLWRIGHT_INFLUX_RPC_PORT
	local data=$STATE_DIR/data/influxdb conf=$STATE_DIR/influxdb.conf
	mkdir -p "$data"
	render "$TEMPLATE_DIR/influxdb.conf.tmpl" "$conf" \
		INFLUX_PORT="$INFLUX_PORT" INFLUX_RPC_PORT="$INFLUX_RPC_PORT" DATA_DIR="$data"
	pid=$(launch influxdb "$INFLUXD_BIN" run -config "$conf")
	wait_ready influxdb "$pid" influx_ready
	influx_create_db
	echo "$INFLUX_PORT $INFLUX_RPC_PORT" >"$(ports_file influxdb)"
	log "influxdb: started $INFLUX_VERSION (pid $pid) at http://127.0.0.1:$INFLUX_PORT, database $INFLUX_DB"
}

up_nats() {
	local pid
	if pid=$(our_pid nats); then
		adopt_ports nats NATS_PORT NATS_MONITOR_PORT
		wait_ready nats "$pid" nats_ready
		log "nats: already running (pid $pid) at nats://127.0.0.1:$NATS_PORT (JetStream)"
		return
	fi
	ensure_nats
	require_free "$NATS_PORT" MILLWRIGHT_NATS_PORT
	require_free "$NATS_MONITOR_PORT" MILLWRIGHT_NATS_MONITOR_PORT
	local data=$STATE_DIR/data/nats conf=$STATE_DIR/nats-server.conf
	mkdir -p "$data"
	render "$TEMPLATE_DIR/nats-server.conf.tmpl" "$conf" \
		NATS_PORT="$NATS_PORT" NATS_MONITOR_PORT="$NATS_MONITOR_PORT" DATA_DIR="$data"
	pid=$(launch nats "$NATS_BIN" -c "$conf")
	wait_ready nats "$pid" nats_ready
	echo "$NATS_PORT $NATS_MONITOR_PORT" >"$(ports_file nats)"
	log "nats: started $NATS_VERSION (pid $pid) at nats://127.0.0.1:$NATS_PORT (JetStream, monitor :$NATS_MONITOR_PORT)"
}

up_opcua() {
	local pid
	ensure_node_opcua
	ensure_opcua_password
	if pid=$(our_pid opcua); then
		if ((OPCUA_CREDS_CHANGED)); then
			log "opcua: restarting (pid $pid) to load the new password"
			stop_pid "$pid"
			rm -f "$(pid_file opcua)" "$(ports_file opcua)"
		else
			adopt_ports opcua OPCUA_PORT
			wait_ready opcua "$pid" opcua_ready
			log "opcua: already running (pid $pid) at opc.tcp://127.0.0.1:$OPCUA_PORT"
			return
		fi
	fi
	require_free "$OPCUA_PORT" MILLWRIGHT_OPCUA_PORT
	mkdir -p "$OPCUA_PKI_DIR"
	pid=$(launch opcua env NODE_PATH="$OPCUA_MODULES_DIR" node "$OPCUA_SRC_DIR/server.js" \
		--host 127.0.0.1 --port "$OPCUA_PORT" --pki "$OPCUA_PKI_DIR" \
		--user "$OPCUA_USER" --password-file "$OPCUA_PASSWORD_FILE")
	wait_ready opcua "$pid" opcua_ready
	echo "$OPCUA_PORT" >"$(ports_file opcua)"
	log "opcua: started node-opcua (pid $pid) at opc.tcp://127.0.0.1:$OPCUA_PORT (None, Basic256Sha256, Aes*; user $OPCUA_USER)"
}

write_env() {
	local f=$STATE_DIR/env
	{
		echo "# Written by deploy/services.sh up; source it before running integration tests."
		printf 'export MILLWRIGHT_INTEGRATION=1\n'
		printf 'export MILLWRIGHT_MQTT_URL=%q\n' "tcp://127.0.0.1:$MQTT_PORT"
		if ((MQTT_SECURE)); then
			printf 'export MILLWRIGHT_MQTT_TLS_URL=%q\n' "ssl://127.0.0.1:$MQTT_TLS_PORT"
			printf 'export MILLWRIGHT_MQTT_CA=%q\n' "$PKI_DIR/ca.pem"
			printf 'export MILLWRIGHT_MQTT_CLIENT_CERT=%q\n' "$PKI_DIR/client.pem"
			printf 'export MILLWRIGHT_MQTT_CLIENT_KEY=%q\n' "$PKI_DIR/client.key"
			printf 'export MILLWRIGHT_MQTT_AUTH_URL=%q\n' "tcp://127.0.0.1:$MQTT_AUTH_PORT"
			printf 'export MILLWRIGHT_MQTT_USER=%q\n' "$MQTT_USER"
			printf 'export MILLWRIGHT_MQTT_PASSWORD_FILE=%q\n' "$MQTT_PASSWORD_FILE"
		fi
		printf 'export MILLWRIGHT_INFLUX_URL=%q\n' "http://127.0.0.1:$INFLUX_PORT"
		printf 'export MILLWRIGHT_INFLUX_DB=%q\n' "$INFLUX_DB"
		printf 'export MILLWRIGHT_NATS_URL=%q\n' "nats://127.0.0.1:$NATS_PORT"
		printf 'export MILLWRIGHT_INFLUXD=%q\n' "$INFLUXD_BIN"
		printf 'export MILLWRIGHT_MOSQUITTO=%q\n' "$MOSQUITTO_BIN"
		printf 'export MILLWRIGHT_NATS_SERVER=%q\n' "$NATS_BIN"
		printf 'export MILLWRIGHT_OPCUA_URL=%q\n' "opc.tcp://127.0.0.1:$OPCUA_PORT"
		printf 'export MILLWRIGHT_OPCUA_USER=%q\n' "$OPCUA_USER"
		printf 'export MILLWRIGHT_OPCUA_PASSWORD=%q\n' "$(<"$OPCUA_PASSWORD_FILE")"
		printf 'export MILLWRIGHT_OPCUA_PASSWORD_FILE=%q\n' "$OPCUA_PASSWORD_FILE"
		printf 'export MILLWRIGHT_OPCUA_PKI=%q\n' "$OPCUA_PKI_DIR"
		printf 'export MILLWRIGHT_OPCUA_SERVER_CERT=%q\n' "$OPCUA_PKI_DIR/own/certs/certificate.pem"
		printf 'export MILLWRIGHT_OPCUA_SERVER_JS=%q\n' "$OPCUA_SRC_DIR/server.js"
		printf 'export MILLWRIGHT_OPCUA_NODE_PATH=%q\n' "$OPCUA_MODULES_DIR"
		printf 'export MILLWRIGHT_NODE=%q\n' "$(command -v node)"
	} >"$f.tmp"
	mv -f "$f.tmp" "$f"
}

cmd_up() {
	local t0
	t0=$(date +%s.%N)
	ensure_curl
	up_mosquitto
	up_influxdb
	up_nats
	up_opcua
	write_env
	log "env: $STATE_DIR/env ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s)"
}

cmd_down() {
	local svc pid pf
	for svc in "${SERVICES[@]}"; do
		pf=$(pid_file "$svc")
		if pid=$(our_pid "$svc"); then
			stop_pid "$pid"
			log "$svc: stopped (pid $pid)"
		elif [[ -e $pf ]]; then
			log "$svc: not running (removed stale pid file)"
		else
			log "$svc: not running"
		fi
		rm -f "$pf" "$(ports_file "$svc")"
	done
	rm -f "$STATE_DIR/env"
}

cmd_status() {
	local svc pid all=0 ports addr
	for svc in "${SERVICES[@]}"; do
		if pid=$(our_pid "$svc"); then
			read -r -a ports <<<"$(recorded_ports "$svc")"
			case $svc in
			mosquitto)
				addr="tcp://127.0.0.1:${ports[0]:-?}"
				if ((${#ports[@]} == 3)); then
					addr+=", ssl://127.0.0.1:${ports[1]} (client certificate), tcp://127.0.0.1:${ports[2]} (password)"
				fi
				;;
			influxdb) addr="http://127.0.0.1:${ports[0]:-?}" ;;
			nats) addr="nats://127.0.0.1:${ports[0]:-?} (monitor :${ports[1]:-?})" ;;
			opcua) addr="opc.tcp://127.0.0.1:${ports[0]:-?} (node-opcua)" ;;
			esac
			log "$svc: running (pid $pid) at $addr"
		else
			log "$svc: stopped"
			all=3
		fi
	done
	return "$all"
}

main() {
	[[ $# -eq 1 ]] || die "usage: $0 up|down|status"
	mkdir -p "$STATE_DIR/data" "$STATE_DIR/run" "$STATE_DIR/log"
	# Keep the state dir out of git without touching the repo's .gitignore.
	[[ -e $STATE_DIR/.gitignore ]] || echo '*' >"$STATE_DIR/.gitignore"
	case $1 in
	up | down)
		# One up/down at a time per state dir.
		exec 9>"$STATE_DIR/run/.lock"
		flock -w 900 9 || die "another services.sh holds $STATE_DIR/run/.lock"
		"cmd_$1"
		;;
	status) cmd_status ;;
	*) die "usage: $0 up|down|status" ;;
	esac
}

main "$@"
