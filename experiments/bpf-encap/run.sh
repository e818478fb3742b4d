#!/usr/bin/env bash
# Reproduces the measurement in README.md: one TCP stream (iperf3) container -> container,
# bridge mode on one host vs the overlay across two cells through the kernel VXLAN device vs
# the same overlay with encap/decap done by the tc BPF programs in encap.c, interleaved.
# Needs: root, clang, iperf3, python3, a built weft (WEFT=path, default target/release/weft).
# Everything runs in two labs of namespaces (wl-bpfov.*, wl-bpfbr.*), removed on exit.
set -euo pipefail
cd "$(dirname "$0")"
W=${WEFT:-../../target/release/weft}
ROUNDS=${ROUNDS:-5}
D=$(mktemp -d)
cleanup() { "$W" lab down bpfov -q >/dev/null 2>&1 || true; "$W" lab down bpfbr -q >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT
cat > "$D/ov.toml" <<T
name = "bpfov"
[overlay]
policy = false
[[cells]]
name = "cell1"
[[cells]]
name = "cell2"
[[apps]]
name = "a"
cells = ["cell1", "cell2"]
T
cat > "$D/br.toml" <<T
name = "bpfbr"
[[cells]]
name = "host"
mode = "bridge"
[[apps]]
name = "a"
cells = ["host", "host"]
T
"$W" lab up "$D/ov.toml" -q >/dev/null
"$W" lab up "$D/br.toml" -q >/dev/null
st() { "$W" lab status "$1" --json; }
field() { python3 -c "import json,sys; s=json.load(sys.stdin)[0]; print([c['$2'] for c in s['containers'] if c['name']=='$1'][0])"; }
IP0=$(st bpfov | field a-0 ip); IP1=$(st bpfov | field a-1 ip)
HV0=$(st bpfov | field a-0 host_veth); HV1=$(st bpfov | field a-1 host_veth)
BR0=$(st bpfbr | field a-0 ip); BR1=$(st bpfbr | field a-1 ip)
C1=wl-bpfov.cell1 C2=wl-bpfov.cell2
mac_of() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }
idx_of() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])'; }
carr() { echo "$1" | sed 's/^/0x/; s/:/,0x/g'; }               # aa:bb:.. -> 0xaa,0xbb,..
be32() { python3 -c "import ipaddress,sys; print(hex(int.from_bytes(ipaddress.ip_address('$1').packed,'little')))"; }
net24() { python3 -c "import ipaddress; print(hex(int.from_bytes(ipaddress.ip_address('$1').packed[:3]+b'\0','little')))"; }
cmac() { python3 -c "import ipaddress; b=ipaddress.ip_address('$2').packed; print(','.join('0x%02x'%x for x in bytes([0x0a,$1])+b))"; }
U1=$(ip -n $C1 -4 -j addr show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')
U2=$(ip -n $C2 -4 -j addr show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')
E1=$(mac_of $C1 eth0) E2=$(mac_of $C2 eth0) V1=$(mac_of $C1 weft.vtep) V2=$(mac_of $C2 weft.vtep)
CC="clang -O2 -target bpf -I/usr/include/$(uname -m)-linux-gnu -c encap.c"
# cell1 -> cell2 (TX on cell1, RX on cell2) and back.
$CC -o "$D/tx1.o" -DTX -DRNET=$(net24 $IP1) -DODMAC=$(carr $E2) -DOSMAC=$(carr $E1) -DIDMAC=$(carr $V2) -DISMAC=$(carr $V1) -DSADDR=$(be32 $U1) -DDADDR=$(be32 $U2) -DTAG=1 -DOIF=$(idx_of $C1 eth0)
$CC -o "$D/rx2.o" -DCIP=$(be32 $IP1) -DCMAC=$(cmac 0x58 $IP1) -DHMAC=$(cmac 0x59 $IP1) -DHIF=$(idx_of $C2 $HV1)
$CC -o "$D/tx2.o" -DTX -DRNET=$(net24 $IP0) -DODMAC=$(carr $E1) -DOSMAC=$(carr $E2) -DIDMAC=$(carr $V1) -DISMAC=$(carr $V2) -DSADDR=$(be32 $U2) -DDADDR=$(be32 $U1) -DTAG=1 -DOIF=$(idx_of $C2 eth0)
$CC -o "$D/rx1.o" -DCIP=$(be32 $IP0) -DCMAC=$(cmac 0x58 $IP0) -DHMAC=$(cmac 0x59 $IP0) -DHIF=$(idx_of $C1 $HV0)
for x in "$C1 eth0" "$C2 eth0" "$C1 $HV0" "$C2 $HV1"; do set -- $x; ip netns exec $1 tc qdisc add dev $2 clsact; done
on() {
  ip netns exec $C1 tc filter add dev $HV0 ingress bpf da obj "$D/tx1.o" sec tc
  ip netns exec $C2 tc filter add dev eth0 ingress bpf da obj "$D/rx2.o" sec tc
  ip netns exec $C2 tc filter add dev $HV1 ingress bpf da obj "$D/tx2.o" sec tc
  ip netns exec $C1 tc filter add dev eth0 ingress bpf da obj "$D/rx1.o" sec tc
}
off() { for x in "$C1 eth0" "$C2 eth0" "$C1 $HV0" "$C2 $HV1"; do set -- $x; ip netns exec $1 tc filter del dev $2 ingress; done; }
gbit() { # SERVER_NS CLIENT_NS DST
  ip netns exec $1 iperf3 -s -1 -D -p 5201 >/dev/null 2>&1; sleep 0.3
  ip netns exec $2 iperf3 -c $3 -p 5201 -t 3 -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
rtt() { ip netns exec $1 ping -q -c 200 -i 0.005 $2 | python3 -c 'import sys; l=[x for x in sys.stdin if "rtt" in x][0]; print(l.split("=")[1].split("/")[1])'; }
on; ip netns exec wl-bpfov.a-0 ping -c 1 -W 1 $IP1 >/dev/null || { echo "BPF path does not pass traffic"; exit 1; }; off
echo "| round | bridge Gbit/s | overlay, kernel VXLAN | overlay, tc BPF encap | VXLAN/bridge | BPF/bridge |"
echo "|---|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  b=$(gbit wl-bpfbr.a-1 wl-bpfbr.a-0 $BR1); v=$(gbit wl-bpfov.a-1 wl-bpfov.a-0 $IP1)
  on; e=$(gbit wl-bpfov.a-1 wl-bpfov.a-0 $IP1); off
  python3 -c "print('| $r | $b | $v | $e | %.0f%% | %.0f%% |' % (100*$v/$b, 100*$e/$b))"
done
echo "ping RTT avg (ms): bridge $(rtt wl-bpfbr.a-0 $BR1), kernel VXLAN $(rtt wl-bpfov.a-0 $IP1), BPF $(on; rtt wl-bpfov.a-0 $IP1; off)"
