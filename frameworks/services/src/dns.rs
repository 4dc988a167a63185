//! An authoritative DNS server for the names of services and their instances.
//!
//! Names under the configured domain (say `services.cairn`):
//! - `<service>.<domain>` has one A record per distinct instance address, and SRV records;
//! - `<instance>.<service>.<domain>` has the A record of that instance;
//! - `_<service>._tcp.<domain>` has one SRV record per instance, pointing at
//!   `<instance>.<service>.<domain>.` with the instance's port.
//!
//! Every record has a TTL of one second, as the set of instances changes all the time. The
//! server only speaks UDP: a response that does not fit the client's UDP payload size (512
//! bytes, or what its EDNS record advertises, up to 1232) loses its additional
//! section first, then trailing answers, with the TC flag set.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::PoisonError;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tracing::{debug, warn};

/// A healthy instance of a service, as the DNS server and load balancers see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// A DNS label naming the instance (letters, digits, '-'), unique within its service.
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
}

/// Service name (a DNS label) -> its healthy endpoints. The framework replaces entries as instances become healthy or go away.
pub type Directory =
    std::sync::Arc<std::sync::RwLock<std::collections::BTreeMap<String, Vec<Endpoint>>>>;

/// Time to live of every record served: instances come and go, so resolvers must not cache.
const TTL: u32 = 1;

/// The UDP payload size this server advertises in EDNS responses and the most it ever sends.
/// 1232 bytes avoids IP fragmentation on any path with an MTU of at least 1280 (the
/// recommendation of DNS Flag Day 2020).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP payload size a client without EDNS accepts (RFC 1035, section 4.2.1).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// Size of the fixed DNS header.
const HEADER_LEN: usize = 12;
/// Smallest possible encoding of a question: root name (1), type (2), class (2).
const MIN_QUESTION_LEN: usize = 5;
/// Smallest possible encoding of a resource record: root name (1), type, class, TTL, RDLENGTH.
const MIN_RECORD_LEN: usize = 11;

/// Answers one DNS query message (`query`, wire format) for names under `domain` (e.g. "services.cairn", no trailing dot, case-insensitive). Returns the response message bytes, or None when `query` cannot be parsed as a DNS query at all (then nothing is sent).
///
/// "Cannot be parsed at all" means shorter than a DNS header, or a header that marks the
/// message as a response (answering responses could make two servers loop). A readable query
/// header followed by garbage gets FORMERR.
///
/// AA is set on answers about names under `domain` (NOERROR, NXDOMAIN) and clear on REFUSED,
/// FORMERR and NOTIMP, where this server is not speaking as the authority for any name. A
/// query with EDNS gets an EDNS record back (version 0; other versions get BADVERS).
pub fn answer(
    query: &[u8],
    domain: &str,
    services: &BTreeMap<String, Vec<Endpoint>>,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.message_type() != MessageType::Query {
        return None;
    }

    let mut response = Message::new();
    response
        .set_id(header.id())
        .set_message_type(MessageType::Response)
        .set_op_code(header.op_code())
        .set_recursion_desired(header.recursion_desired())
        .set_recursion_available(false);

    // Checked before decoding: the decoder pre-allocates by the header's counts, so a tiny
    // packet claiming 65535 records would otherwise cost megabytes to reject.
    let request = if counts_fit(&header, query.len()) {
        Message::from_vec(query).ok()
    } else {
        None
    };

    if header.op_code() != OpCode::Query {
        if let Some(request) = &request {
            response.add_queries(request.queries().iter().cloned());
        }
        response.set_response_code(ResponseCode::NotImp);
        return encode(response, CLASSIC_UDP_PAYLOAD);
    }
    let Some(request) = request else {
        response.set_response_code(ResponseCode::FormErr);
        return encode(response, CLASSIC_UDP_PAYLOAD);
    };
    let [question] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return encode(response, CLASSIC_UDP_PAYLOAD);
    };
    response.add_query(question.clone());

    let mut limit = CLASSIC_UDP_PAYLOAD;
    if let Some(client_edns) = request.extensions() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD).set_version(0);
        response.set_edns(edns);
        // RFC 6891, section 6.1.3: only version 0 exists; anything else gets BADVERS.
        if client_edns.version() != 0 {
            response.set_response_code(ResponseCode::BADVERS);
            return encode(response, CLASSIC_UDP_PAYLOAD);
        }
        limit = client_edns
            .max_payload()
            .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD);
    }

    let resolution = match question.query_class() {
        DNSClass::IN | DNSClass::ANY => {
            resolve(question.name(), question.query_type(), domain, services)
        }
        // The directory only holds Internet-class data.
        _ => Resolution::refused(),
    };
    response
        .set_response_code(resolution.code)
        .set_authoritative(resolution.code != ResponseCode::Refused);
    response.insert_answers(resolution.answers);
    response.insert_additionals(resolution.additionals);
    encode(response, limit)
}

