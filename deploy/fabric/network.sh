#!/usr/bin/env bash
# A real Hyperledger Fabric v3.1.1 network for the lineage ledger, from this repository,
# without Docker: one raft orderer (org "orderer"), one peer per peer organisation
# (factory-a, factory-b, oem; LevelDB), an auditor organisation with clients only, the
# channel joined through the orderer's admin API, and the lineage chaincode run as a
# service (one process per peer organisation) and committed with `peer lifecycle`.
# Every process listens on 127.0.0.1; data, logs and PIDs live under one state directory.
#
# Usage: deploy/fabric/network.sh up|down|status
#
#   up      build the Fabric binaries into the cache if they are not there (`go build` of
#           the pinned tools module, ~1-2 min cold), generate crypto material and the
#           channel's genesis block, start orderer, peers and chaincode, join, install,
#           approve, commit, and write <state>/env. A network that is already up (every
#           recorded process alive and env written) is left alone.
#   down    stop exactly the recorded PIDs (TERM, then KILL after 10 s) and remove the
#           state directory: the next `up` creates a fresh network (a restarted raft
#           orderer needs ~11 s to elect a leader, tests want a fresh ledger anyway).
#   status  print each process; exit 0 if all run, 3 otherwise.
#
# Environment:
#   MILLWRIGHT_FABRIC_DIR        state dir (default <repo>/.fabric): crypto/ config/ data/
#                                run/ log/ env
#   MILLWRIGHT_TOOLS_DIR         binary cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/millwright);
#                                binaries go to fabric-<version>/bin under it
#   MILLWRIGHT_FABRIC_BASE_PORT  first port of the network (default 17050); it uses
#                                base..base+9 (orderer, chaincode servers) and
#                                base+100*i+{1,2,3} for peer i (listen, chaincode, operations)
#   MILLWRIGHT_FABRIC_BATCH_TIMEOUT      orderer batch timeout (default 50ms)
#   MILLWRIGHT_FABRIC_MAX_MESSAGE_COUNT  transactions per block at most (default 1: a lone
#                                        transaction is ordered at once instead of waiting the batch timeout)
#   MILLWRIGHT_FABRIC_TIMEOUT    seconds to wait for each step to become ready (60)
#
# Use the network from a test run with:  . .fabric/env && go test ./ledger/...
set -euo pipefail

readonly FABRIC_VERSION=v3.1.1
readonly FABRIC_MODULE=github.com/hyperledger/fabric
readonly TOOLS=(peer orderer configtxgen cryptogen osnadmin)
readonly PEER_ORGS=(factory-a factory-b oem)
readonly CLIENT_ORGS=(factory-a factory-b oem auditor)
readonly CHANNEL=millwright
readonly CC_NAME=lineage
readonly CC_VERSION=1
readonly CC_SEQUENCE=1

FABRIC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$FABRIC_DIR/../.." && pwd)
STATE_DIR=${MILLWRIGHT_FABRIC_DIR:-$REPO_DIR/.fabric}
CACHE_DIR=${MILLWRIGHT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/millwright}
BIN_DIR=$CACHE_DIR/fabric-$FABRIC_VERSION/bin
BASE_PORT=${MILLWRIGHT_FABRIC_BASE_PORT:-17050}
BATCH_TIMEOUT=${MILLWRIGHT_FABRIC_BATCH_TIMEOUT:-50ms}
MAX_MESSAGE_COUNT=${MILLWRIGHT_FABRIC_MAX_MESSAGE_COUNT:-1}
READY_TIMEOUT=${MILLWRIGHT_FABRIC_TIMEOUT:-60}

if ! [[ $BASE_PORT =~ ^[0-9]+$ ]] || ((BASE_PORT < 1024 || BASE_PORT + 400 > 65535)); then
	echo "network.sh: MILLWRIGHT_FABRIC_BASE_PORT=$BASE_PORT: expected a port between 1024 and 65135" >&2
	exit 1
fi
if ! [[ $MAX_MESSAGE_COUNT =~ ^[1-9][0-9]*$ ]]; then
	echo "network.sh: MILLWRIGHT_FABRIC_MAX_MESSAGE_COUNT=$MAX_MESSAGE_COUNT: expected a positive integer" >&2
	exit 1
fi
if ! [[ $BATCH_TIMEOUT =~ ^[0-9]+(ms|s)$ ]]; then
	echo "network.sh: MILLWRIGHT_FABRIC_BATCH_TIMEOUT=$BATCH_TIMEOUT: expected a duration such as 100ms or 1s" >&2
	exit 1
