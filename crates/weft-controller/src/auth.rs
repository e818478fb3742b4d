//! Who may call what, and as which host. Agents authenticate with a client certificate signed
//! by the client CA (mTLS) that names their host (see [`weft_api::tls::host_of`]); people and scripts with
//! the bearer token, which is the admin credential: it writes policies and may act for any host.
//!
//! | route class | TLS mode                         | `--insecure-http`        |
//! |-------------|----------------------------------|--------------------------|
//! | public      | anyone (`/healthz`, `/metrics`, `/openapi.json`) | anyone  |
//! | agent reads | client certificate or token      | anyone (token if sent must match) |
//! | host-scoped writes (leases, claims) | certificate naming that host, or token | anyone, for the host named in the request |
//! | admin (policy writes) | token (a client certificate alone: 403) | token if one is set, else anyone |
//!
//! A host-scoped write names a host (lease requests in the body, claims in the path or query).
//! With a certificate the host is the certificate's: naming another is `403`, naming none means
//! the certificate's; a certificate that names no host (the shared `agent.pem` of older
//! releases) reads but writes nothing host-scoped (`403`).

use axum::http::HeaderMap;

use crate::error::{Error, Result};

/// What the TLS layer learnt about the peer of one connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The peer presented a client certificate that chains to the client CA.
    pub client_cert: bool,
    /// The host that certificate names (`urn:weft:host:NAME`), if any.
    pub host: Option<String>,
}

/// Who is calling, as decided from the connection and the request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The token holder: may act for any host and write policies.
    Admin,
    /// An agent whose certificate names this host.
    Host(String),
    /// A client certificate that names no host: reads only.
    Unnamed,
    /// `--insecure-http` without a token sent: acts for the host the request names.
    Insecure,
}