/// Whether a message of `len` bytes can hold the sections its header announces.
fn counts_fit(header: &Header, len: usize) -> bool {
    let records = usize::from(header.answer_count())
        + usize::from(header.name_server_count())
        + usize::from(header.additional_count());
    let needed = HEADER_LEN
        + usize::from(header.query_count()) * MIN_QUESTION_LEN
        + records * MIN_RECORD_LEN;
    needed <= len
}

/// What a name lookup produced, before encoding.
struct Resolution {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

impl Resolution {
    fn with_code(code: ResponseCode) -> Self {
        Self {
            code,
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn refused() -> Self {
        Self::with_code(ResponseCode::Refused)
    }

    fn nxdomain() -> Self {
        Self::with_code(ResponseCode::NXDomain)
    }

    fn empty() -> Self {
        Self::with_code(ResponseCode::NoError)
    }
}

/// Looks `qname` up in `services`. Owner names of answers are `qname` itself, so a client that
/// randomizes the case of its question (DNS 0x20) finds it preserved.
fn resolve(
    qname: &Name,
    qtype: RecordType,
    domain: &str,
    services: &BTreeMap<String, Vec<Endpoint>>,
) -> Resolution {
    let domain_labels = domain_labels(domain);
    let labels: Vec<Vec<u8>> = qname.iter().map(<[u8]>::to_ascii_lowercase).collect();
    let Some(prefix_len) = labels.len().checked_sub(domain_labels.len()) else {
        return Resolution::refused();
    };
    let (prefix, suffix) = labels.split_at(prefix_len);
    if suffix != domain_labels.as_slice() {
        return Resolution::refused();
    }

    match prefix {
        // The zone apex exists (it has children) but holds no data of its own.
        [] => Resolution::empty(),
        // `_tcp.<domain>` exists as the parent of the SRV names when any service does.
        [tcp] if tcp == b"_tcp" => {
            if services.is_empty() {
                Resolution::nxdomain()
            } else {
                Resolution::empty()
            }
        }
        [service] => match find_service(services, service) {
            None => Resolution::nxdomain(),
            Some((key, endpoints)) => match qtype {
                RecordType::A => address_records(qname, endpoints.iter()),
                RecordType::SRV => srv_records(qname, key, endpoints, &domain_labels),
                _ => Resolution::empty(),
            },
        },
        [underscored, tcp] if tcp == b"_tcp" && underscored.starts_with(b"_") => {
            let service = underscored.get(1..).unwrap_or_default();
            match find_service(services, service) {
                None => Resolution::nxdomain(),
                Some((key, endpoints)) => match qtype {
                    RecordType::SRV => srv_records(qname, key, endpoints, &domain_labels),
                    _ => Resolution::empty(),
                },
            }
        }
        [instance, service] => {
            let Some((_, endpoints)) = find_service(services, service) else {
                return Resolution::nxdomain();
            };
            let mut matching = endpoints
                .iter()
                .filter(|e| e.name.as_bytes().eq_ignore_ascii_case(instance))
                .peekable();
            if matching.peek().is_none() {
                return Resolution::nxdomain();
            }
            match qtype {
                RecordType::A => address_records(qname, matching),
                _ => Resolution::empty(),
            }
        }
        _ => Resolution::nxdomain(),
    }
}

/// The lowercase labels of `domain`, tolerating a trailing dot.
fn domain_labels(domain: &str) -> Vec<Vec<u8>> {
    domain
        .split('.')
        .filter(|label| !label.is_empty())
        .map(|label| label.as_bytes().to_ascii_lowercase())
        .collect()
}

/// The service named `label` (case-insensitively) and its endpoints.
fn find_service<'a>(
    services: &'a BTreeMap<String, Vec<Endpoint>>,
    label: &[u8],
) -> Option<(&'a String, &'a Vec<Endpoint>)> {
    if let Some(found) = std::str::from_utf8(label)
        .ok()
        .and_then(|name| services.get_key_value(name))
    {
        return Some(found);
    }
    services
        .iter()
        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(label))
}

/// One A record owned by `owner` per distinct address of `endpoints`, in address order.
fn address_records<'a>(owner: &Name, endpoints: impl Iterator<Item = &'a Endpoint>) -> Resolution {
    let addresses: BTreeSet<Ipv4Addr> = endpoints.map(|e| e.ip).collect();
    Resolution {
        code: ResponseCode::NoError,
        answers: addresses
            .into_iter()
            .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(ip))))
            .collect(),
        additionals: Vec::new(),
    }
}

