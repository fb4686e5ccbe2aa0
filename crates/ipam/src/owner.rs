//! Who holds an address: pods (`namespace/pod`) and StatefulSet keys
//! (`namespace/statefulset/ordinal`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

fn check_segment(what: &'static str, input: &str, segment: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        what,
        input: input.to_owned(),
        reason,
    };
    if segment.is_empty() {
        return Err(bad("empty segment"));
    }
    if segment.len() > 253 {
        return Err(bad("segment longer than 253 characters"));
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(bad(
            "segments are DNS names: lowercase letters, digits, '-' and '.'",
        ));
    }
    Ok(())
}

/// The owner of an allocation: a pod, written `namespace/pod`. Cheap to clone (shared text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(Arc<str>);

impl Owner {
    /// Parses and validates `namespace/pod`.
    pub fn new(text: &str) -> Result<Owner> {
        let mut parts = text.split('/');
        let (Some(ns), Some(pod), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::InvalidName {
                what: "owner",
                input: text.to_owned(),
                reason: "expected namespace/pod",
            });
        };
        check_segment("owner", text, ns)?;
        check_segment("owner", text, pod)?;
        Ok(Owner(Arc::from(text)))
    }

    /// The owner's text, `namespace/pod`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    /// The pod name.
    pub fn pod(&self) -> &str {
        self.0.split('/').nth(1).unwrap_or_default()
    }
}

impl FromStr for Owner {
    type Err = Error;
    fn from_str(s: &str) -> Result<Owner> {
        Owner::new(s)
    }
}

impl TryFrom<String> for Owner {
    type Error = Error;
    fn try_from(s: String) -> Result<Owner> {
        Owner::new(&s)
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.0.to_string()
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key of a StatefulSet pod's fixed address: `namespace/statefulset/ordinal`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatefulKey {
    /// The namespace.
    pub namespace: String,
    /// The StatefulSet's name.
    pub statefulset: String,
    /// The pod's ordinal.
    pub ordinal: u32,
}

impl StatefulKey {
    /// Parses and validates `namespace/statefulset/ordinal`.
    pub fn new(text: &str) -> Result<StatefulKey> {
        let what = "StatefulSet key";
        let mut parts = text.split('/');
        let (Some(ns), Some(sts), Some(ordinal), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::InvalidName {
                what,
                input: text.to_owned(),
                reason: "expected namespace/statefulset/ordinal",
            });
        };
        check_segment(what, text, ns)?;
        check_segment(what, text, sts)?;
        let ordinal = ordinal.parse::<u32>().map_err(|_| Error::InvalidName {
            what,
            input: text.to_owned(),
            reason: "the ordinal is not a non-negative integer",
        })?;
        Ok(StatefulKey {
            namespace: ns.to_owned(),
            statefulset: sts.to_owned(),
            ordinal,
        })
    }

    /// The pod this key belongs to: `namespace/statefulset-ordinal`, as the StatefulSet
    /// controller names it.
    pub fn pod(&self) -> Owner {
        Owner(Arc::from(format!(
            "{}/{}-{}",
            self.namespace, self.statefulset, self.ordinal
        )))
    }
}

impl FromStr for StatefulKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<StatefulKey> {
        StatefulKey::new(s)
    }
}

impl TryFrom<String> for StatefulKey {
    type Error = Error;
    fn try_from(s: String) -> Result<StatefulKey> {
        StatefulKey::new(&s)
    }
}

impl From<StatefulKey> for String {
    fn from(key: StatefulKey) -> String {
        key.to_string()
    }
}

impl fmt::Display for StatefulKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace, self.statefulset, self.ordinal
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_parse_and_reject() {
        let owner = Owner::new("default/web-0").unwrap();
        assert_eq!((owner.namespace(), owner.pod()), ("default", "web-0"));
        for bad in ["", "default", "a/b/c", "/pod", "ns/", "NS/pod", "ns/po d"] {
            assert!(
                matches!(Owner::new(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_parse_and_name_their_pod() {
        let key = StatefulKey::new("db/pg/2").unwrap();
        assert_eq!(key.ordinal, 2);
        assert_eq!(key.pod().as_str(), "db/pg-2");
        assert_eq!(key.to_string(), "db/pg/2");
        for bad in ["db/pg", "db/pg/x", "db/pg/-1", "db//1", "db/pg/1/2"] {
            assert!(StatefulKey::new(bad).is_err(), "{bad:?}");
        }
    }
}
