// SPDX-License-Identifier: GPL-2.0
// weft's overlay fast path: VXLAN-GBP encapsulation and decapsulation in tc BPF for the
// packets of connections the kernel path has already let through.
//
// The kernel path (the cell's routing, `inet weft-policy`, the VXLAN device `weft.vtep`)
// decides every connection: its first packets (TCP handshake), UDP, ICMP, fragments and
// anything these programs do not recognise go there unchanged (TC_ACT_OK). Once conntrack
// holds the connection as ESTABLISHED (the destination's policy let it through and the
// reply came back), its further packets are carried here instead:
//
//   weft_tx  tc ingress of a container's host veth: the source address must be the
//            container's own (anti-spoofing), the destination in another host's subnet;
//            push outer Ethernet/IPv4/UDP/VXLAN-GBP (the app's tag)/inner Ethernet and
//            hand the packet to the underlay device (bpf_redirect_neigh: FIB + neighbour).
//   weft_rx  tc ingress of the underlay device: VXLAN to our port and VNI whose inner source
//            lies in the lease of the host that sent it (the `remotes` entry for the inner
//            source names the outer source as its underlay address: the kernel path's
//            `cell_subnets` rule), for a local container; strip 50 bytes and deliver into
//            the container's namespace (bpf_redirect_peer).
//
// Fail-closed: every map lookup that misses (a full map the agent could not fill, a key it
// has not written yet or has removed) and every check that fails hands the packet to the
// kernel path unchanged (TC_ACT_OK), where `inet weft-policy` decides; the programs only ever
// deliver what conntrack already holds as an established connection of the kernel path.
//
// Packets are byte for byte what the VXLAN device would send, so either side may run
// without the fast path. TCP SYN/FIN/RST always take the kernel path, so conntrack sees
// every connection open and close. The agent fills the maps (see fastpath.rs).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#define SEC(n) __attribute__((section(n), used))
#define __ksym __attribute__((section(".ksyms")))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define INLINE static __always_inline
#define bswap16 __builtin_bswap16
#define bswap32 __builtin_bswap32

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
                                  __u64 flags) = (void *)BPF_FUNC_redirect_neigh;
static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 offset, const void *from,
                                   __u32 len, __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_skb_adjust_room)(struct __sk_buff *skb, __s32 len_diff, __u32 mode,
                                   __u64 flags) = (void *)BPF_FUNC_skb_adjust_room;
static __u32 (*bpf_get_hash_recalc)(struct __sk_buff *skb) = (void *)BPF_FUNC_get_hash_recalc;

// Conntrack, through the kernel's kfuncs (6.0+). Field offsets are relocated against the
// running kernel's BTF (CO-RE), so only the fields read here are declared.
struct ip_ct_tcp {
  __u8 state;
} __attribute__((preserve_access_index));
union nf_conntrack_proto {
  struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));
struct nf_conn {
  unsigned long status;
  union nf_conntrack_proto proto;
} __attribute__((preserve_access_index));
struct bpf_ct_opts {
  __s32 netns_id;
  __s32 error;
  __u8 l4proto;
  __u8 dir;
  __u16 ct_zone_id;
  __u8 ct_zone_dir;
  __u8 reserved[3];
};
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
                                         __u32 tuple__sz, struct bpf_ct_opts *opts,
                                         __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

#define TCP_CONNTRACK_ESTABLISHED 3
#define IPS_NAT_MASK ((1 << 4) | (1 << 5)) /* IPS_SRC_NAT | IPS_DST_NAT */
#define EINVAL 22

// ---- maps (the agent's desired state; layouts mirror fastpath.rs) ----

// A local container, by its overlay address (network order).
struct endpoint {
  __u32 ifindex;   // host end of its veth
  __u16 tag;       // its app's tag (0: none)
  __u8 mac[6];     // container end's MAC
  __u8 host_mac[6];
  __u16 pad;
};
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u32);
  __type(value, struct endpoint);
} endpoints SEC(".maps");

// Another host's subnet -> its underlay address and VTEP MAC.
struct remote_key {
  __u32 prefixlen;
  __u32 addr;
};
struct remote {
  __u32 underlay;  // network order
  __u8 vtep_mac[6];
  __u16 pad;
};
struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 65536);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct remote_key);
  __type(value, struct remote);
} remotes SEC(".maps");

