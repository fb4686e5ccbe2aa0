/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Strata datapath map ABI: the keys and values shared by the eBPF programs and the Rust loader.
 *
 * The Rust mirror lives in src/abi.rs; tests/btf_abi.rs reads the BTF of the compiled object
 * and fails when a #[repr(C)] type there drifts from a struct here.
 */
#ifndef STRATA_H
#define STRATA_H

#include <linux/types.h>

/* Traffic direction as seen by the endpoint (pod). */
#define STRATA_DIR_EGRESS 0  /* from the pod: clsact ingress of the host-side veth */
#define STRATA_DIR_INGRESS 1 /* to the pod: clsact egress of the host-side veth */

/* Endpoint flags. */
#define STRATA_EP_ENFORCE_INGRESS 1
#define STRATA_EP_ENFORCE_EGRESS 2

/* Policy verdicts stored in policy values. */
#define STRATA_VERDICT_ALLOW 1
#define STRATA_VERDICT_DENY 2

/* Identity used when the ipcache has no prefix covering an address. */
#define STRATA_IDENTITY_WORLD 2

/* Conntrack entry flags. */
#define STRATA_CT_CLOSING 1
/* The connection was allowed because the direction was not enforced (not by an entry). */
#define STRATA_CT_UNENFORCED 2

/* Reasons, used as counter indices (reason + 32 * direction) and in events. */
#define STRATA_REASON_ALLOW_POLICY 0
#define STRATA_REASON_ALLOW_CT_REPLY 1
#define STRATA_REASON_ALLOW_CT_RELATED 2
#define STRATA_REASON_ALLOW_UNENFORCED 3
#define STRATA_REASON_ALLOW_NDP 4
#define STRATA_REASON_PASS_NO_ENDPOINT 5
#define STRATA_REASON_PASS_NON_IP 6
#define STRATA_REASON_DROP_POLICY_DENY 16
#define STRATA_REASON_DROP_POLICY_DEFAULT 17
#define STRATA_REASON_DROP_MALFORMED 18
#define STRATA_REASON_DROP_FRAGMENT 19
#define STRATA_REASON_DROP_EXT_HEADERS 20
#define STRATA_REASON_FIRST_DROP 16
#define STRATA_REASONS 32
#define STRATA_COUNTERS (2 * STRATA_REASONS)

/* Conntrack lifetimes, nanoseconds. */
#define STRATA_CT_LIFETIME_TCP (21600ULL * 1000000000ULL)
#define STRATA_CT_LIFETIME_CLOSING (10ULL * 1000000000ULL)
#define STRATA_CT_LIFETIME_OTHER (60ULL * 1000000000ULL)

/* Most IPv6 extension headers walked before the packet is dropped. */
#define STRATA_MAX_EXT_HEADERS 8

/* Map sizes. */
#define STRATA_ENDPOINTS_MAX 4096
#define STRATA_IPCACHE_MAX 262144
#define STRATA_POLICY_MAX 262144
#define STRATA_CT_MAX 262144
#define STRATA_EVENTS_BYTES (256 * 1024)

/* endpoints: interface index of the host-side veth -> endpoint. */
struct strata_endpoint {
	__u32 endpoint_id;
	__u32 identity;
	__u32 flags;
	__u32 reserved;
};

/* ipcache: LPM over IPv6 addresses; IPv4 as ::ffff:a.b.c.d with prefix 96 + len. */
struct strata_ipcache_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct strata_ipcache_value {
	__u32 identity;
	__u32 flags;
};

/*
 * policy: LPM over (endpoint, peer identity, direction, protocol, port in network order).
 * prefixlen = 72 (any protocol, any port), 80 + port prefix length (0..=16) otherwise.
 * Identity 0 means any peer. A packet does two full-length lookups: its peer's identity, then 0.
 */
struct strata_policy_key {
	__u32 prefixlen;
	__u32 endpoint_id;
	__u32 identity;
	__u8 direction;
	__u8 protocol;
	__u16 port_be;
};

/*
 * policy_exact: the fully specified policy entries (prefixlen 96), looked up by hash first; the
 * LPM trie then only holds wildcard and port-range entries. Same answer as one LPM over all
 * entries (a full-length entry is always the longest match), in time independent of the
 * number of exact entries.
 */
struct strata_policy_match {
	__u32 endpoint_id;
	__u32 identity;
	__u8 direction;
	__u8 protocol;
	__u16 port_be;
};

/* ipcache_hosts: host addresses (prefixlen 128, IPv4 /32 included), looked up by hash first. */
struct strata_host {
	__u8 addr[16];
};

struct strata_policy_value {
	__u32 verdict;
	__u32 rule;
};

/* conntrack: the tuple as seen by the endpoint in one direction. Ports in network order. */
struct strata_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport_be;
	__u16 dport_be;
	__u8 protocol;
	__u8 direction;
	__u16 reserved;
	__u32 ifindex;
};

/*
 * A forward entry whose generation equals the config's was allowed under the current maps:
 * later packets of the connection reuse that verdict instead of looking policy up again. The
 * loader bumps the generation after every change to the endpoints, ipcache or policy maps.
 */
struct strata_ct_value {
	__u64 expires_ns;
	__u32 flags;
	__u32 generation;
};

/* counters: per-CPU array, index reason + 32 * direction. */
struct strata_counter {
	__u64 packets;
	__u64 bytes;
};

/* config: array of one. */
struct strata_config {
	/* Emit one allow event in this many allowed packets (0: none, 1: all). */
	__u32 allow_sample;
	/* Generation of the endpoints, ipcache and policy maps (0: never cache verdicts). */
	__u32 generation;
};

/* events: ring buffer records. Addresses as in conntrack; ports in host order. */
struct strata_event {
	__u64 timestamp_ns;
	__u32 ifindex;
	__u32 endpoint_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 family;
	__u8 direction;
	__u8 reason;
	__u32 length;
	__u32 reserved;
};

#endif
