//! Who is calling: the caller's identity, taken from the connection, never from the request body.
//!
//! - Unix socket: the kernel tells the peer's uid, gid and pid (SO_PEERCRED), which the caller
//!   cannot forge; the user name and group names are resolved through NSS and cached per
//!   (uid, gid) for a minute, so a policy check never waits on a name lookup.
//! - TCP with mutual TLS: the client certificate was verified against the configured CA by
//!   rustls before any request arrives; its subject CN and SAN entries are the identity.
//! - TCP with a bearer token (`authorization: Bearer ...`): the token's SHA-256 is looked up
//!   among the digests in the daemon config; the config never holds a token in clear.
//! - TCP with neither is anonymous, which only `insecure_tcp = true` permits; otherwise it is
//!   refused as UNAUTHENTICATED. A token that matches nothing is always refused, never ignored.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tonic::transport::server::UdsConnectInfo;

/// How long resolved user and group names are reused.
const NAME_TTL: Duration = Duration::from_secs(60);

/// The identity of the process or host on the other end of the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "transport", rename_all = "snake_case")]
pub enum Caller {
    /// A local process on the Unix socket, as the kernel reports it.
    Unix {
        /// Effective user id.
        uid: u32,
        /// Effective group id.
        gid: u32,
        /// Process id at connect time.
        pid: Option<i32>,
        /// The uid's user name, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Names of the gid and of the user's groups in the group database.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
    },
    /// A TCP peer.
    Tcp {
        /// Remote address.
        addr: SocketAddr,
        /// The verified client certificate's names, with mutual TLS.
        #[serde(skip_serializing_if = "Option::is_none")]
        cert: Option<CertIdentity>,
        /// The name of the bearer token presented, when one matched.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A connection whose transport reported nothing (not expected from the listeners).
    Unknown,
}

/// Names from a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertIdentity {
    /// The subject's common name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Subject alternative names: DNS names, URIs, e-mail addresses and IP addresses as text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub san: Vec<String>,
}

impl Caller {
    /// The name rate limits and quotas count this caller under: one principal, the strongest
    /// identity the connection proved (certificate, then token, then address for insecure TCP).
    pub fn principal(&self) -> Option<String> {
        match self {
            Self::Unix { uid, .. } => Some(format!("uid:{uid}")),
            Self::Tcp {
                cert: Some(cert), ..
            } => cert
                .cn
                .clone()
                .or_else(|| cert.san.first().cloned())
                .map(|name| format!("cert:{name}")),
            Self::Tcp {
                token: Some(name), ..
            } => Some(format!("token:{name}")),
            Self::Tcp { addr, .. } => Some(format!("tcp:{}", addr.ip())),
            Self::Unknown => None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix {
                uid,
                gid,
                pid,
                user,
                ..
            } => {
                write!(f, "uid={uid} gid={gid}")?;
                if let Some(user) = user {
                    write!(f, " user={user}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
            Self::Tcp { addr, cert, token } => {
                write!(f, "tcp {addr}")?;
                if let Some(cn) = cert.as_ref().and_then(|c| c.cn.as_ref()) {
                    write!(f, " cert={cn}")?;
                }
                if let Some(token) = token {
                    write!(f, " token={token}")?;
                }
                Ok(())
            }
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// Why a connection's identity was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A bearer token was presented that matches no configured token.
    #[error("the bearer token is not valid for this daemon; ask its operator for one")]
    BadToken,
    /// A TCP caller proved no identity and the daemon is not in insecure mode.
    #[error(
        "this daemon requires a client certificate (mutual TLS) or a bearer token on TCP; present one"
    )]
    Anonymous,
    /// The `authorization` header is not `Bearer TOKEN`.
    #[error("the authorization header must be `Bearer TOKEN`")]
    MalformedToken,
}

impl Error {
    /// The audit record's rule.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::BadToken | Self::MalformedToken => "auth.token",
            Self::Anonymous => "auth.anonymous",
        }
    }
}

/// The SHA-256 of `token` as lowercase hex: how the config stores tokens.
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

type Names = (Option<String>, Vec<String>, Instant);

/// Identifies callers from their connection, with the daemon's token table.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// Token digest (hex) → token name.
    tokens: HashMap<String, String>,
    insecure_tcp: bool,
    names: Mutex<HashMap<(u32, u32), Names>>,
}

