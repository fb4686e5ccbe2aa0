//! Builds Ethernet frames for tests, benches and the differential test: IPv4 (with options
//! and fragments), IPv6 (with extension headers), TCP, UDP, SCTP, ICMP, ICMPv6.

use std::net::IpAddr;

/// The layer-4 part of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP header (20 bytes) with these ports and flags.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
        flags: u8,
    },
    /// UDP header.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// SCTP common header.
    Sctp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6 (by the frame's family): type, code, the 4 bytes after the checksum,
    /// and a quoted packet (an IP packet without Ethernet) for errors.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Identifier and sequence (echo) or unused.
        rest: [u8; 4],
        /// The quoted packet.
        quoted: Vec<u8>,
    },
    /// Any protocol number with raw bytes.
    Raw {
        /// IP protocol number.
        protocol: u8,
        /// Bytes after the IP header (and extension headers).
        bytes: Vec<u8>,
    },
}

impl L4 {
    fn protocol(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Sctp { .. } => 132,
            L4::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Raw { protocol, .. } => *protocol,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut b = vec![0u8; 20];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[12] = 5 << 4;
                b[13] = *flags;
                b[14..16].copy_from_slice(&64240u16.to_be_bytes());
                b
            }
            L4::Udp { sport, dport } => {
                let mut b = vec![0u8; 8];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[4..6].copy_from_slice(&8u16.to_be_bytes());
                b
            }
            L4::Sctp { sport, dport } => {
                let mut b = vec![0u8; 12];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b
            }
            L4::Icmp {
                ty,
                code,
                rest,
                quoted,
            } => {
                let mut b = vec![*ty, *code, 0, 0];
                b.extend_from_slice(rest);
                b.extend_from_slice(quoted);
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Builder {
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    payload: Vec<u8>,
    v4_options: Vec<u8>,
    v4_fragment: u16,
    v6_ext: Vec<(u8, u8)>,
}

impl Builder {
    /// An IPv4 frame (addresses must be IPv4 for the result to be meaningful).
    pub fn v4(src: IpAddr, dst: IpAddr) -> Builder {
        Builder::new(src, dst)
    }

    /// An IPv6 frame.
    pub fn v6(src: IpAddr, dst: IpAddr) -> Builder {
        Builder::new(src, dst)
    }

    /// A frame for these addresses (the family follows `src`).
    pub fn new(src: IpAddr, dst: IpAddr) -> Builder {
        Builder {
            src,
            dst,
            l4: L4::Udp { sport: 0, dport: 0 },
            payload: Vec::new(),
            v4_options: Vec::new(),
            v4_fragment: 0,
            v6_ext: Vec::new(),
        }
    }

    /// Sets the layer-4 header.
    pub fn l4(mut self, l4: L4) -> Builder {
        self.l4 = l4;
        self
    }

    /// Appends payload after the layer-4 header.
    pub fn payload(mut self, payload: &[u8]) -> Builder {
        self.payload.extend_from_slice(payload);
        self
    }

    /// IPv4 options (padded with zeros to a multiple of 4, at most 40 bytes).
    pub fn v4_options(mut self, options: &[u8]) -> Builder {
        self.v4_options = options.iter().copied().take(40).collect();
        while !self.v4_options.len().is_multiple_of(4) {
            self.v4_options.push(0);
        }
        self
    }

    /// IPv4 flags and fragment offset field (e.g. 0x2000 for more-fragments).
    pub fn v4_fragment(mut self, field: u16) -> Builder {
        self.v4_fragment = field;
        self
    }

    /// IPv6 extension headers in order: (type, length byte). Type 44 writes an 8-byte fragment
    /// header; 51 (AH) uses (len + 2) * 4 bytes; others (len + 1) * 8 bytes.
    pub fn v6_ext(mut self, ext: &[(u8, u8)]) -> Builder {
        self.v6_ext = ext.to_vec();
        self
    }

    /// The IP packet without Ethernet.
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut l4 = self.l4.bytes();
        l4.extend_from_slice(&self.payload);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hlen = 20 + self.v4_options.len();
                let total = hlen + l4.len();
                let mut ip = vec![0u8; hlen];
                ip[0] = 0x40 | (hlen / 4) as u8;
                ip[2..4].copy_from_slice(&(total.min(65535) as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                ip[6..8].copy_from_slice(&self.v4_fragment.to_be_bytes());
                ip[8] = 64;
                ip[9] = self.l4.protocol(false);
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                ip[20..].copy_from_slice(&self.v4_options);
                let sum = checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                ip.extend_from_slice(&l4);
                ip
            }
            (s, d) => {
                let s6 = crate::abi::addr_bytes(s);
                let d6 = crate::abi::addr_bytes(d);
                let proto = self.l4.protocol(true);
                let mut ext = Vec::new();
                for (i, (ty, len)) in self.v6_ext.iter().enumerate() {
                    let next = self.v6_ext.get(i + 1).map_or(proto, |e| e.0);
                    let size = match *ty {
                        44 => 8,
                        51 => (usize::from(*len) + 2) * 4,
                        _ => (usize::from(*len) + 1) * 8,
                    };
                    let mut h = vec![0u8; size];
                    h[0] = next;
                    h[1] = if *ty == 44 { 0 } else { *len };
                    ext.extend_from_slice(&h);
                }
                let first = self.v6_ext.first().map_or(proto, |e| e.0);
                let payload = ext.len() + l4.len();
                let mut ip = vec![0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(payload.min(65535) as u16).to_be_bytes());
                ip[6] = first;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&s6);
                ip[24..40].copy_from_slice(&d6);
                ip.extend_from_slice(&ext);
                ip.extend_from_slice(&l4);
                ip
            }
        }
    }

    /// The Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let ip = self.ip_packet();
        let mut f = Vec::with_capacity(14 + ip.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
        let ethertype: u16 = if self.src.is_ipv4() && self.dst.is_ipv4() {
            0x0800
        } else {
            0x86dd
        };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&ip);
        f
    }
}

/// The Internet checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::parse_frame;

    #[test]
    fn parsed_fields_match_what_was_built() {
        let f = Builder::v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .v4_options(&[1, 1, 1, 1, 1, 1, 1, 1])
            .l4(L4::Tcp {
                sport: 1234,
                dport: 80,
                flags: 2,
            })
            .build();
        let (p, r) = parse_frame(&f);
        assert_eq!(r, None);
        assert_eq!((p.sport, p.dport, p.protocol, p.family), (1234, 80, 6, 4));
        let ip = &f[14..];
        assert_eq!(checksum(&ip[..28]), 0);

        let f6 = Builder::v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
            .v6_ext(&[(0, 0), (60, 1), (51, 1)])
            .l4(L4::Sctp {
                sport: 5,
                dport: 132,
            })
            .build();
        let (p, r) = parse_frame(&f6);
        assert_eq!(r, None);
        assert_eq!((p.sport, p.dport, p.protocol, p.family), (5, 132, 132, 6));
    }
}