fi

readonly ORDERER_PORT=$BASE_PORT ORDERER_ADMIN_PORT=$((BASE_PORT + 3)) ORDERER_OPS_PORT=$((BASE_PORT + 4))
peer_index() { local i; for i in "${!PEER_ORGS[@]}"; do [[ ${PEER_ORGS[$i]} == "$1" ]] && { echo $((i + 1)); return; }; done; return 1; }
peer_port() { echo $((BASE_PORT + 100 * $(peer_index "$1") + 1)); }
cc_port() { echo $((BASE_PORT + 4 + $(peer_index "$1"))); }

log() { printf 'fabric: %s\n' "$*" >&2; }
die() { printf 'fabric: %s\n' "$*" >&2; exit 1; }

CRYPTO=$STATE_DIR/crypto
ORDERER_DIR=$CRYPTO/ordererOrganizations/orderer.millwright.local
ORDERER_TLS=$ORDERER_DIR/orderers/orderer0.orderer.millwright.local/tls
ORDERER_ADMIN_TLS=$ORDERER_DIR/users/Admin@orderer.millwright.local/tls
org_dir() { echo "$CRYPTO/peerOrganizations/$1.millwright.local"; }

# ---- processes -------------------------------------------------------------------------

pid_file() { printf '%s/run/%s.pid' "$STATE_DIR" "$1"; }

# our_pid NAME prints the recorded PID if that process is alive and still runs the
# executable recorded with it (so a recycled PID is never signalled).
our_pid() {
	local f pid exe want
	f=$(pid_file "$1")
	[[ -r $f ]] || return 1
	read -r pid want <"$f" || true
	[[ $pid =~ ^[0-9]+$ && -n $want ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ $exe == "$want" ]] || return 1
	printf '%s' "$pid"
}

# started NAME: the recorded process is alive (right after start it may still be setsid
# or env, before they exec the executable our_pid checks for).
started() {
	local pid _
	read -r pid _ <"$(pid_file "$1")" 2>/dev/null || return 1
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

process_names() {
	local org
	echo orderer
	for org in "${PEER_ORGS[@]}"; do echo "peer-$org"; done
	for org in "${PEER_ORGS[@]}"; do echo "chaincode-$org"; done
}

# start NAME EXE CMD...: start CMD, which runs the executable EXE, in the background with
# its output in log/NAME.log; record its PID and EXE.
start() {
	local name=$1 exe=$2
	shift 2
	mkdir -p "$STATE_DIR/run" "$STATE_DIR/log"
	setsid "$@" >"$STATE_DIR/log/$name.log" 2>&1 </dev/null &
	echo "$! $(readlink -f "$exe")" >"$(pid_file "$name")"
}

# wait_port NAME PORT: wait until PORT accepts connections, failing if NAME died.
wait_port() {
	local name=$1 port=$2 deadline=$((SECONDS + READY_TIMEOUT))
	until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		started "$name" || { tail -20 "$STATE_DIR/log/$name.log" >&2; die "$name exited (log: $STATE_DIR/log/$name.log)"; }
		((SECONDS < deadline)) || die "$name: port $port not open after ${READY_TIMEOUT}s (log: $STATE_DIR/log/$name.log)"
		sleep 0.1
	done
}

# retry DESCRIPTION CMD...: run CMD until it succeeds or the timeout passes.
retry() {
	local what=$1 deadline=$((SECONDS + READY_TIMEOUT)) out
	shift
	until out=$("$@" 2>&1); do
		((SECONDS < deadline)) || { printf '%s\n' "$out" >&2; die "$what: still failing after ${READY_TIMEOUT}s"; }
		sleep 0.5
	done
	printf '%s\n' "$out"
}

stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid: no exit 10 s after TERM, sending KILL"
	kill -KILL "$pid" 2>/dev/null || true
}

# ---- build -----------------------------------------------------------------------------

