#!/usr/bin/env bash
# weft bridge-mode demo: seed 003 done by weft-cni, on one machine, entirely inside network
# namespaces this script creates (a "host", two containers, an "internet") and removes again.
# Usage: sudo scripts/demo-bridge.sh   (builds weft and weft-cni first if needed)
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (it creates network namespaces)"; exit 1; }
cargo build --release -q -p weft -p weft-cni
BIN=$PWD/target/release
P=wdemo$$
HOST=$P-host C1=$P-c1 C2=$P-c2 NET=$P-inet
DATA=$(mktemp -d)
cleanup() {
  for n in $HOST $C1 $C2 $NET; do ip netns pids $n 2>/dev/null | xargs -r kill 2>/dev/null || true; "$BIN/weft" netns del $n 2>/dev/null || true; done
  rm -rf "$DATA"
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT
trap "exit 130" INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "namespaces (seed 002): weft netns add brings lo up"
for n in $HOST $C1 $C2 $NET; do run "$BIN/weft" netns add $n; done
run "$BIN/weft" netns list

step "an 'internet' next to the host (203.0.113.0/24 exists only inside these namespaces)"
ip -n $HOST link add up0 type veth peer name up0 netns $NET
ip -n $HOST addr add 203.0.113.1/24 dev up0; ip -n $HOST link set up0 up
ip -n $NET addr add 203.0.113.2/24 dev up0; ip -n $NET link set up0 up
ip -n $HOST route add default via 203.0.113.2

CONF=$(cat <<JSON
{"cniVersion":"1.1.0","name":"demo","type":"weft-cni","bridge":"weft0","ipMasq":true,"hairpinMode":true,
 "dataDir":"$DATA","ipam":{"subnet":"10.88.0.0/24"},
 "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}
JSON
)
cni() { # cni CMD CONTAINER NETNS
  echo "$CONF" | ip netns exec $HOST env CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$BIN "$BIN/weft-cni"
}

step "weft-cni ADD: veth pair, bridge, address, default route, masquerade, port 8080 -> c1:80"
cni ADD c1 $C1 | python3 -m json.tool
CONF=$(echo "$CONF" | sed 's/"portMappings":\[[^]]*\]/"portMappings":[]/')
cni ADD c2 $C2 >/dev/null
run ip -n $C1 -br addr show eth0
run ip -n $C1 route
run ip -n $HOST -br link show master weft0

step "container to container, and to the bridge (gateway)"
run ip netns exec $C1 ping -c 2 -w 3 10.88.0.3
run ip netns exec $C1 ping -c 1 -w 3 10.88.0.1

step "masquerade: the internet sees the host's address, not the container's"
ip netns exec $NET python3 -c '
import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("203.0.113.2", 9000)); s.listen()
c,a=s.accept(); c.sendall(("you are %s\n" % a[0]).encode())' &
for _ in $(seq 50); do ip netns exec $NET ss -ltn | grep -q ':9000' && break; sleep 0.1; done
run ip netns exec $C1 python3 -c 'import socket; print(socket.create_connection(("203.0.113.2", 9000), 3).recv(100).decode().strip())'
run ip netns exec $HOST nft list table inet weft-demo

step "port mapping: the internet reaches c1:80 at the host's 203.0.113.1:8080"
# A tiny web server (python's http.server would do a reverse DNS lookup at start).
ip netns exec $C1 python3 -c '
import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 80)); s.listen()
while True:
    c,a=s.accept(); c.recv(1000); c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"); c.close()' &
for _ in $(seq 50); do ip netns exec $C1 bash -c 'exec 3<>/dev/tcp/10.88.0.2/80' 2>/dev/null && break; sleep 0.1; done
run ip netns exec $NET curl -s -o /dev/null -w 'HTTP %{http_code} from 203.0.113.1:8080\n' http://203.0.113.1:8080/

run ip netns exec $HOST curl -s -o /dev/null -w "HTTP %{http_code} from 127.0.0.1:8080\n" http://127.0.0.1:8080/
run ip netns exec $C1 curl -s -o /dev/null -w 'HTTP %{http_code} from c1 itself via 203.0.113.1:8080 (hairpin)\n' http://203.0.113.1:8080/
step "weft-cni DEL: everything of the containers goes away"
cni DEL c1 $C1; cni DEL c2 $C2
run ip -n $HOST -br link show master weft0
echo; echo "demo done; namespaces are removed on exit"
