//! Who is calling: the caller's identity, taken from the connection, never from the request.
//!
//! On the Unix socket the kernel tells the peer's uid, gid and pid (SO_PEERCRED), which the
//! caller cannot forge. On TCP the remote address is recorded; identity by mutual TLS or token
//! comes with admission control.

use std::net::SocketAddr;

use serde::Serialize;
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};

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
    },
    /// A TCP peer.
    Tcp {
        /// Remote address.
        addr: SocketAddr,
    },
    /// A connection whose transport reported nothing (not expected from the listeners).
    Unknown,
}

impl Caller {
    /// Reads the caller from what the listener attached to the request.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        if let Some(info) = request.extensions().get::<UdsConnectInfo>()
            && let Some(cred) = info.peer_cred
        {
            return Self::Unix {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            };
        }
        if let Some(addr) = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
        {
            return Self::Tcp { addr };
        }
        Self::Unknown
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix { uid, gid, pid } => {
                write!(f, "uid={uid} gid={gid}")?;
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
            Self::Tcp { addr } => write!(f, "tcp {addr}"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}
