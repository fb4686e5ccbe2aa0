/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Strata policy datapath: TC (clsact) programs for the host-side veth of each pod.
 *
 *   from_pod  clsact ingress of the veth: packets leaving the pod, the pod's egress policy
 *   to_pod    clsact egress of the veth:  packets entering the pod, the pod's ingress policy
 *
 * Per packet: endpoint by ifindex (hash), peer identity from the ipcache (host hash, then
 * LPM), conntrack (LRU hash: reply and ICMP-error lookups, then refresh or create; a forward
 * packet of a connection allowed under the current map generation reuses that verdict), and
 * otherwise exactly two policy lookups, peer identity then identity 0, each an
 * exact hash then an LPM (the longest match either way): deny wins, then allow, then the
 * direction's default (deny when the endpoint is isolated). No lookup count depends on the
 * number of rules.
 * IPv4 and IPv6 fragments are dropped with their own reason (STRATA_REASON_DROP_FRAGMENT).
 *
 * Every decision here has a twin in src/twin.rs; tests/differential.rs proves they agree.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "strata.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_ICMPV6 58
#define IPPROTO_DSTOPTS 60
#define IPPROTO_SCTP 132

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_RST 0x04

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STRATA_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct strata_endpoint);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, STRATA_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strata_ipcache_key);
	__type(value, struct strata_ipcache_value);
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, STRATA_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strata_policy_key);
	__type(value, struct strata_policy_value);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STRATA_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strata_host);
	__type(value, struct strata_ipcache_value);
} ipcache_hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STRATA_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct strata_policy_match);
	__type(value, struct strata_policy_value);
} policy_exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, STRATA_CT_MAX);
	__type(key, struct strata_ct_key);
	__type(value, struct strata_ct_value);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STRATA_COUNTERS);
	__type(key, __u32);
	__type(value, struct strata_counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct strata_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, STRATA_EVENTS_BYTES);
} events SEC(".maps");

/* Referenced so that the BTF of the object carries every ABI struct. */
struct strata_event *strata_abi_event __attribute__((unused));

struct packet {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport_be;
	__u16 dport_be;
	__u8 protocol;
	__u8 family;
	__u8 tcp_flags;
	__u8 has_inner;
	/* ICMP errors: the quoted packet, as it was sent. */
	__u8 inner_saddr[16];
	__u8 inner_daddr[16];
	__u16 inner_sport_be;
	__u16 inner_dport_be;
	__u8 inner_protocol;
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_NON_IP,
	PARSE_MALFORMED,
	PARSE_FRAGMENT,
	PARSE_EXT_HEADERS,
	PARSE_NDP,
};

static __always_inline void v4_mapped(__u8 *dst, const __u8 *v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, v4, 4);
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* Quoted packet of an ICMP error; on any failure has_inner stays 0. */
static __always_inline void parse_inner_v4(struct __sk_buff *skb, __u32 off, struct packet *p)
{
	__u8 ip[20];
	__u8 ports[4];

	if (bpf_skb_load_bytes(skb, off, ip, sizeof(ip)) < 0)
		return;
	if ((ip[0] >> 4) != 4 || (ip[0] & 0xf) < 5)
		return;
	p->inner_protocol = ip[9];
	v4_mapped(p->inner_saddr, ip + 12);
	v4_mapped(p->inner_daddr, ip + 16);
	p->inner_sport_be = 0;
	p->inner_dport_be = 0;
	if (has_ports(ip[9])) {
		if (bpf_skb_load_bytes(skb, off + (ip[0] & 0xf) * 4, ports, sizeof(ports)) < 0)
			return;
		__builtin_memcpy(&p->inner_sport_be, ports, 2);
		__builtin_memcpy(&p->inner_dport_be, ports + 2, 2);
	}
	p->has_inner = 1;
}

