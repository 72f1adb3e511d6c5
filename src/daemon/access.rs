//! The daemon's identity and admission setup at start: TLS, tokens, plain TCP, the store.
//!
//! Kept apart from the listeners so the startup rule is in one place: TCP needs TLS or tokens,
//! or an explicit `insecure_tcp = true`, which is logged loudly. Anything unusable stops the
//! start (fail closed) with a message naming the setting.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::{Config, Error};
use crate::admission::{self, Admission};
use crate::auth::Authenticator;
use crate::policy::PolicySet;

/// What `serve` needs for identity and admission.
pub struct Access {
    /// Identifies callers.
    pub auth: Arc<Authenticator>,
    /// The admission stage.
    pub admission: Admission,
    /// TLS for the TCP listener.
    pub tls: Option<ServerTlsConfig>,
}

/// Checks the settings and opens what they name.
pub fn prepare(config: &Config, policy: &PolicySet) -> Result<Access, Error> {
    if config.listen.is_some()
        && config.tls.is_none()
        && config.tokens.is_empty()
        && !config.insecure_tcp
    {
        return Err(Error::Access(
            "refusing to listen on TCP without TLS or bearer tokens: configure [tls] or [tokens], or set insecure_tcp = true to accept anyone who can reach the address".to_owned(),
        ));
    }
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| Error::Access(format!("tls: cannot read {}: {e}", path.display())))
            };
            let mut tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
            if let Some(ca) = &files.client_ca {
                tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
            }
            Some(tls)
        }
    };
    let store =
        admission::config::open_store(&config.store).map_err(|e| Error::Access(e.to_string()))?;
    tracing::info!(
        state_dir = %config.store.state_dir.display(),
        redis = config.store.redis.is_some(),
        on_store_failure = ?config.store.on_failure,
        "admission store open"
    );
    if config.admission.default_callers.is_empty() {
        tracing::warn!(
            "default_callers is empty: tools without a `callers` key can be called by nobody"
        );
    }
    Ok(Access {
        auth: Arc::new(Authenticator::new(&config.tokens, config.insecure_tcp)),
        admission: Admission::new(config.admission.clone(), store, policy),
        tls,
    })
}

/// Says, at the level it deserves, how the TCP listener authenticates.
pub fn announce_tcp(config: &Config, addr: SocketAddr) {
    match (&config.tls, config.tokens.is_empty(), config.insecure_tcp) {
        (Some(tls), _, _) if tls.client_ca.is_some() => {
            tracing::info!(%addr, tokens = !config.tokens.is_empty(), "listening on TCP with mutual TLS");
        }
        (Some(_), false, _) => tracing::info!(%addr, "listening on TCP with TLS and bearer tokens"),
        (None, false, _) => tracing::warn!(
            %addr,
            "listening on TCP with bearer tokens but WITHOUT TLS: tokens travel in clear; configure [tls]"
        ),
        _ => tracing::error!(
            %addr,
            "insecure_tcp = true: listening on TCP WITHOUT authentication: anyone who can reach this address is an anonymous caller"
        ),
    }
}