struct config {
  __u32 underlay_ip;       // network order
  __u32 underlay_ifindex;
  __u32 vni;
  __u16 port;
  __u8 vtep_mac[6];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct config);
} config SEC(".maps");

enum { TX_PACKETS, TX_BYTES, RX_PACKETS, RX_BYTES, STATS };
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, STATS);
  __type(key, __u32);
  __type(value, __u64);
} stats SEC(".maps");

INLINE void count(__u32 packets, __u64 bytes) {
  __u32 k = packets;
  __u64 *v = bpf_map_lookup_elem(&stats, &k);
  if (v) *v += 1;
  k = packets + 1;
  v = bpf_map_lookup_elem(&stats, &k);
  if (v) *v += bytes;
}

// An unfragmented IPv4 TCP packet without SYN/FIN/RST.
INLINE struct tcphdr *plain_tcp(struct iphdr *ip, void *end) {
  if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_TCP) return 0;
  if (ip->frag_off & bswap16(0x3fff)) return 0;
  struct tcphdr *th = (void *)(ip + 1);
  if ((void *)(th + 1) > end || th->syn || th->fin || th->rst) return 0;
  return th;
}

// Whether conntrack holds this connection as ESTABLISHED, without NAT.
INLINE int established(struct __sk_buff *skb, struct iphdr *ip, struct tcphdr *th) {
  struct bpf_sock_tuple t = {};
  t.ipv4.saddr = ip->saddr;
  t.ipv4.daddr = ip->daddr;
  t.ipv4.sport = th->source;
  t.ipv4.dport = th->dest;
  struct bpf_ct_opts o = {.netns_id = -1, .l4proto = IPPROTO_TCP};
  struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &o, sizeof(o));
  if (!ct && o.error == -EINVAL) {
    // Kernels before 6.7 know the 12-byte options only.
    struct bpf_ct_opts o12 = {.netns_id = -1, .l4proto = IPPROTO_TCP};
    ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &o12, 12);
  }
  if (!ct) return 0;
  int ok = ct->proto.tcp.state == TCP_CONNTRACK_ESTABLISHED && !(ct->status & IPS_NAT_MASK);
  bpf_ct_release(ct);
  return ok;
}

struct vxlan_hdr {
  struct ethhdr eth;
  struct iphdr ip;
  struct udphdr udp;
  __u8 vx[8];
  struct ethhdr inner;
} __attribute__((packed));

#define VXLAN_LEN (sizeof(struct vxlan_hdr) - sizeof(struct ethhdr)) /* 50 */

SEC("tc") int weft_tx(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  struct iphdr *ip = data + sizeof(*eth);
  if ((void *)(ip + 1) > end || eth->h_proto != bswap16(ETH_P_IP)) return TC_ACT_OK;
  struct tcphdr *th = plain_tcp(ip, end);
  if (!th) return TC_ACT_OK;
  __u32 saddr = ip->saddr;
  struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &saddr);
  if (!ep || ep->ifindex != skb->ingress_ifindex) return TC_ACT_OK;
  struct remote_key rk = {.prefixlen = 32, .addr = ip->daddr};
  struct remote *r = bpf_map_lookup_elem(&remotes, &rk);
  __u32 zero = 0;
  struct config *cfg = bpf_map_lookup_elem(&config, &zero);
  if (!r || !cfg) return TC_ACT_OK;
  if (!established(skb, ip, th)) return TC_ACT_OK;

  __u16 tag = ep->tag;
  __u32 len = skb->len; /* inner frame, Ethernet header included */
  struct vxlan_hdr h = {};
  __builtin_memcpy(h.eth.h_source, cfg->vtep_mac, 6); /* replaced by bpf_redirect_neigh */
  h.eth.h_proto = bswap16(ETH_P_IP);
  h.ip.version = 4;
  h.ip.ihl = 5;
  h.ip.ttl = 64;
  h.ip.protocol = IPPROTO_UDP;
  h.ip.frag_off = bswap16(0x4000); /* DF: the overlay MTU already leaves room */
  h.ip.tot_len = bswap16(len - sizeof(struct ethhdr) + VXLAN_LEN);
  h.ip.saddr = cfg->underlay_ip;
  h.ip.daddr = r->underlay;
  __u32 c = 0;
  __u16 *p = (__u16 *)(void *)&h.ip;