static __always_inline void parse_inner_v6(struct __sk_buff *skb, __u32 off, struct packet *p)
{
	__u8 ip[40];
	__u8 ports[4];

	if (bpf_skb_load_bytes(skb, off, ip, sizeof(ip)) < 0)
		return;
	if ((ip[0] >> 4) != 6)
		return;
	p->inner_protocol = ip[6];
	__builtin_memcpy(p->inner_saddr, ip + 8, 16);
	__builtin_memcpy(p->inner_daddr, ip + 24, 16);
	p->inner_sport_be = 0;
	p->inner_dport_be = 0;
	if (has_ports(ip[6])) {
		if (bpf_skb_load_bytes(skb, off + 40, ports, sizeof(ports)) < 0)
			return;
		__builtin_memcpy(&p->inner_sport_be, ports, 2);
		__builtin_memcpy(&p->inner_dport_be, ports + 2, 2);
	}
	p->has_inner = 1;
}

static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct packet *p)
{
	__u8 l4[14];

	switch (p->protocol) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, off, l4, 14) < 0)
			return PARSE_MALFORMED;
		__builtin_memcpy(&p->sport_be, l4, 2);
		__builtin_memcpy(&p->dport_be, l4 + 2, 2);
		p->tcp_flags = l4[13];
		return PARSE_OK;
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return PARSE_MALFORMED;
		__builtin_memcpy(&p->sport_be, l4, 2);
		__builtin_memcpy(&p->dport_be, l4 + 2, 2);
		return PARSE_OK;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return PARSE_MALFORMED;
		if (l4[0] == 8) { /* echo request: id as source port */
			__builtin_memcpy(&p->sport_be, l4 + 4, 2);
		} else if (l4[0] == 0) { /* echo reply: id as destination port */
			__builtin_memcpy(&p->dport_be, l4 + 4, 2);
		} else if (l4[0] == 3 || l4[0] == 11 || l4[0] == 12) {
			parse_inner_v4(skb, off + 8, p);
		}
		return PARSE_OK;
	case IPPROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return PARSE_MALFORMED;
		if (l4[0] == 128) {
			__builtin_memcpy(&p->sport_be, l4 + 4, 2);
		} else if (l4[0] == 129) {
			__builtin_memcpy(&p->dport_be, l4 + 4, 2);
		} else if (l4[0] >= 1 && l4[0] <= 4) {
			parse_inner_v6(skb, off + 8, p);
		} else if ((l4[0] >= 133 && l4[0] <= 137) || (l4[0] >= 130 && l4[0] <= 132) ||
			   l4[0] == 143) {
			/* neighbour discovery and multicast listener discovery */
			return PARSE_NDP;
		}
		return PARSE_OK;
	default:
		return PARSE_OK;
	}
}

static __always_inline int parse(struct __sk_buff *skb, struct packet *p)
{
	__u16 proto_be;
	__u32 len = skb->len;

	if (bpf_skb_load_bytes(skb, 12, &proto_be, 2) < 0)
		return PARSE_NON_IP;
	if (proto_be == bpf_htons(ETH_P_IP)) {
		__u8 ip[20];
		__u32 hlen, tot;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0)
			return PARSE_MALFORMED;
		if ((ip[0] >> 4) != 4 || (ip[0] & 0xf) < 5)
			return PARSE_MALFORMED;
		hlen = (ip[0] & 0xf) * 4;
		tot = ((__u32)ip[2] << 8) | ip[3];
		if (tot < hlen || ETH_HLEN + tot > len)
			return PARSE_MALFORMED;
		p->family = 4;
		p->protocol = ip[9];
		v4_mapped(p->saddr, ip + 12);
		v4_mapped(p->daddr, ip + 16);
		if ((((__u32)ip[6] << 8) | ip[7]) & 0x3fff)
			return PARSE_FRAGMENT;
		return parse_l4(skb, ETH_HLEN + hlen, p);
	}
	if (proto_be == bpf_htons(ETH_P_IPV6)) {
		__u8 ip[40];
		__u8 ext[2];
		__u32 off, payload;
		__u8 nh;
		int i;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0)
			return PARSE_MALFORMED;
		if ((ip[0] >> 4) != 6)
			return PARSE_MALFORMED;
		payload = ((__u32)ip[4] << 8) | ip[5];
		if (ETH_HLEN + 40 + payload > len)
			return PARSE_MALFORMED;
		p->family = 6;
		__builtin_memcpy(p->saddr, ip + 8, 16);
		__builtin_memcpy(p->daddr, ip + 24, 16);
		nh = ip[6];
		off = ETH_HLEN + 40;
