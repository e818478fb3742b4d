// An experiment, not part of weft: VXLAN-GBP encapsulation in tc BPF instead of the kernel
// VXLAN device (see README.md here). Built by run.sh with the addresses as -D constants.
// TX (tc ingress of a container's host veth): push outer Ethernet/IPv4/UDP/VXLAN-GBP/inner
// Ethernet headers, redirect to the underlay device. RX (tc ingress of the underlay device):
// strip them and bpf_redirect_peer() straight into the destination container.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#define SEC(n) __attribute__((section(n), used))
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 offset, const void *from, __u32 len, __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, __u32 offset, void *to, __u32 len) = (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_skb_adjust_room)(struct __sk_buff *skb, __s32 len_diff, __u32 mode, __u64 flags) = (void *)BPF_FUNC_skb_adjust_room;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size, __wsum seed) = (void *)BPF_FUNC_csum_diff;
static __u32 (*bpf_get_hash_recalc)(struct __sk_buff *skb) = (void *)BPF_FUNC_get_hash_recalc;

struct hdr { struct ethhdr eth; struct iphdr ip; struct udphdr udp; __u8 vx[8]; struct ethhdr ieth; } __attribute__((packed));

static __always_inline __u16 csum_fold(__u32 c) { c = (c & 0xffff) + (c >> 16); c = (c & 0xffff) + (c >> 16); return ~c; }

#ifdef TX
SEC("tc") int tx(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data; struct iphdr *ip = data + sizeof(*eth);
  if ((void *)(ip + 1) > end) return TC_ACT_OK;
  if (eth->h_proto != __builtin_bswap16(ETH_P_IP)) return TC_ACT_OK;
  if ((ip->daddr & 0x00ffffff) != RNET) return TC_ACT_OK;
  __u32 inner_len = skb->len;
  __u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(14);
  if (bpf_skb_adjust_room(skb, 50, BPF_ADJ_ROOM_MAC, flags)) return TC_ACT_SHOT;
  struct hdr h = {};
  unsigned char od[6] = { ODMAC }, os[6] = { OSMAC };
  __builtin_memcpy(h.eth.h_dest, od, 6); __builtin_memcpy(h.eth.h_source, os, 6); h.eth.h_proto = __builtin_bswap16(ETH_P_IP);
  h.ip.version = 4; h.ip.ihl = 5; h.ip.ttl = 64; h.ip.protocol = 17;
  h.ip.tot_len = __builtin_bswap16(inner_len - 14 + 50);
  h.ip.saddr = SADDR; h.ip.daddr = DADDR; h.ip.frag_off = __builtin_bswap16(0x4000);
  __u32 c = 0; __u16 *p = (__u16 *)(void *)&h.ip;
  #pragma unroll
  for (int i = 0; i < 10; i++) c += p[i];
  h.ip.check = csum_fold(c);
  h.udp.source = __builtin_bswap16(49152 + (bpf_get_hash_recalc(skb) & 0x3fff)); h.udp.dest = __builtin_bswap16(4789);
  h.udp.len = __builtin_bswap16(inner_len - 14 + 50 - 20); h.udp.check = 0;
  h.vx[0] = 0x88; h.vx[2] = (TAG >> 8) & 0xff; h.vx[3] = TAG & 0xff; h.vx[6] = 1; /* VNI 1 */
  unsigned char id[6] = { IDMAC }, is[6] = { ISMAC };
  __builtin_memcpy(h.ieth.h_dest, id, 6); __builtin_memcpy(h.ieth.h_source, is, 6); h.ieth.h_proto = __builtin_bswap16(ETH_P_IP);
  if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0)) return TC_ACT_SHOT;
  return bpf_redirect(OIF, 0);
}
#else
SEC("tc") int rx(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct hdr *h = data;
  if ((void *)(h + 1) > end) return TC_ACT_OK;
  if (h->eth.h_proto != __builtin_bswap16(ETH_P_IP) || h->ip.protocol != 17 || h->udp.dest != __builtin_bswap16(4789)) return TC_ACT_OK;
  struct iphdr *in = (void *)(h + 1);
  if ((void *)(in + 1) > end) return TC_ACT_OK;
  if (in->daddr != CIP) return TC_ACT_OK;
  __u32 tag = (h->vx[2] << 8) | h->vx[3];
  if (bpf_skb_adjust_room(skb, -50, BPF_ADJ_ROOM_MAC, (1ULL << 7) /* BPF_F_ADJ_ROOM_DECAP_L3_IPV4, kernel 6.3+ */)) return TC_ACT_SHOT;
  unsigned char m[12] = { CMAC, HMAC };
  bpf_skb_store_bytes(skb, 0, m, 12, 0);
  skb->mark = tag;
  return bpf_redirect_peer(HIF, 0);
}
#endif
char _license[] SEC("license") = "GPL";
