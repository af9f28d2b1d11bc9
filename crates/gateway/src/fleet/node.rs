//! The node's status under `P/nodes/ID`, on a lease: it disappears by itself ~15 s after the
//! node stops. Rewritten when the node applies or refuses a change and every 5 s (`last_seen`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::PutOptions;
use portcullis_config::shared::etcd::NodeStatus;
use tracing::debug;

use super::Fleet;
use super::store::unix_now;
use crate::control::Control;

/// Lease time to live, seconds.
const TTL: i64 = 15;
/// Status rewrite and keep-alive period.
const EVERY: Duration = Duration::from_secs(5);

/// Runs forever: registers the node and keeps its status current.
pub async fn run(control: Arc<Control>, fleet: Arc<Fleet>) {
    loop {
        if let Err(e) = session(&control, &fleet).await {
            debug!(error = %e, "node registration lost; retrying");
        }
        tokio::time::sleep(Duration::from_millis(500 + fastrand::u64(0..1000))).await;
    }
}

async fn session(control: &Arc<Control>, fleet: &Arc<Fleet>) -> Result<(), etcd_client::Error> {
    let store = fleet
        .connect()
        .await
        .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
    let mut client = store.client();
    let lease = client.lease_grant(TTL, None).await?.id();
    let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
    let key = fleet.layout.node_key(&fleet.node_id);
    let mut tick = tokio::time::interval(EVERY);
    loop {
        let status = status(control, fleet).await;
        client
            .put(
                key.as_str(),
                serde_json::to_string(&status).unwrap_or_default(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        tokio::select! {
            _ = tick.tick() => {
                keeper.keep_alive().await?;
                match replies.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(etcd_client::Error::LeaseKeepAliveError("the lease expired".into())),
                }
            }
            () = fleet.changed.notified() => {}
        }
    }
}

async fn status(control: &Arc<Control>, fleet: &Fleet) -> NodeStatus {
    let listeners = control
        .addresses()
        .await
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    NodeStatus {
        id: fleet.node_id.clone(),
        listeners,
        admin: control
            .admin_address()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        zone: std::env::var("PORTCULLIS_ZONE")
            .ok()
            .filter(|z| !z.is_empty()),
        version: env!("CARGO_PKG_VERSION").into(),
        generation: fleet.generation.load(Ordering::Relaxed),
        hash: (**fleet.applied_hash.load()).clone(),
        applied_at: fleet.applied_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        last_seen: unix_now(),
        revision: fleet.revision.load(Ordering::Relaxed),
        rejected: fleet.rejected.lock().ok().and_then(|r| r.clone()),
    }
}