#pragma unroll
		for (i = 0; i < STRATA_MAX_EXT_HEADERS; i++) {
			if (nh == IPPROTO_FRAGMENT) {
				p->protocol = nh;
				return PARSE_FRAGMENT;
			}
			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
			    nh != IPPROTO_AH)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, 2) < 0)
				return PARSE_MALFORMED;
			if (nh == IPPROTO_AH)
				off += ((__u32)ext[1] + 2) * 4;
			else
				off += ((__u32)ext[1] + 1) * 8;
			nh = ext[0];
		}
		p->protocol = nh;
		if (nh == IPPROTO_FRAGMENT)
			return PARSE_FRAGMENT;
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
		    nh == IPPROTO_AH)
			return PARSE_EXT_HEADERS;
		return parse_l4(skb, off, p);
	}
	return PARSE_NON_IP;
}

static __always_inline __u32 peer_identity(const __u8 *addr)
{
	struct strata_ipcache_key key = { .prefixlen = 128 };
	struct strata_host host;
	struct strata_ipcache_value *v;

	__builtin_memcpy(host.addr, addr, 16);
	v = bpf_map_lookup_elem(&ipcache_hosts, &host);
	if (v)
		return v->identity;
	__builtin_memcpy(key.addr, addr, 16);
	v = bpf_map_lookup_elem(&ipcache, &key);
	return v ? v->identity : STRATA_IDENTITY_WORLD;
}

static __always_inline int ct_live(struct strata_ct_key *key, __u64 now)
{
	struct strata_ct_value *v = bpf_map_lookup_elem(&conntrack, key);

	return v && v->expires_ns > now;
}

