//! Typed pieces of rule expressions: what weft's rules match on, look up and set, rendered
//! in nft syntax. A [`Rule`](super::Rule)'s expression stays text (nft's grammar is large),
//! but the parts that carry meaning between a table's sets and its rules (the keys of
//! concatenations, raw payload offsets, `meta mark`, `ct`) are built from these, so a set's
//! `typeof` key and the rule that looks it up are the same value.

use std::fmt;

/// `meta` keys (`iifname` and `oifname` print without `meta`, as nft lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meta {
    Mark,
    L4proto,
    Nfproto,
    Iifname,
    Oifname,
}

/// Conntrack keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ct {
    State,
    Status,
}

/// The header a raw payload offset counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base {
    /// `@ll`: the link layer header.
    Link,
    /// `@nh`: the network header.
    Network,
    /// `@th`: the transport header.
    Transport,
}

/// An expression: a value taken from the packet or its metadata, a concatenation of them,
/// or a set reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    Meta(Meta),
    Ct(Ct),
    /// A header field: `ip saddr`, `th dport`, `udp dport`.
    Field(&'static str, &'static str),
    /// `@BASE,OFFSET,LEN` (in bits).
    Raw {
        base: Base,
        offset: u32,
        len: u32,
    },
    /// `a . b . c`: a set key of several parts.
    Concat(Vec<Expr>),
    /// `@name`: a set or map of the same table.
    Set(String),
}

impl Expr {
    pub fn raw(base: Base, offset: u32, len: u32) -> Expr {
        Expr::Raw { base, offset, len }
    }

    pub fn concat(parts: impl IntoIterator<Item = Expr>) -> Expr {
        Expr::Concat(parts.into_iter().collect())
    }

    pub fn set(name: impl Into<String>) -> Expr {
        Expr::Set(name.into())
    }

    /// `KEY vmap @MAP`: the verdict of `map`'s element for this key (no element: the
    /// rule does nothing, the next one decides).
    pub fn vmap(&self, map: &str) -> String {
        format!("{self} vmap @{map}")
    }

    /// `update @SET { KEY }`: adds or refreshes this key in a dynamic set.
    pub fn update(&self, set: &str) -> String {
        format!("update @{set} {{ {self} }}")
    }
}

impl From<Meta> for Expr {
    fn from(m: Meta) -> Expr {
        Expr::Meta(m)
    }
}

impl From<Ct> for Expr {
    fn from(c: Ct) -> Expr {
        Expr::Ct(c)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Meta(Meta::Mark) => f.write_str("meta mark"),
            Expr::Meta(Meta::L4proto) => f.write_str("meta l4proto"),
            Expr::Meta(Meta::Nfproto) => f.write_str("meta nfproto"),
            Expr::Meta(Meta::Iifname) => f.write_str("iifname"),
            Expr::Meta(Meta::Oifname) => f.write_str("oifname"),
            Expr::Ct(Ct::State) => f.write_str("ct state"),
            Expr::Ct(Ct::Status) => f.write_str("ct status"),
            Expr::Field(proto, field) => write!(f, "{proto} {field}"),
            Expr::Raw { base, offset, len } => {
                let b = match base {
                    Base::Link => "ll",
                    Base::Network => "nh",
                    Base::Transport => "th",
                };
                write!(f, "@{b},{offset},{len}")
            }
            Expr::Concat(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" . ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            Expr::Set(name) => write!(f, "@{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_nft_lists_them() {
        let inner_source = Expr::raw(Base::Transport, 336, 32);
        assert_eq!(inner_source.to_string(), "@th,336,32");
        assert_eq!(Expr::raw(Base::Network, 96, 32).to_string(), "@nh,96,32");
        assert_eq!(Expr::raw(Base::Link, 0, 48).to_string(), "@ll,0,48");
        let key = Expr::concat([
            Meta::Mark.into(),
            Expr::Field("ip", "daddr"),
            Meta::L4proto.into(),
            Expr::Field("th", "dport"),
        ]);
        assert_eq!(
            key.vmap("allow_ports"),
            "meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports"
        );
        assert_eq!(
            Expr::concat([Meta::Mark.into(), Expr::Field("ip", "daddr")]).update("denied"),
            "update @denied { meta mark . ip daddr }"
        );
        assert_eq!(
            Expr::concat([Expr::Field("ip", "saddr"), Meta::Iifname.into()]).to_string(),
            "ip saddr . iifname"
        );
        assert_eq!(Expr::from(Ct::State).to_string(), "ct state");
        assert_eq!(Expr::from(Ct::Status).to_string(), "ct status");
        assert_eq!(Expr::from(Meta::Nfproto).to_string(), "meta nfproto");
        assert_eq!(Expr::from(Meta::Oifname).to_string(), "oifname");
        assert_eq!(Expr::set("cells").to_string(), "@cells");
    }
}
