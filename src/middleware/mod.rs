//! tower middleware between the server and the forwarding service, one
//! folder per layer, and [`stack`], the one function that composes them.

pub mod activity;

use activity::{Activity, TrackActivity, TrackActivityLayer};
use tower::ServiceBuilder;

use crate::proxy::ProxyService;

/// The service stack for one client connection, outermost layer first.
pub fn stack(proxy: ProxyService, activity: Activity) -> TrackActivity<ProxyService> {
    ServiceBuilder::new()
        // Outermost: counts requests in flight until their response body ends,
        // so the connection's idle timer never closes a connection mid-request.
        .layer(TrackActivityLayer::new(activity))
        // Innermost: route, rewrite headers, forward upstream, stream back.
        .service(proxy)
}
