//! IPv4 prefix arithmetic for the renderers.

use ipnet::Ipv4Net;

/// `net` minus every prefix of `except`, as disjoint prefixes in address order.
///
/// ```
/// use strata_bench::versus::cidr::subtract;
/// let net = "10.0.0.0/30".parse().unwrap();
/// let out = subtract(net, &["10.0.0.1/32".parse().unwrap()]);
/// let out: Vec<String> = out.iter().map(|n| n.to_string()).collect();
/// assert_eq!(out, ["10.0.0.0/32", "10.0.0.2/31"]);
/// ```
pub fn subtract(net: Ipv4Net, except: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    split(net, except, &mut out);
    out
}

fn split(net: Ipv4Net, except: &[Ipv4Net], out: &mut Vec<Ipv4Net>) {
    if except.iter().any(|e| e.contains(&net)) {
        return;
    }
    if !except.iter().any(|e| net.contains(e)) {
        out.push(net);
        return;
    }
    // Some exception lies strictly inside: halve (prefix length < 32 here, since a /32 that
    // contains an exception is contained by it).
    if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
        for h in halves {
            split(h, except, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn subtraction_is_exact_on_a_small_block() {
        let net: Ipv4Net = "10.1.0.0/26".parse().unwrap();
        let except: Vec<Ipv4Net> = ["10.1.0.8/29", "10.1.0.33/32", "10.2.0.0/16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let out = subtract(net, &except);
        for i in 0..=255u8 {
            let a = Ipv4Addr::new(10, 1, 0, i);
            let want = net.contains(&a) && !except.iter().any(|e| e.contains(&a));
            let got = out.iter().filter(|n| n.contains(&a)).count();
            assert_eq!(got, usize::from(want), "{a}");
        }
        assert!(subtract(net, &["10.0.0.0/8".parse().unwrap()]).is_empty());
    }
}
