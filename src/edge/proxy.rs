//! The client's address and scheme, believing `X-Forwarded-For`/`X-Forwarded-Proto`
//! only when the connection comes from a configured proxy network (anyone else
//! could forge them).

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use ipnet::IpNet;

/// The networks whose forwarding headers are trusted.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts `networks`.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// Where a request comes from, as far as it can be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's IP address.
    pub ip: Option<IpAddr>,
    /// `https` or `http` as the client used it.
    pub scheme: String,
}

/// The client address of `req`: the peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
pub fn client_address(req: &ServiceRequest, trusted: &TrustedProxies) -> ClientAddress {
    let peer = req.peer_addr().map(|a| a.ip());
    // Not `connection_info()`: it believes forwarding headers from anyone.
    let scheme = if req.conn_data::<super::TlsConnection>().is_some() {
        "https"
    } else {
        "http"
    }
    .to_owned();
    let direct = ClientAddress {
        ip: peer,
        scheme: scheme.clone(),
    };
    let Some(peer) = peer.filter(|ip| trusted.trusts(ip)) else {
        return direct;
    };
    let header = |name: &str| -> Vec<String> {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut ip = peer;
    for hop in header("x-forwarded-for").iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(hop) if trusted.trusts(&hop) => ip = hop,
            Ok(hop) => {
                ip = hop;
                break;
            }
            // Garbage in the chain: stop at the last hop we could believe.
            Err(_) => break,
        }
    }
    let scheme = header("x-forwarded-proto")
        .last()
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| s == "http" || s == "https")
        .unwrap_or(scheme);
    ClientAddress {
        ip: Some(ip),
        scheme,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")])
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let req = TestRequest::default()
            .peer_addr("203.0.113.9:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "198.51.100.1"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_srv_request();
        let client = client_address(&req, &trusted());
        assert_eq!(client.ip, Some("203.0.113.9".parse().expect("ip")));
        assert_eq!(client.scheme, "http");
    }

    #[test]
    fn a_trusted_proxy_chain_yields_the_first_untrusted_hop() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "6.6.6.6, 198.51.100.1, 10.1.1.1"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_srv_request();
        let client = client_address(&req, &trusted());
        // 6.6.6.6 was written by the client itself: it is not believed.
        assert_eq!(client.ip, Some("198.51.100.1".parse().expect("ip")));
        assert_eq!(client.scheme, "https");
    }

    #[test]
    fn garbage_stops_the_walk() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "not-an-ip"))
            .insert_header(("x-forwarded-proto", "gopher"))
            .to_srv_request();
        let client = client_address(&req, &trusted());
        assert_eq!(client.ip, Some("10.0.0.2".parse().expect("ip")));
        assert_eq!(client.scheme, "http");
    }
}
