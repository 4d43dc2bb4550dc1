//! Protocol upgrades (WebSocket): one dedicated backend connection per
//! tunnel, then bytes copied both ways until either side closes.
//!
//! An upgraded connection leaves HTTP for good, so it never comes from or
//! returns to the keep-alive pool. The tunnel still counts as its client's
//! connection: see [`super::Tunnels`].

use std::time::Duration;

use http::header::UPGRADE;
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use super::body::ProxyBody;
use super::error::{Phase, ProxyError};
use super::headers;
use super::pool::SendError;
use super::upstream::{Backend, Cluster};
use super::{error_chain, Upgrade};

/// Sends an upgrade request (origin-form URI) to `backend` on a fresh
/// connection. On `101 Switching Protocols` to a protocol the request
/// offered, spawns the tunnel and returns the 101 for the client; a 101 to
/// any other protocol is a 502; any other response is forwarded as usual.
pub(super) async fn tunnel(
    cluster: &Cluster,
    backend: &Backend,
    upgrade: Upgrade,
    tunnels: &super::Tunnels,
    connect_timeout: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    let failed = |cause: String| ProxyError::UpstreamFailed {
        upstream: cluster.name.clone(),
        backend: backend.addr.to_string(),
        cause,
    };
    let timed_out = |phase, after| ProxyError::UpstreamTimeout {
        upstream: cluster.name.clone(),
        backend: backend.addr.to_string(),
        phase,
        after,
    };
    let Upgrade {
        request,
        client_side,
        offered,
        header_timeout,
        ..
    } = upgrade;

    let sent = std::time::Instant::now();
    // TCP (and TLS for a TLS upstream) within the connect timeout.
    let stream = backend.open().await.map_err(|err| match err {
        SendError::ConnectTimeout => timed_out(Phase::Connect, connect_timeout),
        err => failed(error_chain(&err)),
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| failed(format!("handshake: {}", error_chain(&err))))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(cause = %err, "upgrade connection to backend ended");
        }
    });

    let mut response = tokio::time::timeout(header_timeout, sender.send_request(*request))
        .await
        .map_err(|_| timed_out(Phase::ResponseHeaders, header_timeout))?
        .map_err(|err| failed(error_chain(&err)))?;

    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        headers::rewrite_response(&mut parts.headers, false);
        return Ok(Response::from_parts(parts, ProxyBody::incoming(body, sent)));
    }
    if !headers::upgrade_accepted(response.headers(), &offered) {
        return Err(failed(format!(
            "101 switching to {:?}, which the client did not offer ({:?})",
            response.headers().get(UPGRADE),
            offered
        )));
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