static __always_inline void count(__u32 dir, __u32 reason, __u32 len)
{
	__u32 idx = reason + STRATA_REASONS * dir;
	struct strata_counter *c;

	if (idx >= STRATA_COUNTERS)
		return;
	c = bpf_map_lookup_elem(&counters, &idx);
	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

static __always_inline void emit_event(struct __sk_buff *skb, __u32 dir, __u32 reason,
				       const struct strata_endpoint *ep, const struct packet *p,
				       __u32 peer)
{
	struct strata_event *e;

	if (reason < STRATA_REASON_FIRST_DROP) {
		__u32 zero = 0;
		struct strata_config *cfg = bpf_map_lookup_elem(&config, &zero);

		if (!cfg || cfg->allow_sample == 0)
			return;
		if (cfg->allow_sample > 1 && bpf_get_prandom_u32() % cfg->allow_sample != 0)
			return;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	e->timestamp_ns = bpf_ktime_get_ns();
	e->ifindex = skb->ifindex;
	e->endpoint_id = ep ? ep->endpoint_id : 0;
	if (dir == STRATA_DIR_EGRESS) {
		e->src_identity = ep ? ep->identity : 0;
		e->dst_identity = peer;
	} else {
		e->src_identity = peer;
		e->dst_identity = ep ? ep->identity : 0;
	}
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	e->sport = bpf_ntohs(p->sport_be);
	e->dport = bpf_ntohs(p->dport_be);
	e->protocol = p->protocol;
	e->family = p->family;
	e->direction = dir;
	e->reason = reason;
	e->length = skb->len;
	e->reserved = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline __u32 policy_verdict(__u32 endpoint_id, __u32 identity, __u32 dir,
					    const struct packet *p)
{
	struct strata_policy_key key = {
		.prefixlen = 96,
		.endpoint_id = endpoint_id,
		.identity = identity,
		.direction = dir,
		.protocol = p->protocol,
		.port_be = p->dport_be,
	};
	struct strata_policy_match m;
	struct strata_policy_value *v;

	/* Only TCP, UDP and SCTP carry a port for policy purposes. */
	if (!has_ports(p->protocol))
		key.port_be = 0;
	m.endpoint_id = endpoint_id;
	m.identity = identity;
	m.direction = dir;
	m.protocol = p->protocol;
	m.port_be = key.port_be;
	v = bpf_map_lookup_elem(&policy_exact, &m);
	if (v)
		return v->verdict;
	v = bpf_map_lookup_elem(&policy, &key);
	return v ? v->verdict : 0;
}

static __always_inline int decide(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex;
	__u32 len = skb->len;
	struct strata_endpoint *ep;
	struct packet p = {};
	struct strata_ct_key ct = {};
	__u32 reason, peer = 0;
	__u64 now;
	int r;

#ifdef STRATA_TEST_VERIFIER_REJECT
	/* Only in a test build: an unchecked packet read the verifier must reject. */
	if (*(__u8 *)(long)skb->data == 0xff)
		return TC_ACT_SHOT;
#endif
	ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ep) {
		count(dir, STRATA_REASON_PASS_NO_ENDPOINT, len);
		return TC_ACT_OK;
	}
	r = parse(skb, &p);
	switch (r) {
	case PARSE_NON_IP:
		count(dir, STRATA_REASON_PASS_NON_IP, len);
		return TC_ACT_OK;
	case PARSE_MALFORMED:
		reason = STRATA_REASON_DROP_MALFORMED;
		goto drop;
	case PARSE_FRAGMENT:
		reason = STRATA_REASON_DROP_FRAGMENT;
		goto drop;
	case PARSE_EXT_HEADERS:
		reason = STRATA_REASON_DROP_EXT_HEADERS;
		goto drop;
	case PARSE_NDP:
		reason = STRATA_REASON_ALLOW_NDP;
		goto allow;
	default:
		break;
	}

	peer = peer_identity(dir == STRATA_DIR_EGRESS ? p.daddr : p.saddr);
	now = bpf_ktime_get_ns();

	/* An ICMP error quoting a connection this endpoint saw in the other direction. */
	if (p.has_inner) {
		__builtin_memcpy(ct.saddr, p.inner_saddr, 16);
		__builtin_memcpy(ct.daddr, p.inner_daddr, 16);
		ct.sport_be = p.inner_sport_be;
		ct.dport_be = p.inner_dport_be;
		ct.protocol = p.inner_protocol;
		ct.direction = dir ^ 1;
		ct.ifindex = ifindex;
		if (ct_live(&ct, now)) {
			reason = STRATA_REASON_ALLOW_CT_RELATED;
			goto allow;
		}
	}

	/* A reply of a connection this endpoint saw in the other direction. */
	__builtin_memcpy(ct.saddr, p.daddr, 16);
	__builtin_memcpy(ct.daddr, p.saddr, 16);
	ct.sport_be = p.dport_be;
	ct.dport_be = p.sport_be;
	ct.protocol = p.protocol;
	ct.direction = dir ^ 1;
	ct.ifindex = ifindex;
	{
		struct strata_ct_value *v = bpf_map_lookup_elem(&conntrack, &ct);

		if (v && v->expires_ns > now) {
			if (p.protocol == IPPROTO_TCP &&
			    (p.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) &&
			    !(v->flags & STRATA_CT_CLOSING)) {
				v->flags |= STRATA_CT_CLOSING;
				v->expires_ns = now + STRATA_CT_LIFETIME_CLOSING;
			}
			reason = STRATA_REASON_ALLOW_CT_REPLY;
			goto allow;
		}
	}

	__builtin_memcpy(ct.saddr, p.saddr, 16);
	__builtin_memcpy(ct.daddr, p.daddr, 16);
	ct.sport_be = p.sport_be;
	ct.dport_be = p.dport_be;
	ct.direction = dir;
	{
		__u32 zero = 0;
		struct strata_config *cfg = bpf_map_lookup_elem(&config, &zero);
		__u32 generation = cfg ? cfg->generation : 0;
		struct strata_ct_value *old = bpf_map_lookup_elem(&conntrack, &ct);
		int live = old && old->expires_ns > now;
		int closing = p.protocol == IPPROTO_TCP &&
			      (p.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST));
		__u32 unenforced;

		if (live && generation != 0 && old->generation == generation) {
			/* Allowed under the current maps already: reuse the verdict. */
			unenforced = old->flags & STRATA_CT_UNENFORCED;
			reason = unenforced ? STRATA_REASON_ALLOW_UNENFORCED :
					      STRATA_REASON_ALLOW_POLICY;
		} else {
			/* Two lookups whatever the number of rules; deny wins, then allow, then
			 * the default of the direction (deny when enforced). */
			__u32 v1 = policy_verdict(ep->endpoint_id, peer, dir, &p);
			__u32 v2 = policy_verdict(ep->endpoint_id, 0, dir, &p);
			__u32 enforce = dir == STRATA_DIR_EGRESS ? STRATA_EP_ENFORCE_EGRESS :
								   STRATA_EP_ENFORCE_INGRESS;

			if (v1 == STRATA_VERDICT_DENY || v2 == STRATA_VERDICT_DENY) {
				reason = STRATA_REASON_DROP_POLICY_DENY;
				goto drop;
			}
			if (v1 == STRATA_VERDICT_ALLOW || v2 == STRATA_VERDICT_ALLOW) {
				reason = STRATA_REASON_ALLOW_POLICY;
			} else if (ep->flags & enforce) {
				reason = STRATA_REASON_DROP_POLICY_DEFAULT;
				goto drop;
			} else {
				reason = STRATA_REASON_ALLOW_UNENFORCED;
			}
			unenforced = reason == STRATA_REASON_ALLOW_UNENFORCED ?
					     STRATA_CT_UNENFORCED : 0;
		}

		/* Track the forward direction: refresh a live entry in place, else create. */
		if (live) {
			old->generation = generation;
			old->flags = (old->flags & ~STRATA_CT_UNENFORCED) | unenforced;
			if (old->flags & STRATA_CT_CLOSING) {
				/* closing: the deadline stands */
			} else if (closing) {
				old->flags |= STRATA_CT_CLOSING;
				old->expires_ns = now + STRATA_CT_LIFETIME_CLOSING;
			} else {
				old->expires_ns = now + (p.protocol == IPPROTO_TCP ?
								 STRATA_CT_LIFETIME_TCP :
								 STRATA_CT_LIFETIME_OTHER);
			}
		} else {
			struct strata_ct_value nv = {};

			nv.generation = generation;
			nv.flags = unenforced;
			if (closing) {
				nv.flags |= STRATA_CT_CLOSING;
				nv.expires_ns = now + STRATA_CT_LIFETIME_CLOSING;
			} else {
				nv.expires_ns = now + (p.protocol == IPPROTO_TCP ?
							       STRATA_CT_LIFETIME_TCP :
							       STRATA_CT_LIFETIME_OTHER);
			}
			bpf_map_update_elem(&conntrack, &ct, &nv, BPF_ANY);
		}
	}

allow:
	count(dir, reason, len);
	emit_event(skb, dir, reason, ep, &p, peer);
	return TC_ACT_OK;
drop:
	count(dir, reason, len);
	emit_event(skb, dir, reason, ep, &p, peer);
	return TC_ACT_SHOT;
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	return decide(skb, STRATA_DIR_EGRESS);
}

SEC("classifier")
int to_pod(struct __sk_buff *skb)
{
	return decide(skb, STRATA_DIR_INGRESS);
}
