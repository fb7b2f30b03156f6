//! Which endpoints a webhook may call.
//!
//! A webhook makes Gatehouse send requests to an address a community admin
//! chose, from inside the deployment's network. So: HTTPS only (the body
//! describes members and wallets, and the signature proves only who sent
//! it, not who read it), no credentials in the URL (they would sit in the
//! database and in every log line that shows it), and no literal address
//! inside the deployment (loopback, private, link-local, ...), the classic
//! request-forgery targets. Plain HTTP to this machine is for tests and the
//! demo only, behind [`UrlPolicy::allow_insecure_loopback`].
//!
//! A host *name* cannot be judged here (it may resolve elsewhere tomorrow):
//! the worker checks every address it resolves to with
//! [`UrlPolicy::allows_ip`] when it connects, and follows no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Longest URL accepted (the column's limit).
pub const MAX_URL_LEN: usize = 2048;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allows `http://` and `https://` to 127.0.0.0/8, `::1` and
    /// `localhost`. Never in production: it is how tests and the demo reach
    /// a receiver on this machine.
    pub allow_insecure_loopback: bool,
}

impl UrlPolicy {
    /// The URL parsed, or why it is refused (a sentence about the URL,
    /// never quoting it: it may carry a token in its path).
    pub fn check(&self, raw: &str) -> Result<Url, String> {
        if raw.len() > MAX_URL_LEN {
            return Err(format!("must be at most {MAX_URL_LEN} characters"));
        }
        let url = Url::parse(raw.trim()).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials (user:password@); authenticate the request with its signature instead".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a #fragment (it is never sent)".into());
        }
        let host = url.host().ok_or("must name a host")?;
        let loopback = match &host {
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
            Host::Ipv4(ip) => ip.is_loopback(),
            Host::Ipv6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        if loopback {
            if !self.allow_insecure_loopback {
                return Err("must not point at this machine (loopback)".into());
            }
            return match url.scheme() {
                "http" | "https" => Ok(url),
                _ => Err("must use https (or http to this machine in tests)".into()),
            };
        }
        if url.scheme() != "https" {
            return Err("must use https".into());
        }
        let internal = match host {
            Host::Domain(_) => false,
            Host::Ipv4(ip) => internal_v4(ip),
            Host::Ipv6(ip) => internal_v6(ip),
        };
        if internal {
            return Err(
                "must not point at a private, link-local or otherwise internal address".into(),
            );
        }
        Ok(url)
    }

    /// Whether an address the worker is about to connect to is one a
    /// webhook may reach.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let (loopback, internal) = match ip {
            IpAddr::V4(v4) => (v4.is_loopback(), internal_v4(v4)),
            IpAddr::V6(v6) => (
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
                internal_v6(v6),
            ),
        };
        if loopback {
            self.allow_insecure_loopback
        } else {
            !internal
        }
    }
}

/// Addresses that are not the public internet.
fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8 ("this network"), 100.64.0.0/10 (carrier-grade NAT),
        // 198.18.0.0/15 (benchmarking), 240.0.0.0/4 (reserved).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: UrlPolicy = UrlPolicy {
        allow_insecure_loopback: false,
    };
    const TESTS: UrlPolicy = UrlPolicy {
        allow_insecure_loopback: true,
    };

    #[test]
    fn public_https_is_accepted() {
        for ok in [
            "https://hooks.example.com/gatehouse",
            "https://hooks.example.com:8443/a?b=c",
            "https://93.184.216.34/hook",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        ] {
            assert!(STRICT.check(ok).is_ok(), "{ok}: {:?}", STRICT.check(ok));
        }
    }

    #[test]
    fn plain_http_is_refused_except_to_loopback_when_allowed() {
        let e = STRICT.check("http://hooks.example.com/x").unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(TESTS.check("http://hooks.example.com/x").is_err());
        for local in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]:9/x",
            "http://localhost/x",
        ] {
            assert!(TESTS.check(local).is_ok(), "{local}");
            let e = STRICT.check(local).unwrap_err();
            assert!(e.contains("loopback"), "{local}: {e}");
        }
        assert!(TESTS.check("ftp://127.0.0.1/x").is_err());
    }

    #[test]
    fn credentials_fragments_and_internal_addresses_are_refused() {
        let e = TESTS
            .check("https://user:hunter2@hooks.example.com/x")
            .unwrap_err();
        assert!(e.contains("credentials") && !e.contains("hunter2"), "{e}");
        assert!(STRICT.check("https://token@hooks.example.com/x").is_err());
        assert!(STRICT.check("https://hooks.example.com/x#frag").is_err());
        for internal in [
            "https://10.0.0.5/x",
            "https://192.168.1.1/x",
            "https://172.16.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
        ] {
            // Allowing loopback does not open the rest of the network.
            for policy in [STRICT, TESTS] {
                let e = policy.check(internal).unwrap_err();
                assert!(e.contains("internal"), "{internal}: {e}");
            }
        }
        assert!(STRICT.check("not a url").is_err());
        assert!(STRICT
            .check(&format!("https://a.example/{}", "x".repeat(2048)))
            .is_err());
    }

    #[test]
    fn connection_addresses_follow_the_same_rules() {
        assert!(STRICT.allows_ip("93.184.216.34".parse().unwrap()));
        assert!(!STRICT.allows_ip("10.1.2.3".parse().unwrap()));
        assert!(!STRICT.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(TESTS.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!TESTS.allows_ip("192.168.0.1".parse().unwrap()));
        assert!(!STRICT.allows_ip("::ffff:169.254.169.254".parse().unwrap()));
    }
}