impl Caller {
    /// The host a host-scoped write acts for, given the host the request names (`""`: none).
    pub fn act_for(&self, requested: &str) -> Result<String> {
        match self {
            Caller::Admin | Caller::Insecure => Ok(requested.to_string()),
            Caller::Host(h) if requested.is_empty() || requested == h => Ok(h.clone()),
            Caller::Host(h) => Err(Error::Forbidden(format!(
                "this client certificate is host {h:?}'s: it may not act for host {requested:?}"
            ))),
            Caller::Unnamed => Err(Error::Forbidden(
                "this client certificate names no host (no URI SAN urn:weft:host:NAME): it may \
                 read, but not hold leases or claim apps; issue one per host with \
                 `weft certs --agent NAME`"
                    .into(),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub token: Option<String>,
    pub tls: bool,
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is case-insensitive
/// (RFC 7235 §2.1: the cf CLI sends `bearer`).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.trim_start().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized(
            "Authorization header must be `Bearer TOKEN`".into(),
        ));
    }
    Ok(Some(token.trim()))
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// `Some(true)` for a valid token, `Some(false)` for a wrong one, `None` for none sent.
    fn token_ok(&self, headers: &HeaderMap) -> Result<Option<bool>> {
        let Some(sent) = bearer(headers)? else {
            return Ok(None);
        };
        Ok(Some(match &self.token {
            Some(t) => same(t, sent),
            None => false,
        }))
    }

    /// Agent routes: who the caller is, or 401.
    pub fn check_agent(&self, peer: &Peer, headers: &HeaderMap) -> Result<Caller> {
        match self.token_ok(headers)? {
            Some(true) => return Ok(Caller::Admin),
            Some(false) => return Err(Error::Unauthorized("invalid bearer token".into())),
            None => {}
        }
        if !self.tls {
            return Ok(Caller::Insecure);
        }
        if peer.client_cert {
            return Ok(match &peer.host {
                Some(h) => Caller::Host(h.clone()),
                None => Caller::Unnamed,
            });
        }
        Err(Error::Unauthorized(
            "a client certificate signed by the controller's client CA (agents) or a bearer token is required"
                .into(),
        ))
    }

    /// Policy writes: the token (or, with `--insecure-http` and no token set, anyone).
    pub fn check_admin(&self, peer: &Peer, headers: &HeaderMap) -> Result<()> {
        match self.token_ok(headers)? {
            Some(true) => Ok(()),
            Some(false) => Err(Error::Unauthorized("invalid bearer token".into())),
            None if self.token.is_none() && !self.tls => Ok(()),
            None if peer.client_cert => Err(Error::Forbidden(
                "agent certificates cannot write policies: policy writes need the bearer token"
                    .into(),
            )),
            None if self.token.is_none() => Err(Error::Forbidden(
                "policy writes are disabled: the controller was started without --token".into(),
            )),
            None => Err(Error::Unauthorized(
                "policy writes need the bearer token (Authorization: Bearer TOKEN)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    fn bearer_of(t: &str) -> Option<String> {
        Some(format!("Bearer {t}"))
    }

    #[test]
    fn tls_mode_needs_cert_or_token() {
        let auth = Auth {
            token: Some("s3cret".into()),
            tls: true,
        };
        let cert = Peer {
            client_cert: true,
            host: Some("h1".into()),
        };
        let unnamed = Peer {
            client_cert: true,
            host: None,
        };
        let none = Peer::default();
        let good = bearer_of("s3cret");
        let wrong = bearer_of("wrong");
        assert_eq!(
            auth.check_agent(&cert, &headers(None)).unwrap(),
            Caller::Host("h1".into())
        );
        assert_eq!(
            auth.check_agent(&unnamed, &headers(None)).unwrap(),
            Caller::Unnamed
        );
        assert!(auth.check_agent(&none, &headers(None)).is_err());
        assert_eq!(
            auth.check_agent(&none, &headers(good.as_deref())).unwrap(),
            Caller::Admin
        );
        assert!(auth.check_agent(&cert, &headers(wrong.as_deref())).is_err());
        assert!(auth.check_admin(&none, &headers(None)).is_err());
        assert!(matches!(
            auth.check_admin(&cert, &headers(None)),
            Err(Error::Forbidden(_))
        ));
        assert!(auth.check_admin(&none, &headers(good.as_deref())).is_ok());
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let auth = Auth {
            token: Some("s3cret".into()),
            tls: true,
        };
        for h in ["bearer s3cret", "BEARER s3cret", "Bearer   s3cret "] {
            assert!(
                auth.check_admin(&Peer::default(), &headers(Some(h)))
                    .is_ok(),
                "{h}"
            );
        }
        for h in ["Basic s3cret", "Bearer", "Bearers3cret", "bearer wrong"] {
            assert!(
                auth.check_admin(&Peer::default(), &headers(Some(h)))
                    .is_err(),
                "{h}"
            );
        }
    }

    #[test]
    fn hosts_act_only_as_themselves() {
        let h1 = Caller::Host("h1".into());
        assert_eq!(h1.act_for("").unwrap(), "h1");
        assert_eq!(h1.act_for("h1").unwrap(), "h1");
        assert!(matches!(h1.act_for("h2"), Err(Error::Forbidden(_))));
        assert!(matches!(
            Caller::Unnamed.act_for("h1"),
            Err(Error::Forbidden(_))
        ));
        assert_eq!(Caller::Admin.act_for("h2").unwrap(), "h2");
        assert_eq!(Caller::Insecure.act_for("h2").unwrap(), "h2");
    }

    #[test]
    fn insecure_mode_without_token_is_open() {
        let auth = Auth {
            token: None,
            tls: false,
        };
        assert_eq!(
            auth.check_agent(&Peer::default(), &headers(None)).unwrap(),
            Caller::Insecure
        );
        assert!(auth.check_admin(&Peer::default(), &headers(None)).is_ok());
        assert!(auth
            .check_admin(&Peer::default(), &headers(Some("Bearer x")))
            .is_err());
    }
}
