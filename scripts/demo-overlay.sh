#!/usr/bin/env bash
# weft multi-host demo: seed 000's dataflow on one machine. A controller, two cells (hosts)
# with an agent each on a simulated underlay, three containers, VXLAN between the cells, and
# default-deny policy: AppB (cell 1) reaches AppA (cell 2) only after `weft policy add`.
# Everything lives in network namespaces this script creates and removes (198.18.0.0/24 is
# the underlay inside them; nothing is routed out of this machine).
# Usage: sudo scripts/demo-overlay.sh
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (it creates network namespaces)"; exit 1; }
# WEFT_BIN=DIR uses binaries already built there instead of building a release.
if [ -n "${WEFT_BIN:-}" ]; then B=$WEFT_BIN; else cargo build --release -q -p weft && B=$PWD/target/release; fi
P=wov$$
U=$P-under D=$(mktemp -d)
NSS="$U $P-cell1 $P-cell2 $P-appb $P-appa $P-appc"
cleanup() {
  for n in $NSS; do ip netns pids $n 2>/dev/null | xargs -r kill 2>/dev/null; done
  sleep 0.3
  for n in $NSS; do "$B/weft" netns del $n 2>/dev/null; done
  rm -rf "$D"
}
trap cleanup EXIT
trap "exit 130" INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
in_under() { ip netns exec $U env WEFT_CONTROLLER=http://198.18.0.254:7070 WEFT_TOKEN=demo "$@"; }

step "underlay: a bridge in its own namespace; two cells (hosts) on it"
for n in $NSS; do "$B/weft" netns add $n; done
ip -n $U link add br0 type bridge; ip -n $U link set br0 up; ip -n $U addr add 198.18.0.254/24 dev br0
for i in 1 2; do
  ip -n $U link add u$i type veth peer name eth0 netns $P-cell$i; ip -n $U link set u$i master br0 up
  ip -n $P-cell$i addr add 198.18.0.$i/24 dev eth0; ip -n $P-cell$i link set eth0 up
done

step "weft controller (leases, apps, policies; SQLite) on the underlay"
ip netns exec $U "$B/weft" controller --insecure-http --listen 198.18.0.254:7070 --state-dir $D/ctl --token demo >$D/ctl.log 2>&1 &
for _ in $(seq 50); do in_under "$B/weft" leases list >/dev/null 2>&1 && break; sleep 0.1; done

step "weft agent on each cell: lease, VTEP (VXLAN + GBP), routes to the other cell, NAT, policy"
for i in 1 2; do
  ip netns exec $P-cell$i env WEFT_LOG=info "$B/weft" agent --controller http://198.18.0.254:7070 \
    --underlay-ip 198.18.0.$i --host cell$i --lease-file $D/c$i/lease.json --cni-data-dir $D/c$i/cni >$D/agent$i.log 2>&1 &
done
for _ in $(seq 100); do [ -f $D/c1/lease.json ] && [ -f $D/c2/lease.json ] && break; sleep 0.1; done
sleep 0.5
run in_under "$B/weft" leases list
run ip -n $P-cell1 -d link show weft.vtep
run ip -n $P-cell1 route show dev weft.vtep
run ip -n $P-cell1 neigh show dev weft.vtep
run bridge -n $P-cell1 fdb show dev weft.vtep

cni() { # CELL CONTAINER NETNS APP
  echo "{\"cniVersion\":\"1.1.0\",\"name\":\"overlay\",\"type\":\"weft-cni\",\"mode\":\"overlay\",\"leaseFile\":\"$D/$1/lease.json\",\"dataDir\":\"$D/$1/cni\"}" |
    ip netns exec $P-cell${1#c} env CNI_COMMAND=ADD CNI_CONTAINERID=$2 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_ARGS="WEFT_APP_ID=$4" "$B/weft-cni" >/dev/null
}
step "weft-cni (overlay mode): AppB on cell 1; AppA and AppC on cell 2"
cni c1 appb $P-appb app-b; cni c2 appa $P-appa app-a; cni c2 appc $P-appc app-c
ipof() { ip -n $1 -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
A=$(ipof $P-appa) Bb=$(ipof $P-appb) C=$(ipof $P-appc)
sleep 0.5
run ip netns exec $P-cell2 "$B/weft" containers --data-dir $D/c2/cni --lease-file $D/c2/lease.json
run ip -n $P-appb addr show eth0
run ip -n $P-appb route

serve() { ip netns exec $1 python3 -c "
import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', $2)); s.listen()
while True:
    c,a=s.accept(); c.sendall(b'hello from $1 port $2\n'); c.close()" >/dev/null 2>&1 & }
try() { ip netns exec $1 python3 -c "
import socket
try: print('  $3: ' + socket.create_connection(('$2', $4), 1).recv(100).decode().strip())
except Exception as e: print('  $3: DENIED (%s)' % e)"; }
serve $P-appa 8080; serve $P-appa 9090; serve $P-appb 8080; sleep 0.5
matrix() {
  try $P-appb $A "AppB -> AppA:8080" 8080
  try $P-appb $A "AppB -> AppA:9090" 9090
  try $P-appa $Bb "AppA -> AppB:8080" 8080
  try $P-appc $A "AppC -> AppA:8080 (same cell)" 8080
}
step "default deny: no policy yet"
matrix
step "weft policy add app-b app-a --port 8080 (pushed to the agents through the watch stream)"
run in_under "$B/weft" policy add app-b app-a --port 8080
sleep 0.2
matrix
run in_under "$B/weft" policy check app-b app-a 8080
run ip netns exec $P-cell2 nft list map inet weft-policy allow_ports
step "the overlay packet on the underlay: UDP 4789 between the cells, with the GBP tag"
ip netns exec $U timeout 2 tcpdump -ni br0 -c 2 'udp port 4789' 2>/dev/null &
TCPDUMP=$!; sleep 0.3; try $P-appb $A "AppB -> AppA:8080" 8080; wait $TCPDUMP
step "weft policy rm: new connections are refused again"
run in_under "$B/weft" policy rm app-b app-a --port 8080
sleep 0.2
matrix
echo; echo "demo done; namespaces are removed on exit"