/// One SRV record owned by `owner` per endpoint of `service`, with the A records of their
/// targets as additional data. Endpoints whose name cannot form a DNS name are left out.
fn srv_records(
    owner: &Name,
    service: &str,
    endpoints: &[Endpoint],
    domain_labels: &[Vec<u8>],
) -> Resolution {
    let mut sorted: Vec<&Endpoint> = endpoints.iter().collect();
    sorted.sort();
    sorted.dedup();

    let mut answers = Vec::with_capacity(sorted.len());
    let mut additionals = Vec::with_capacity(sorted.len());
    let mut glued = BTreeSet::new();
    for endpoint in sorted {
        let labels = [endpoint.name.as_bytes(), service.as_bytes()]
            .into_iter()
            .chain(domain_labels.iter().map(Vec::as_slice))
            .map(<[u8]>::to_ascii_lowercase);
        let target = match Name::from_labels(labels) {
            Ok(target) => target,
            Err(error) => {
                debug!(endpoint = %endpoint.name, %service, %error, "endpoint name is not a DNS name; no SRV record");
                continue;
            }
        };
        answers.push(Record::from_rdata(
            owner.clone(),
            TTL,
            RData::SRV(SRV::new(0, 1, endpoint.port, target.clone())),
        ));
        if glued.insert((target.clone(), endpoint.ip)) {
            additionals.push(Record::from_rdata(target, TTL, RData::A(A(endpoint.ip))));
        }
    }
    Resolution {
        code: ResponseCode::NoError,
        answers,
        additionals,
    }
}

/// Encodes `response` in at most `limit` bytes: the additional section goes first, then as
/// many trailing answers as needed, with TC set when answers had to go. A response that cannot
/// be encoded at all becomes a bare SERVFAIL.
fn encode(mut response: Message, limit: u16) -> Option<Vec<u8>> {
    let limit = usize::from(limit);
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return Some(bytes),
        Ok(_) => {}
        Err(error) => {
            warn!(%error, "cannot encode DNS response");
            return servfail(&response);
        }
    }

    response.additionals_mut().clear();
    if let Ok(bytes) = response.to_vec()
        && bytes.len() <= limit
    {
        return Some(bytes);
    }

    // Binary search for the most answers that fit; `fits` is monotonic in the count.
    let answers = response.take_answers();
    response.set_truncated(true);
    let fits = |response: &mut Message, count: usize| -> Option<Vec<u8>> {
        response.answers_mut().clear();
        response.add_answers(answers.iter().take(count).cloned());
        response.to_vec().ok().filter(|bytes| bytes.len() <= limit)
    };
    let (mut low, mut high) = (0, answers.len());
    let mut best = fits(&mut response, 0);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        match fits(&mut response, middle) {
            Some(bytes) => {
                best = Some(bytes);
                low = middle;
            }
            None => high = middle - 1,
        }
    }
    match best {
        Some(bytes) => Some(bytes),
        None => servfail(&response),
    }
}

