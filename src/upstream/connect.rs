//! Opening connections to a backend: TCP, then TLS for a TLS upstream, both
//! within the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::error::UpstreamError;

/// A connection to a backend: plain TCP, or TLS over it.
pub type UpstreamIo = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// How to reach a backend over TLS: the connector and the name its
/// certificate must carry.
#[derive(Clone)]
pub struct UpstreamTls {
    /// rustls, with the cluster's roots and client certificate.
    pub connector: tokio_rustls::TlsConnector,
    /// The name the backend's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Opens connections to one backend address.
pub struct Connector {
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<UpstreamTls>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// Connects to `addr` within `timeout`, over TLS when `tls` is set.
    pub fn new(addr: SocketAddr, timeout: Duration, tls: Option<UpstreamTls>) -> Self {
        Self { addr, timeout, tls }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a connection: TCP, then TLS for a TLS upstream, both within
    /// the connect timeout.
    pub async fn open(&self) -> Result<UpstreamIo, UpstreamError> {
        let open = async {
            let stream = TcpStream::connect(self.addr).await.map_err(UpstreamError::Connect)?;
            // Best effort: without NODELAY small requests wait for Nagle, but still arrive.
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => Ok(Either::Left(stream)),
                Some(tls) => tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map(Either::Right)
                    .map_err(UpstreamError::Tls),
            }
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.timeout))?
    }
}