#pragma unroll
  for (int i = 0; i < 10; i++) c += p[i];
  c = (c & 0xffff) + (c >> 16);
  c = (c & 0xffff) + (c >> 16);
  h.ip.check = (__u16)~c;
  /* Source port from the inner flow's hash, like the VXLAN device (ECMP entropy). */
  h.udp.source = bswap16(32768 + (bpf_get_hash_recalc(skb) % 28232));
  h.udp.dest = bswap16(cfg->port);
  h.udp.len = bswap16(len - sizeof(struct ethhdr) + VXLAN_LEN - sizeof(struct iphdr));
  h.vx[0] = tag ? 0x88 : 0x08; /* G (group policy) + I (VNI valid) */
  h.vx[2] = tag >> 8;
  h.vx[3] = tag & 0xff;
  h.vx[4] = cfg->vni >> 16;
  h.vx[5] = cfg->vni >> 8;
  h.vx[6] = cfg->vni;
  __builtin_memcpy(h.inner.h_dest, r->vtep_mac, 6);
  __builtin_memcpy(h.inner.h_source, cfg->vtep_mac, 6);
  h.inner.h_proto = bswap16(ETH_P_IP);
  __u32 oif = cfg->underlay_ifindex;

  __u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
                BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr)) |
                BPF_F_ADJ_ROOM_FIXED_GSO;
  if (bpf_skb_adjust_room(skb, VXLAN_LEN, BPF_ADJ_ROOM_MAC, flags)) return TC_ACT_OK;
  if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0)) return TC_ACT_SHOT;
  count(TX_PACKETS, len);
  return bpf_redirect_neigh(oif, 0, 0, 0);
}

SEC("tc") int weft_rx(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct vxlan_hdr *h = data;
  if ((void *)(h + 1) > end) return TC_ACT_OK;
  if (h->eth.h_proto != bswap16(ETH_P_IP) || h->ip.ihl != 5 || h->ip.protocol != IPPROTO_UDP)
    return TC_ACT_OK;
  if (h->ip.frag_off & bswap16(0x3fff)) return TC_ACT_OK;
  __u32 zero = 0;
  struct config *cfg = bpf_map_lookup_elem(&config, &zero);
  if (!cfg || h->udp.dest != bswap16(cfg->port) || h->ip.daddr != cfg->underlay_ip)
    return TC_ACT_OK;
  __u32 vni = ((__u32)h->vx[4] << 16) | ((__u32)h->vx[5] << 8) | h->vx[6];
  if (!(h->vx[0] & 0x08) || vni != cfg->vni) return TC_ACT_OK;
  if (h->inner.h_proto != bswap16(ETH_P_IP)) return TC_ACT_OK;
  struct iphdr *in = (void *)(h + 1);
  struct tcphdr *th = plain_tcp(in, end);
  if (!th) return TC_ACT_OK;
  /* The inner source must be in the sender's lease; otherwise the kernel path drops it. */
  struct remote_key sk = {.prefixlen = 32, .addr = in->saddr};
  struct remote *sender = bpf_map_lookup_elem(&remotes, &sk);
  if (!sender || sender->underlay != h->ip.saddr) return TC_ACT_OK;
  __u32 daddr = in->daddr;
  struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &daddr);
  if (!ep) return TC_ACT_OK;
  if (!established(skb, in, th)) return TC_ACT_OK;

  __u32 ifindex = ep->ifindex;
  unsigned char macs[12];
  __builtin_memcpy(macs, ep->mac, 6);
  __builtin_memcpy(macs + 6, ep->host_mac, 6);
  if (bpf_skb_adjust_room(skb, -(__s32)VXLAN_LEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
    return TC_ACT_OK;
  if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0)) return TC_ACT_SHOT;
  count(RX_PACKETS, skb->len);
  return bpf_redirect_peer(ifindex, 0);
}

char _license[] SEC("license") = "GPL";
