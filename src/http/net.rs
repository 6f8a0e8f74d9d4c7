//! Client addresses: `X-Forwarded-For` is believed only from trusted proxies.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

use crate::auth::ClientInfo;
use crate::auth::domain::MAX_USER_AGENT_CHARS;
use crate::config::HttpSettings;

/// Who is calling: the client IP and User-Agent, as sessions and events record them.
pub fn client_info(http: &HttpSettings, req: &HttpRequest) -> ClientInfo {
    ClientInfo {
        ip: client_ip(req, &http.trusted_proxies),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(MAX_USER_AGENT_CHARS).collect()),
    }
}

/// The client's IP: the peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` entry that is not itself trusted.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip())?;
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    // Walk back from the nearest hop; the first untrusted address is the
    // client as far as anyone we trust can vouch.
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !is_trusted(**ip, trusted))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer),
    )
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, xff: Option<&str>) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(format!("{peer}:1234").parse().unwrap());
        if let Some(x) = xff {
            r = r.insert_header(("x-forwarded-for", x));
        }
        r.to_http_request()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let ip = client_ip(&req("203.0.113.9", Some("1.2.3.4")), &[]);
        assert_eq!(ip, Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_is_used_behind_a_trusted_proxy() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip(&req("10.1.2.3", Some("1.2.3.4, 10.9.9.9")), &trusted);
        assert_eq!(ip, Some("1.2.3.4".parse().unwrap()));
        // A client cannot spoof past the first untrusted hop.
        let ip = client_ip(&req("10.1.2.3", Some("6.6.6.6, 5.5.5.5")), &trusted);
        assert_eq!(ip, Some("5.5.5.5".parse().unwrap()));
    }
}