build_tools() {
	local t missing=()
	for t in "${TOOLS[@]}"; do [[ -x $BIN_DIR/$t ]] || missing+=("$t"); done
	if ((${#missing[@]})); then
		log "building ${missing[*]} (Fabric $FABRIC_VERSION) into $BIN_DIR"
		mkdir -p "$BIN_DIR"
		for t in "${missing[@]}"; do
			(cd "$FABRIC_DIR/tools" && CGO_ENABLED=0 go build -trimpath -o "$BIN_DIR/$t.tmp" "$FABRIC_MODULE/cmd/$t")
			mv "$BIN_DIR/$t.tmp" "$BIN_DIR/$t"
		done
	fi
	# The chaincode is this repository's code: rebuilt every time (the build cache makes
	# an unchanged one instant).
	mkdir -p "$STATE_DIR/bin"
	(cd "$REPO_DIR" && CGO_ENABLED=0 go build -o "$STATE_DIR/bin/lineage-cc" ./ledger/chaincode/cmd/lineage-cc)
}

sample_config() {
	local dir
	dir=$(cd "$FABRIC_DIR/tools" && go list -m -f '{{.Dir}}' "$FABRIC_MODULE")
	echo "$dir/sampleconfig"
}

# ---- configuration ---------------------------------------------------------------------

generate() {
	local cfg=$STATE_DIR/config samples sed_args=() org
	mkdir -p "$cfg"
	if [[ ! -d $CRYPTO ]]; then
		"$BIN_DIR/cryptogen" generate --config="$FABRIC_DIR/crypto-config.yaml" --output="$CRYPTO.tmp" >/dev/null
		mv "$CRYPTO.tmp" "$CRYPTO"
	fi
	samples=$(sample_config)
	# The stock core.yaml declares the ccaas_builder external builder; only its path changes.
	sed "s#/opt/hyperledger/ccaas_builder#$FABRIC_DIR/builder#" "$samples/core.yaml" >"$cfg/core.yaml"
	cp "$samples/orderer.yaml" "$cfg/orderer.yaml"
	sed_args=(-e "s/@ORDERER_PORT@/$ORDERER_PORT/g" -e "s/@BATCH_TIMEOUT@/$BATCH_TIMEOUT/g" -e "s/@MAX_MESSAGE_COUNT@/$MAX_MESSAGE_COUNT/g")
	for org in "${PEER_ORGS[@]}"; do sed_args+=(-e "s/@PORT_$org@/$(peer_port "$org")/g"); done
	sed "${sed_args[@]}" "$FABRIC_DIR/configtx.yaml.tmpl" >"$cfg/configtx.yaml"
	if [[ ! -f $STATE_DIR/channel.block ]]; then
		FABRIC_CFG_PATH=$cfg "$BIN_DIR/configtxgen" -profile Lineage -channelID "$CHANNEL" \
			-outputBlock "$STATE_DIR/channel.block" 2>"$STATE_DIR/log/configtxgen.log" ||
			{ cat "$STATE_DIR/log/configtxgen.log" >&2; die "configtxgen failed"; }
	fi
}

# ---- orderer ---------------------------------------------------------------------------

start_orderer() {
	our_pid orderer >/dev/null && return 0
	mkdir -p "$STATE_DIR/data/orderer"
	start orderer "$BIN_DIR/orderer" env FABRIC_CFG_PATH="$STATE_DIR/config" FABRIC_LOGGING_SPEC=warn \
		ORDERER_GENERAL_LISTENADDRESS=127.0.0.1 ORDERER_GENERAL_LISTENPORT="$ORDERER_PORT" \
		ORDERER_GENERAL_LOCALMSPID=orderer ORDERER_GENERAL_LOCALMSPDIR="$ORDERER_DIR/orderers/orderer0.orderer.millwright.local/msp" \
		ORDERER_GENERAL_BOOTSTRAPMETHOD=none ORDERER_CHANNELPARTICIPATION_ENABLED=true \
		ORDERER_GENERAL_TLS_ENABLED=true ORDERER_GENERAL_TLS_CERTIFICATE="$ORDERER_TLS/server.crt" \
		ORDERER_GENERAL_TLS_PRIVATEKEY="$ORDERER_TLS/server.key" ORDERER_GENERAL_TLS_ROOTCAS="[$ORDERER_TLS/ca.crt]" \
		ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE="$ORDERER_TLS/server.crt" \
		ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY="$ORDERER_TLS/server.key" ORDERER_GENERAL_CLUSTER_ROOTCAS="[$ORDERER_TLS/ca.crt]" \
		ORDERER_ADMIN_LISTENADDRESS="127.0.0.1:$ORDERER_ADMIN_PORT" ORDERER_ADMIN_TLS_ENABLED=true \
		ORDERER_ADMIN_TLS_CERTIFICATE="$ORDERER_TLS/server.crt" ORDERER_ADMIN_TLS_PRIVATEKEY="$ORDERER_TLS/server.key" \
		ORDERER_ADMIN_TLS_ROOTCAS="[$ORDERER_TLS/ca.crt]" ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED=true \
		ORDERER_ADMIN_TLS_CLIENTROOTCAS="[$ORDERER_TLS/ca.crt]" \
		ORDERER_OPERATIONS_LISTENADDRESS="127.0.0.1:$ORDERER_OPS_PORT" ORDERER_METRICS_PROVIDER=disabled \
		ORDERER_FILELEDGER_LOCATION="$STATE_DIR/data/orderer/ledger" \
		ORDERER_CONSENSUS_WALDIR="$STATE_DIR/data/orderer/etcdraft/wal" \
		ORDERER_CONSENSUS_SNAPDIR="$STATE_DIR/data/orderer/etcdraft/snapshot" \
		"$BIN_DIR/orderer"
}

join_orderer() {
	local out
	out=$("$BIN_DIR/osnadmin" channel list -o "127.0.0.1:$ORDERER_ADMIN_PORT" --ca-file "$ORDERER_TLS/ca.crt" \
		--client-cert "$ORDERER_ADMIN_TLS/client.crt" --client-key "$ORDERER_ADMIN_TLS/client.key" 2>&1) || true
	[[ $out == *"\"$CHANNEL\""* ]] && return 0
	retry "osnadmin channel join" "$BIN_DIR/osnadmin" channel join --channelID "$CHANNEL" \
		--config-block "$STATE_DIR/channel.block" -o "127.0.0.1:$ORDERER_ADMIN_PORT" --ca-file "$ORDERER_TLS/ca.crt" \
		--client-cert "$ORDERER_ADMIN_TLS/client.crt" --client-key "$ORDERER_ADMIN_TLS/client.key" >/dev/null
}

# ---- peers -----------------------------------------------------------------------------

# peer_env ORG: the environment of ORG's peer node.
peer_env() {
	local org=$1 port tls
	port=$(peer_port "$org")
	tls=$(org_dir "$org")/peers/peer0.$org.millwright.local/tls
	printf '%s\n' FABRIC_CFG_PATH="$STATE_DIR/config" FABRIC_LOGGING_SPEC=warn \
		CORE_PEER_ID="peer0.$org.millwright.local" CORE_PEER_LOCALMSPID="$org" \
		CORE_PEER_MSPCONFIGPATH="$(org_dir "$org")/peers/peer0.$org.millwright.local/msp" \
		CORE_PEER_ADDRESS="127.0.0.1:$port" CORE_PEER_LISTENADDRESS="127.0.0.1:$port" \
		CORE_PEER_CHAINCODEADDRESS="127.0.0.1:$((port + 1))" CORE_PEER_CHAINCODELISTENADDRESS="127.0.0.1:$((port + 1))" \
		CORE_PEER_GOSSIP_BOOTSTRAP="127.0.0.1:$port" CORE_PEER_GOSSIP_EXTERNALENDPOINT="127.0.0.1:$port" \
		CORE_PEER_TLS_ENABLED=true CORE_PEER_TLS_CERT_FILE="$tls/server.crt" CORE_PEER_TLS_KEY_FILE="$tls/server.key" \
		CORE_PEER_TLS_ROOTCERT_FILE="$tls/ca.crt" \
		CORE_PEER_FILESYSTEMPATH="$STATE_DIR/data/peer-$org" \
		CORE_LEDGER_SNAPSHOTS_ROOTDIR="$STATE_DIR/data/peer-$org/snapshots" \
		CORE_OPERATIONS_LISTENADDRESS="127.0.0.1:$((port + 2))" CORE_METRICS_PROVIDER=disabled \
		CORE_VM_ENDPOINT= CORE_CHAINCODE_MODE=net \
		CORE_PEER_GOSSIP_ALIVETIMEINTERVAL=1s CORE_PEER_GOSSIP_ALIVEEXPIRATIONTIMEOUT=5s \
		CORE_PEER_GOSSIP_RECONNECTINTERVAL=2s CORE_PEER_GOSSIP_PULLINTERVAL=1s \
		CORE_PEER_GOSSIP_MEMBERSHIPTRACKERINTERVAL=1s
}

start_peer() {
	local org=$1 env=()
	our_pid "peer-$org" >/dev/null && return 0
	mapfile -t env < <(peer_env "$org")
	start "peer-$org" "$BIN_DIR/peer" env "${env[@]}" "$BIN_DIR/peer" node start
}

# admin ORG CMD...: run a peer CLI command as ORG's admin against ORG's peer.
admin() {
	local org=$1 env=() port
	shift
	port=$(peer_port "$org")
	mapfile -t env < <(peer_env "$org")
	env "${env[@]}" CORE_PEER_MSPCONFIGPATH="$(org_dir "$org")/users/Admin@$org.millwright.local/msp" \
		"$BIN_DIR/peer" "$@"
}

ORDERER_FLAGS=(-o "127.0.0.1:$ORDERER_PORT" --tls --cafile "$ORDERER_TLS/ca.crt")

join_peer() {
	local org=$1
	admin "$org" channel getinfo -c "$CHANNEL" >/dev/null 2>&1 && return 0
	retry "peer-$org channel join" admin "$org" channel join -b "$STATE_DIR/channel.block" >/dev/null
}

# ---- chaincode -------------------------------------------------------------------------

# package_cc ORG: the chaincode-as-a-service package of ORG's chaincode server; prints
# its path. The package id differs per organisation since the address does.
package_cc() {
	local org=$1 dir
	dir=$STATE_DIR/chaincode/$org
	if [[ ! -f $dir/$CC_NAME.tar.gz ]]; then
		mkdir -p "$dir/pkg"
		printf '{"address":"127.0.0.1:%s","dial_timeout":"10s","tls_required":false}\n' "$(cc_port "$org")" >"$dir/pkg/connection.json"
		printf '{"type":"ccaas","label":"%s"}\n' "$CC_NAME" >"$dir/pkg/metadata.json"
		tar -C "$dir/pkg" -czf "$dir/pkg/code.tar.gz" connection.json
		tar -C "$dir/pkg" -czf "$dir/$CC_NAME.tar.gz" metadata.json code.tar.gz
	fi
	echo "$dir/$CC_NAME.tar.gz"
}

package_id() {
	local pkg
	pkg=$(package_cc "$1")
	FABRIC_CFG_PATH=$STATE_DIR/config "$BIN_DIR/peer" lifecycle chaincode calculatepackageid "$pkg"
}

start_chaincode() {
	local org=$1 id
	our_pid "chaincode-$org" >/dev/null && return 0
	id=$(package_id "$org")
	start "chaincode-$org" "$STATE_DIR/bin/lineage-cc" env LINEAGE_CC_ADDRESS="127.0.0.1:$(cc_port "$org")" LINEAGE_CC_ID="$id" \
		"$STATE_DIR/bin/lineage-cc"
}

install_cc() {
	local org=$1 id
	id=$(package_id "$org")
	admin "$org" lifecycle chaincode queryinstalled 2>/dev/null | grep -qF "$id" && return 0
	retry "peer-$org chaincode install" admin "$org" lifecycle chaincode install "$(package_cc "$org")" >/dev/null
}

approve_cc() {
	local org=$1
	admin "$org" lifecycle chaincode queryapproved -C "$CHANNEL" -n "$CC_NAME" --sequence "$CC_SEQUENCE" >/dev/null 2>&1 && return 0
	retry "peer-$org chaincode approve" admin "$org" lifecycle chaincode approveformyorg "${ORDERER_FLAGS[@]}" \
		-C "$CHANNEL" -n "$CC_NAME" --version "$CC_VERSION" --sequence "$CC_SEQUENCE" \
		--package-id "$(package_id "$org")" --waitForEvent >/dev/null
}

commit_cc() {
	local org args=()
	admin "${PEER_ORGS[0]}" lifecycle chaincode querycommitted -C "$CHANNEL" -n "$CC_NAME" >/dev/null 2>&1 && return 0
	for org in "${PEER_ORGS[@]}"; do
		args+=(--peerAddresses "127.0.0.1:$(peer_port "$org")" --tlsRootCertFiles "$(org_dir "$org")/peers/peer0.$org.millwright.local/tls/ca.crt")
	done
	retry "chaincode commit" admin "${PEER_ORGS[0]}" lifecycle chaincode commit "${ORDERER_FLAGS[@]}" \
		-C "$CHANNEL" -n "$CC_NAME" --version "$CC_VERSION" --sequence "$CC_SEQUENCE" "${args[@]}" --waitForEvent >/dev/null
}

# ---- env -------------------------------------------------------------------------------

write_env() {
	local org var dir peer tmp=$STATE_DIR/env.tmp
	{
		echo "# Written by deploy/fabric/network.sh: source it to reach the lineage network."
		echo "export MILLWRIGHT_FABRIC=1"
		echo "export MILLWRIGHT_FABRIC_DIR=$STATE_DIR"
		echo "export MILLWRIGHT_FABRIC_CHANNEL=$CHANNEL"
		echo "export MILLWRIGHT_FABRIC_CHAINCODE=$CC_NAME"
		echo "export MILLWRIGHT_FABRIC_ORGS=\"${CLIENT_ORGS[*]}\""
		echo "export MILLWRIGHT_FABRIC_PEER_ORGS=\"${PEER_ORGS[*]}\""
		echo "export MILLWRIGHT_FABRIC_BATCH_TIMEOUT=$BATCH_TIMEOUT"
		echo "export MILLWRIGHT_FABRIC_MAX_MESSAGE_COUNT=$MAX_MESSAGE_COUNT"
		for org in "${CLIENT_ORGS[@]}"; do
			var=MILLWRIGHT_FABRIC_$(tr 'a-z-' 'A-Z_' <<<"$org")
			dir=$(org_dir "$org")
			# An organisation without a peer reaches the network through the first peer.
			peer=$org
			peer_index "$org" >/dev/null || peer=${PEER_ORGS[0]}
			echo "export ${var}_MSP_ID=$org"
			echo "export ${var}_PEER_ENDPOINT=127.0.0.1:$(peer_port "$peer")"
			echo "export ${var}_PEER_HOST_ALIAS=peer0.$peer.millwright.local"
			echo "export ${var}_TLS_CA=$(org_dir "$peer")/peers/peer0.$peer.millwright.local/tls/ca.crt"
			echo "export ${var}_CERT=$dir/users/User1@$org.millwright.local/msp/signcerts/User1@$org.millwright.local-cert.pem"
			echo "export ${var}_KEY=$dir/users/User1@$org.millwright.local/msp/keystore/priv_sk"
		done
	} >"$tmp"
	mv "$tmp" "$STATE_DIR/env"
}

# ---- commands --------------------------------------------------------------------------

up() {
	local org t0=$SECONDS
	if [[ -f $STATE_DIR/env ]] && status >/dev/null; then
		log "already up ($STATE_DIR/env)"
		return 0
	fi
	mkdir -p "$STATE_DIR/log" "$STATE_DIR/run"
	build_tools
	generate
	start_orderer
	for org in "${PEER_ORGS[@]}"; do start_peer "$org"; done
	wait_port orderer "$ORDERER_ADMIN_PORT"
	join_orderer
	for org in "${PEER_ORGS[@]}"; do wait_port "peer-$org" "$(peer_port "$org")"; done
	for org in "${PEER_ORGS[@]}"; do join_peer "$org"; done
	for org in "${PEER_ORGS[@]}"; do start_chaincode "$org"; done
	in_parallel install_cc "${PEER_ORGS[@]}"
	in_parallel approve_cc "${PEER_ORGS[@]}"
	commit_cc
	for org in "${PEER_ORGS[@]}"; do wait_port "chaincode-$org" "$(cc_port "$org")"; done
	write_env
	log "up in $((SECONDS - t0))s: channel $CHANNEL, chaincode $CC_NAME; env in $STATE_DIR/env"
}

# in_parallel FUNC ORG...: run FUNC ORG for every ORG at once; fail if one failed.
in_parallel() {
	local fn=$1 org pids=() pid rc=0
	shift
	for org in "$@"; do
		"$fn" "$org" &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
	((rc == 0)) || die "$fn failed (logs in $STATE_DIR/log)"
}

down() {
	local name pid pids=() names=() i
	for name in $(process_names | tac); do
		if pid=$(our_pid "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			names+=("$name")
		fi
	done
	# TERM to all at once, then wait up to 10 s for each before KILL.
	for i in "${!pids[@]}"; do
		stop_pid "${pids[$i]}"
		log "stopped ${names[$i]} (pid ${pids[$i]})"
	done
	for name in $(process_names); do rm -f "$(pid_file "$name")"; done
	if [[ -d $STATE_DIR ]]; then
		rm -rf "$STATE_DIR"
		log "removed $STATE_DIR"
	fi
}

status() {
	local name pid rc=0
	for name in $(process_names); do
		if pid=$(our_pid "$name"); then
			printf '%-20s running (pid %s)\n' "$name" "$pid"
		else
			printf '%-20s stopped\n' "$name"
			rc=3
		fi
	done
	return $rc
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
