//! Connecting to the daemon: a gRPC client over its Unix socket, for the CLI and for tests.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::api::pb::tool_gate_client::ToolGateClient;

/// Connects to the daemon listening on the Unix socket at `path`.
pub async fn connect_unix(path: &Path) -> Result<ToolGateClient<Channel>, tonic::transport::Error> {
    Ok(ToolGateClient::new(channel_unix(path).await?))
}

/// A gRPC channel to the Unix socket at `path`, for any of the daemon's services (toolgate,
/// health, reflection).
pub async fn channel_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The URI is required by the HTTP/2 layer but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://toolgate.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(channel)
}