impl Authenticator {
    /// An authenticator accepting `tokens` (name → SHA-256 hex), and anonymous TCP callers only
    /// when `insecure_tcp`.
    pub fn new(tokens: &BTreeMap<String, String>, insecure_tcp: bool) -> Self {
        Self {
            tokens: tokens
                .iter()
                .map(|(name, digest)| (digest.to_ascii_lowercase(), name.clone()))
                .collect(),
            insecure_tcp,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the caller from what the listener attached to the request.
    pub fn identify<T>(&self, request: &tonic::Request<T>) -> Result<Caller, Error> {
        if let Some(info) = request.extensions().get::<UdsConnectInfo>()
            && let Some(cred) = info.peer_cred
        {
            let (user, groups) = self.names(cred.uid(), cred.gid());
            return Ok(Caller::Unix {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
                user,
                groups,
            });
        }
        let Some(addr) = request.remote_addr() else {
            return Ok(Caller::Unknown);
        };
        let cert = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| cert_identity(c.as_ref())));
        let token = match request.metadata().get("authorization") {
            Some(value) => {
                let value = value.to_str().map_err(|_| Error::MalformedToken)?;
                let token = value
                    .strip_prefix("Bearer ")
                    .ok_or(Error::MalformedToken)?
                    .trim();
                Some(
                    self.tokens
                        .get(&token_digest(token))
                        .cloned()
                        .ok_or(Error::BadToken)?,
                )
            }
            None => None,
        };
        if cert.is_none() && token.is_none() && !self.insecure_tcp {
            return Err(Error::Anonymous);
        }
        Ok(Caller::Tcp { addr, cert, token })
    }

    /// The user name and group names of (uid, gid), cached.
    fn names(&self, uid: u32, gid: u32) -> (Option<String>, Vec<String>) {
        let now = Instant::now();
        let mut cache = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((user, groups, at)) = cache.get(&(uid, gid))
            && now.duration_since(*at) < NAME_TTL
        {
            return (user.clone(), groups.clone());
        }
        let (user, groups) = resolve_names(uid, gid);
        if cache.len() > 4096 {
            cache.clear(); // bounded: a cache, not a record
        }
        cache.insert((uid, gid), (user.clone(), groups.clone(), now));
        (user, groups)
    }
}

/// Resolves names through NSS; a uid without a name is still a uid (selectors by uid work).
fn resolve_names(uid: u32, gid: u32) -> (Option<String>, Vec<String>) {
    use nix::unistd::{Gid, Group, Uid, User};
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let mut gids = vec![Gid::from_raw(gid)];
    if let Some(user) = &user
        && let Ok(name) = std::ffi::CString::new(user.name.clone())
        && let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
    {
        gids.extend(list);
    }
    let mut groups: Vec<String> = gids
        .into_iter()
        .filter_map(|g| Group::from_gid(g).ok().flatten().map(|g| g.name))
        .collect();
    groups.dedup();
    (user.map(|u| u.name), groups)
}

/// The CN and SAN entries of a DER certificate (already verified by rustls).
pub fn cert_identity(der: &[u8]) -> CertIdentity {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return CertIdentity {
            cn: None,
            san: Vec::new(),
        };
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut san = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    san.push((*s).to_owned());
                }
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let b: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
                        san.push(std::net::Ipv4Addr::from(b).to_string());
                    }
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(bytes);
                        san.push(std::net::Ipv6Addr::from(b).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    CertIdentity { cn, san }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digests_are_sha256_hex() {
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn root_resolves_to_names() {
        let (user, groups) = resolve_names(0, 0);
        assert_eq!(user.as_deref(), Some("root"));
        assert!(groups.iter().any(|g| g == "root"), "{groups:?}");
    }

    #[test]
    fn principals() {
        let tcp = |cert, token| Caller::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
            cert,
            token,
        };
        let cert = CertIdentity {
            cn: Some("agent-1".into()),
            san: vec!["agent-1.example".into()],
        };
        assert_eq!(tcp(Some(cert), None).principal().unwrap(), "cert:agent-1");
        assert_eq!(
            tcp(None, Some("ci".into())).principal().unwrap(),
            "token:ci"
        );
        assert_eq!(tcp(None, None).principal().unwrap(), "tcp:127.0.0.1");
        assert_eq!(Caller::Unknown.principal(), None);
    }
}
