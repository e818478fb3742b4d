//! The DNS server (hickory-server's [`Server`] with our [`RequestHandler`]): answers
//! `apps.internal` from the [`Zone`], forwards other names to the host's resolvers, REFUSED
//! when it has none. Counts every answer by kind ([`Stats`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::{rdata::A, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::zone::{Answer, Zone};

/// TTL of `apps.internal` answers: short, instances come and go.
pub const TTL: u32 = 1;
/// How long one upstream resolver gets to answer a forwarded query.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Queries answered, by result.
#[derive(Debug, Default)]
pub struct Stats {
    /// `apps.internal` names with addresses.
    pub answered: AtomicU64,
    /// `apps.internal` names unknown.
    pub nxdomain: AtomicU64,
    /// Forwarded and answered by an upstream resolver.
    pub forwarded: AtomicU64,
    /// Outside the zone with no resolver to forward to.
    pub refused: AtomicU64,
    /// Malformed queries, or forwarding that failed.
    pub failed: AtomicU64,
}

impl Stats {
    pub fn render(&self) -> String {
        let mut s = String::from("# HELP weft_dns_queries_total DNS queries the agent answered, by result.\n# TYPE weft_dns_queries_total counter\n");
        for (result, c) in [
            ("answered", &self.answered),
            ("nxdomain", &self.nxdomain),
            ("forwarded", &self.forwarded),
            ("refused", &self.refused),
            ("failed", &self.failed),
        ] {
            s += &format!(
                "weft_dns_queries_total{{result=\"{result}\"}} {}\n",
                c.load(Ordering::Relaxed)
            );
        }
        s
    }
}

/// The request handler.
#[derive(Debug, Clone)]
pub struct Handler {
    pub zone: Arc<RwLock<Zone>>,
    pub upstreams: Arc<Vec<SocketAddr>>,
    pub stats: Arc<Stats>,
}

/// Sends `query` (a whole DNS message) to each upstream in turn until one answers with the
/// same id.
pub async fn forward(upstreams: &[SocketAddr], query: &[u8], id: u16) -> Option<Message> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(FORWARD_TIMEOUT, async {
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                if from != *up {
                    continue;
                }
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id => return Some(m),
                    _ => continue,
                }
            }
        })
        .await;
        if let Ok(Some(m)) = got {
            return Some(m);
        }
        tracing::debug!(upstream = %up, "dns: upstream did not answer");
    }
    None
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| failed(request));
        };
        let name = info.query.name().to_string();
        let qtype = info.query.query_type();
        let answer = self
            .zone
            .read()
            .map(|z| z.lookup(&name))
            .unwrap_or(Answer::NxDomain);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let sent = match answer {
            Answer::Addresses(ips) => {
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                metadata.authoritative = true;
                let owner = Name::from(info.query.name().clone());
                let records: Vec<Record> = if qtype == RecordType::A || qtype == RecordType::ANY {
                    ips.iter()
                        .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
                        .collect()
                } else {
                    Vec::new()
                };
                response
                    .send_response(builder.build(metadata, records.iter(), [], [], []))
                    .await
            }
            Answer::NxDomain => {
                self.stats.nxdomain.fetch_add(1, Ordering::Relaxed);
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                response
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            Answer::Forward if self.upstreams.is_empty() => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                metadata.response_code = ResponseCode::Refused;
                response
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            Answer::Forward => {
                match forward(&self.upstreams, request.as_slice(), request.metadata.id).await {
                    Some(m) => {
                        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        metadata.response_code = m.metadata.response_code;
                        metadata.authoritative = false;
                        response
                            .send_response(builder.build(
                                metadata,
                                m.answers.iter(),
                                m.authorities.iter(),
                                [],
                                m.additionals.iter(),
                            ))
                            .await
                    }
                    None => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        metadata.response_code = ResponseCode::ServFail;
                        response
                            .send_response(builder.build_no_records(metadata))
                            .await
                    }
                }
            }
        };
        sent.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "dns: sending the answer failed");
            failed(request)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{MessageType, OpCode, Query};

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    /// A fake upstream on loopback: answers the first query with `ip` (and a wrong id
    /// first, which must be ignored).
    async fn upstream(ip: Ipv4Addr) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut wrong = Message::new(
                q.metadata.id.wrapping_add(1),
                MessageType::Response,
                OpCode::Query,
            );
            wrong.add_answer(Record::from_rdata(
                Name::from_ascii("x.").unwrap(),
                5,
                RData::A(A(Ipv4Addr::LOCALHOST)),
            ));
            sock.send_to(&wrong.to_vec().unwrap(), from).await.unwrap();
            let mut a = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            a.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(A(ip)),
            ));
            sock.send_to(&a.to_vec().unwrap(), from).await.unwrap();
        });
        at
    }

    #[tokio::test]
    async fn forwarding_takes_the_answer_with_our_id_and_skips_silent_resolvers() {
        let ip = Ipv4Addr::new(192, 0, 2, 7);
        let good = upstream(ip).await;
        // A resolver that never answers (a bound socket that reads nothing) comes first.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = std::time::Instant::now();
        let m = forward(
            &[silent.local_addr().unwrap(), good],
            &query(4242, "example.com."),
            4242,
        )
        .await
        .expect("answer");
        assert!(
            started.elapsed() >= FORWARD_TIMEOUT,
            "the silent one was asked first"
        );
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.answers[0].data, RData::A(A(ip)));
        // Nobody answers: None (the handler says SERVFAIL).
        assert!(forward(
            &[silent.local_addr().unwrap()],
            &query(1, "example.com."),
            1
        )
        .await
        .is_none());
    }

    #[test]
    fn metrics_name_every_result() {
        let s = Stats::default();
        s.refused.fetch_add(2, Ordering::Relaxed);
        let m = s.render();
        assert!(
            m.contains("weft_dns_queries_total{result=\"refused\"} 2\n"),
            "{m}"
        );
        assert_eq!(m.matches("weft_dns_queries_total{").count(), 5);
    }
}