/// A bare SERVFAIL answering the same message as `response`.
fn servfail(response: &Message) -> Option<Vec<u8>> {
    let mut failure = Message::error_msg(response.id(), response.op_code(), ResponseCode::ServFail);
    failure.set_recursion_desired(response.recursion_desired());
    failure.to_vec().ok()
}

/// Serves DNS over UDP on `socket` until an I/O error on the socket itself; malformed packets are dropped.
///
/// Errors that concern one peer rather than the socket (ICMP-reported resets, a failed send to
/// one address) are logged and the server goes on.
pub async fn serve(
    socket: tokio::net::UdpSocket,
    domain: String,
    directory: Directory,
) -> std::io::Result<()> {
    // The largest UDP payload there is, so no datagram is cut short.
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) if is_peer_error(&error) => {
                debug!(%error, "DNS receive error from a peer; continuing");
                continue;
            }
            Err(error) => return Err(error),
        };
        let Some(packet) = buffer.get(..len) else {
            continue;
        };
        let response = {
            let services = directory.read().unwrap_or_else(PoisonError::into_inner);
            // hickory-proto's decoder is third-party code fed by the network: a panic in it
            // must cost one packet, not the server.
            catch_unwind(AssertUnwindSafe(|| answer(packet, &domain, &services)))
        };
        match response {
            Ok(Some(bytes)) => {
                if let Err(error) = socket.send_to(&bytes, peer).await {
                    debug!(%peer, %error, "cannot send DNS response");
                }
            }
            Ok(None) => debug!(%peer, len, "dropped a packet that is not a DNS query"),
            Err(_) => warn!(%peer, len, "DNS query handling panicked; packet dropped"),
        }
    }
}

