//! Protocol upgrades (WebSocket): one dedicated backend connection per
//! tunnel, then bytes copied both ways until either side closes.
//!
//! An upgraded connection leaves HTTP for good, so it never comes from or
//! returns to the keep-alive pool. The tunnel still counts as its client's
//! connection: see [`super::Tunnels`].

use http::header::UPGRADE;
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use super::body::ProxyBody;
use super::Upgrade;
use crate::headers;
use crate::upstream::{Backend, Cluster, UpstreamError};

/// Sends an upgrade request (origin-form URI) to `backend` on a fresh
/// connection. On `101 Switching Protocols` to a protocol the request
/// offered, spawns the tunnel and returns the 101 for the client; a 101 to
/// any other protocol is an error (a 502); any other response is forwarded
/// as usual. The outcome goes to the backend's load, as a pooled
/// exchange's does.
pub(super) async fn tunnel(
    cluster: &Cluster,
    backend: &Backend,
    upgrade: Upgrade,
    tunnels: &super::Tunnels,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let Upgrade {
        request,
        client_side,
        offered,
        header_timeout,
        in_flight,
        ..
    } = upgrade;

    let sent = std::time::Instant::now();
    let answer = async {
        // TCP (and TLS for a TLS upstream) within the connect timeout.
        let stream = backend.open().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Upgrade)?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(cause = %err, "upgrade connection to backend ended");
            }
        });
        tokio::time::timeout(header_timeout, sender.send_request(*request))
            .await
            .map_err(|_| UpstreamError::ResponseTimeout(header_timeout))?
            .map_err(UpstreamError::Upgrade)
    };
    let mut response = match answer.await {
        Ok(response) if !response.status().is_server_error() => {
            let now = std::time::Instant::now();
            in_flight.answered(now.saturating_duration_since(sent), now.into());
            response
        }
        Ok(response) => {
            in_flight.failed();
            response
        }
        Err(err) => {
            in_flight.failed();
            return Err(err);
        }
    };

    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        headers::rewrite_response(&mut parts.headers, false);
        return Ok(Response::from_parts(parts, ProxyBody::incoming(body, sent)));
    }
    if !headers::upgrade_accepted(response.headers(), &offered) {
        return Err(UpstreamError::UnofferedProtocol {
            answered: response.headers().get(UPGRADE).cloned(),
            offered,
        });
    }

    let upstream_side = hyper::upgrade::on(&mut response);
    let span = tracing::debug_span!("tunnel", upstream = %cluster.name, backend = %backend.addr);
    let hold = tunnels.hold.clone();
    tunnels.tasks.spawn(
        async move {
            // The client connection's place under its listener's limit, held
            // for as long as the tunnel is open.
            let _hold = hold;
            let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(cause = %err, "upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(err) => tracing::debug!(cause = %err, "tunnel closed with error"),
            }
        }
        .instrument(span),
    );

    let (mut parts, _) = response.into_parts();
    headers::rewrite_response(&mut parts.headers, true);
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}
