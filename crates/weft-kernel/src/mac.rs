//! Link-layer (Ethernet) addresses: one type for what links, neighbours and FDB entries
//! carry, written and read as `aa:bb:cc:dd:ee:ff` (also in JSON).
//!
//! Invariant: a `MacAddr` is always six bytes; text that is not six two-digit hex groups
//! separated by `:` (or `-`) is refused, never truncated or padded. Pure: no kernel object.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub const fn new(bytes: [u8; 6]) -> Self {
        MacAddr(bytes)
    }

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// A MAC derived from an IP (locally administered, unicast: `0a:PREFIX:` and the IPv4
    /// address, or the last four bytes of an IPv6 one), as silk and OVN do: the same address
    /// always gets the same MAC, so re-adding a container does not poison ARP caches.
    pub fn from_ip(prefix: u8, ip: IpAddr) -> Self {
        let b = match ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        MacAddr([0x0a, prefix, b[0], b[1], b[2], b[3]])
    }

    /// All zero (what the kernel shows for "no address").
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A multicast (or broadcast) address: the lowest bit of the first byte.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Six bytes of a netlink attribute, if it has six.
    pub(crate) fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl AsRef<[u8]> for MacAddr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Why a text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: want six hex pairs like 0a:58:0a:ff:01:02")]
pub struct ParseMacError(String);

/// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (either case).
impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, ParseMacError> {
        let bad = || ParseMacError(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for an `Option<MacAddr>` kept as text, `""` standing for none (the form records
/// have always had): `#[serde(with = "weft_kernel::mac::or_empty")]`.
pub mod or_empty {
    use super::*;

    pub fn serialize<S: Serializer>(m: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.collect_str(m),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_both_ways() {
        let m: MacAddr = "0a:58:0A:ff:01:02".parse().expect("mac");
        assert_eq!(m.octets(), [0x0a, 0x58, 0x0a, 0xff, 0x01, 0x02]);
        assert_eq!(m.to_string(), "0a:58:0a:ff:01:02");
        assert_eq!(format!("{m:?}"), "MacAddr(0a:58:0a:ff:01:02)");
        assert_eq!("0a-58-0a-ff-01-02".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "0a:58:0a:ff:01",
            "0a:58:0a:ff:01:02:03",
            "0a:58:0a:ff:01:2",
            "0a:58:0a:ff:01:002",
            "0a:58:0a:ff:01:zz",
            "0a:58:0a:ff:01:+2",
            "0a58.0aff.0102",
            "0a:58:0a:ff:01:02:",
        ] {
            let e = bad.parse::<MacAddr>().expect_err(bad);
            assert!(e.to_string().contains("invalid MAC address"), "{e}");
        }
    }

    #[test]
    fn json_is_the_text_form() {
        let m = MacAddr::new([2, 0, 0, 0, 0, 1]);
        assert_eq!(
            serde_json::to_string(&m).expect("encode"),
            "\"02:00:00:00:00:01\""
        );
        let back: MacAddr = serde_json::from_str("\"02:00:00:00:00:01\"").expect("decode");
        assert_eq!(back, m);
        assert!(serde_json::from_str::<MacAddr>("\"02:00\"").is_err());
        assert!(serde_json::from_str::<MacAddr>("[2,0,0,0,0,1]").is_err());
    }

    #[test]
    fn optional_is_empty_text_when_none() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct R {
            #[serde(with = "or_empty")]
            mac: Option<MacAddr>,
        }
        let some = R {
            mac: Some(MacAddr::new([0x0a, 0x58, 10, 0, 0, 5])),
        };
        let text = serde_json::to_string(&some).expect("encode");
        assert_eq!(text, r#"{"mac":"0a:58:0a:00:00:05"}"#);
        assert_eq!(serde_json::from_str::<R>(&text).expect("decode"), some);
        let none = R { mac: None };
        assert_eq!(
            serde_json::to_string(&none).expect("encode"),
            r#"{"mac":""}"#
        );
        assert_eq!(
            serde_json::from_str::<R>(r#"{"mac":""}"#).expect("decode"),
            none
        );
        let bad = serde_json::from_str::<R>(r#"{"mac":"0a:58"}"#).expect_err("bad");
        assert!(bad.to_string().contains("invalid MAC address"), "{bad}");
    }

    #[test]
    fn derived_from_an_ip() {
        let v4 = MacAddr::from_ip(0x58, "10.255.1.2".parse().unwrap());
        assert_eq!(v4.to_string(), "0a:58:0a:ff:01:02");
        let v6 = MacAddr::from_ip(0x59, "fd00::a0b:c0d".parse().unwrap());
        assert_eq!(v6.to_string(), "0a:59:0a:0b:0c:0d");
        assert!(!v4.is_multicast() && !v4.is_zero());
        assert!(MacAddr::new([1, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr::default().is_zero());
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
        assert_eq!(
            <[u8; 6]>::from(MacAddr::from([1, 2, 3, 4, 5, 6])),
            [1, 2, 3, 4, 5, 6]
        );
    }
}