/// Whether a receive error reports trouble with one peer (or a spurious wakeup) rather than
/// with the socket.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    const DOMAIN: &str = "services.cairn";

    fn endpoint(name: &str, ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            ip: Ipv4Addr::from(ip),
            port,
        }
    }

    fn directory() -> BTreeMap<String, Vec<Endpoint>> {
        let mut services = BTreeMap::new();
        services.insert(
            "web".to_string(),
            vec![
                endpoint("web-2", [10, 0, 0, 2], 31002),
                endpoint("web-1", [10, 0, 0, 1], 31001),
                // Two instances on one host: one A record, two SRV records.
                endpoint("web-3", [10, 0, 0, 1], 31003),
            ],
        );
        services.insert("idle".to_string(), Vec::new());
        services
    }

    fn query_message(name: &str, qtype: RecordType) -> Message {
        let mut message = Message::new();
        message
            .set_id(0xbeef)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(hickory_proto::op::Query::query(
                Name::from_ascii(name).unwrap(),
                qtype,
            ));
        message
    }

    fn ask_message(message: &Message) -> Message {
        let bytes = answer(&message.to_vec().unwrap(), DOMAIN, &directory()).unwrap();
        Message::from_vec(&bytes).unwrap()
    }

    fn ask(name: &str, qtype: RecordType) -> Message {
        let response = ask_message(&query_message(name, qtype));
        assert_eq!(response.id(), 0xbeef);
        assert_eq!(response.message_type(), MessageType::Response);
        assert!(response.recursion_desired());
        assert!(!response.recursion_available());
        assert_eq!(response.queries().len(), 1);
        assert_eq!(response.queries()[0].name().to_string(), name);
        assert_eq!(response.queries()[0].query_type(), qtype);
        response
    }

    fn addresses(records: &[Record]) -> Vec<Ipv4Addr> {
        records
            .iter()
            .map(|record| {
                assert_eq!(record.ttl(), TTL);
                match record.data() {
                    RData::A(A(ip)) => *ip,
                    other => panic!("not an A record: {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn service_a_lists_distinct_addresses_sorted() {
        let response = ask("web.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.authoritative());
        assert_eq!(
            addresses(response.answers()),
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        for record in response.answers() {
            assert_eq!(
                record.name(),
                &Name::from_ascii("web.services.cairn.").unwrap()
            );
        }
    }

    #[test]
    fn names_are_case_insensitive_and_case_is_echoed() {
        let response = ask("WeB.Services.CAIRN.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert_eq!(response.answers().len(), 2);
        assert_eq!(
            response.answers()[0].name().to_string(),
            "WeB.Services.CAIRN."
        );
        let bytes = answer(
            &query_message("web-2.web.services.cairn.", RecordType::A)
                .to_vec()
                .unwrap(),
            "Services.Cairn.",
            &directory(),
        )
        .unwrap();
        let response = Message::from_vec(&bytes).unwrap();
        assert_eq!(
            addresses(response.answers()),
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn service_without_endpoints_is_empty_and_unknown_is_nxdomain() {
        let response = ask("idle.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty());
        assert!(response.authoritative());

        let response = ask("nope.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
        assert!(response.answers().is_empty());
        assert!(response.authoritative());

        let response = ask("_nope._tcp.services.cairn.", RecordType::SRV);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn instance_a_is_its_address() {
        let response = ask("web-3.web.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert_eq!(
            addresses(response.answers()),
            vec![Ipv4Addr::new(10, 0, 0, 1)]
        );

        let response = ask("web-9.web.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
        let response = ask("web-1.nope.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);
        let response = ask("a.web-1.web.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NXDomain);

        let response = ask("web-1.web.services.cairn.", RecordType::AAAA);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty());
    }

    fn check_srv(response: &Message, owner: &str) {
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.authoritative());
        let srvs: Vec<(u16, u16, u16, String)> = response
            .answers()
            .iter()
            .map(|record| {
                assert_eq!(record.ttl(), TTL);
                assert_eq!(record.name(), &Name::from_ascii(owner).unwrap());
                match record.data() {
                    RData::SRV(srv) => (
                        srv.priority(),
                        srv.weight(),
                        srv.port(),
                        srv.target().to_string(),
                    ),
                    other => panic!("not an SRV record: {other:?}"),
                }
            })
            .collect();
        assert_eq!(
            srvs,
            vec![
                (0, 1, 31001, "web-1.web.services.cairn.".to_string()),
                (0, 1, 31002, "web-2.web.services.cairn.".to_string()),
                (0, 1, 31003, "web-3.web.services.cairn.".to_string()),
            ]
        );
        let glue: Vec<(String, Ipv4Addr)> = response
            .additionals()
            .iter()
            .map(|record| {
                (
                    record.name().to_string(),
                    addresses(std::slice::from_ref(record))[0],
                )
            })
            .collect();
        assert_eq!(
            glue,
            vec![
                (
                    "web-1.web.services.cairn.".to_string(),
                    Ipv4Addr::new(10, 0, 0, 1)
                ),
                (
                    "web-2.web.services.cairn.".to_string(),
                    Ipv4Addr::new(10, 0, 0, 2)
                ),
                (
                    "web-3.web.services.cairn.".to_string(),
                    Ipv4Addr::new(10, 0, 0, 1)
                ),
            ]
        );
    }

    #[test]
    fn srv_lists_every_endpoint_with_glue() {
        check_srv(
            &ask("_web._tcp.services.cairn.", RecordType::SRV),
            "_web._tcp.services.cairn.",
        );
        check_srv(
            &ask("web.services.cairn.", RecordType::SRV),
            "web.services.cairn.",
        );
        let response = ask("_idle._tcp.services.cairn.", RecordType::SRV);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty());
    }

    #[test]
    fn other_types_of_known_names_are_empty() {
        for name in [
            "web.services.cairn.",
            "_web._tcp.services.cairn.",
            "services.cairn.",
            "_tcp.services.cairn.",
        ] {
            for qtype in [
                RecordType::TXT,
                RecordType::AAAA,
                RecordType::MX,
                RecordType::ANY,
            ] {
                let response = ask(name, qtype);
                assert_eq!(
                    response.response_code(),
                    ResponseCode::NoError,
                    "{name} {qtype}"
                );
                assert!(response.answers().is_empty(), "{name} {qtype}");
            }
        }
        let response = ask("_web._tcp.services.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.answers().is_empty());
    }

    #[test]
    fn names_outside_the_domain_are_refused() {
        for name in ["example.com.", "cairn.", "web.other.cairn.", "."] {
            let response = ask(name, RecordType::A);
            assert_eq!(response.response_code(), ResponseCode::Refused, "{name}");
            assert!(response.answers().is_empty());
            assert!(!response.authoritative());
        }
        // A suffix match on whole labels only.
        let response = ask("web.xservices.cairn.", RecordType::A);
        assert_eq!(response.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn other_opcodes_are_not_implemented() {
        let mut message = query_message("web.services.cairn.", RecordType::A);
        message.set_op_code(OpCode::Update);
        let response = ask_message(&message);
        assert_eq!(response.response_code(), ResponseCode::NotImp);
        assert_eq!(response.op_code(), OpCode::Update);
        assert!(response.answers().is_empty());

        message.set_op_code(OpCode::Unknown(9));
        let response = ask_message(&message);
        assert_eq!(response.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn question_count_other_than_one_is_formerr() {
        let mut message = query_message("web.services.cairn.", RecordType::A);
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("idle.services.cairn.").unwrap(),
            RecordType::A,
        ));
        let response = ask_message(&message);
        assert_eq!(response.response_code(), ResponseCode::FormErr);
        assert_eq!(response.id(), 0xbeef);
        assert!(response.answers().is_empty());

        let mut message = Message::new();
        message.set_id(7);
        let response = ask_message(&message);
        assert_eq!(response.response_code(), ResponseCode::FormErr);
        assert_eq!(response.id(), 7);
    }

    #[test]
    fn unparseable_input_is_dropped_or_formerr() {
        let services = directory();
        assert_eq!(answer(&[], DOMAIN, &services), None);
        assert_eq!(answer(&[1, 2, 3], DOMAIN, &services), None);
        // A response is never answered.
        let mut message = query_message("web.services.cairn.", RecordType::A);
        message.set_message_type(MessageType::Response);
        assert_eq!(answer(&message.to_vec().unwrap(), DOMAIN, &services), None);
        // A query header that claims 65535 questions in 12 bytes.
        let bytes = [0x12, 0x34, 0x01, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
        let response = Message::from_vec(&answer(&bytes, DOMAIN, &services).unwrap()).unwrap();
        assert_eq!(response.response_code(), ResponseCode::FormErr);
        assert_eq!(response.id(), 0x1234);
        assert!(response.recursion_desired());
    }

    #[test]
    fn non_internet_class_is_refused() {
        let mut message = query_message("web.services.cairn.", RecordType::A);
        message.queries_mut()[0].set_query_class(DNSClass::CH);
        let response = ask_message(&message);
        assert_eq!(response.response_code(), ResponseCode::Refused);
    }

    fn big_directory(count: u8) -> BTreeMap<String, Vec<Endpoint>> {
        let endpoints = (0..count)
            .map(|i| {
                endpoint(
                    &format!("big-instance-{i}"),
                    [10, 1, 0, i],
                    30000 + u16::from(i),
                )
            })
            .collect();
        BTreeMap::from([("big".to_string(), endpoints)])
    }

    #[test]
    fn oversized_responses_are_truncated_to_the_udp_payload_size() {
        let services = big_directory(200);
        let query = query_message("_big._tcp.services.cairn.", RecordType::SRV);
        let bytes = answer(&query.to_vec().unwrap(), DOMAIN, &services).unwrap();
        assert!(bytes.len() <= 512, "{}", bytes.len());
        let response = Message::from_vec(&bytes).unwrap();
        assert!(response.truncated());
        assert!(response.additionals().is_empty());
        assert!(!response.answers().is_empty());

        // With EDNS the client's payload size counts, up to our own.
        let mut query = query_message("big.services.cairn.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        query.set_edns(edns);
        let bytes = answer(&query.to_vec().unwrap(), DOMAIN, &services).unwrap();
        assert!(bytes.len() > 512 && bytes.len() <= usize::from(MAX_UDP_PAYLOAD));
        let response = Message::from_vec(&bytes).unwrap();
        assert!(response.truncated());
        assert_eq!(
            response.extensions().as_ref().map(Edns::max_payload),
            Some(MAX_UDP_PAYLOAD)
        );

        // A response that fits keeps everything and no TC flag.
        let services = big_directory(20);
        let bytes = answer(&query.to_vec().unwrap(), DOMAIN, &services).unwrap();
        let response = Message::from_vec(&bytes).unwrap();
        assert!(!response.truncated());
        assert_eq!(response.answers().len(), 20);
    }

    #[test]
    fn unknown_edns_version_is_badvers() {
        let mut query = query_message("web.services.cairn.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        query.set_edns(edns);
        let response = ask_message(&query);
        // BADVERS shares code 16 with BADSIG, which is what hickory-proto decodes it as.
        assert_eq!(u16::from(response.response_code()), 16);
        assert!(response.extensions().is_some());
        assert!(response.answers().is_empty());
    }

    /// A small deterministic generator, so failures reproduce.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let services = directory();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Half of the inputs look like plain queries, to get past the header checks.
            if bytes.len() >= 12 && rng.next().is_multiple_of(2) {
                bytes[2] &= 0x07;
                bytes[4] = 0;
                bytes[5] = 1;
            }
            if let Some(response) = answer(&bytes, DOMAIN, &services) {
                assert!(response.len() <= usize::from(MAX_UDP_PAYLOAD));
            }
        }
    }

    #[test]
    fn truncated_and_mutated_queries_never_panic() {
        let services = directory();
        let mut rng = XorShift(42);
        let mut queries = Vec::new();
        for (name, qtype) in [
            ("web.services.cairn.", RecordType::A),
            ("_web._tcp.services.cairn.", RecordType::SRV),
            ("web-1.web.services.cairn.", RecordType::A),
        ] {
            let mut query = query_message(name, qtype);
            queries.push(query.to_vec().unwrap());
            query.set_edns(Edns::new());
            queries.push(query.to_vec().unwrap());
        }
        for query in &queries {
            for len in 0..=query.len() {
                let _ = answer(&query[..len], DOMAIN, &services);
            }
            for _ in 0..2_000 {
                let mut mutated = query.clone();
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % mutated.len();
                    mutated[at] = rng.next() as u8;
                }
                let _ = answer(&mutated, DOMAIN, &services);
            }
        }
    }

    #[tokio::test]
    async fn serves_over_udp() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = server.local_addr().unwrap();
        let directory: Directory = Arc::new(RwLock::new(directory()));
        let task = tokio::spawn(serve(server, DOMAIN.to_string(), directory.clone()));

        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(address).await.unwrap();
        // Garbage first: it must be dropped without stopping the server.
        client.send(&[0xff; 5]).await.unwrap();

        let mut buffer = vec![0u8; 4096];
        let query = query_message("web.services.cairn.", RecordType::A)
            .to_vec()
            .unwrap();
        client.send(&query).await.unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .expect("no DNS response within 5 s")
            .unwrap();
        let response = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(response.id(), 0xbeef);
        assert_eq!(
            addresses(response.answers()),
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );

        // The directory is read at every query.
        directory
            .write()
            .unwrap()
            .insert("web".to_string(), vec![endpoint("web-7", [10, 0, 0, 7], 1)]);
        client.send(&query).await.unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .expect("no DNS response within 5 s")
            .unwrap();
        let response = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(
            addresses(response.answers()),
            vec![Ipv4Addr::new(10, 0, 0, 7)]
        );

        assert!(!task.is_finished());
        task.abort();
    }
}
