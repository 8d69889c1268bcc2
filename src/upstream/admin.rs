//! Admin handlers for the pools: `GET /__bext/upstreams` (every node's state,
//! in-flight count, counters and last error) and
//! `POST /__bext/upstreams/NAME/nodes/ID/drain|undrain` (shared with the
//! other nodes under `[cluster]`). Access control and dispatch live in
//! `crate::admin`.

use http::HeaderValue;
use pingora::proxy::Session;
use serde_json::json;

use super::Upstreams;
use crate::admin::error_body;
use crate::respond::json as respond_json;

/// The JSON document of `GET /__bext/upstreams`.
pub fn state(upstreams: &Upstreams) -> serde_json::Value {
    let pools: Vec<_> = upstreams
        .pools()
        .iter()
        .map(|p| {
            let nodes: Vec<_> = p.nodes().iter().map(|n| n.snapshot()).collect();
            json!({
                "name": p.name,
                "balance": format!("{:?}", p.policy.balance).to_lowercase(),
                "sticky": p.sticky().is_some(),
                "retries": p.policy.retries,
                "healthy_nodes": p.nodes().iter().filter(|n| n.available()).count(),
                "nodes": nodes,
            })
        })
        .collect();
    json!({ "upstreams": pools })
}

pub async fn list(
    session: &mut Session,
    upstreams: &Upstreams,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    respond_json(session, 200, &state(upstreams), request_id).await
}

/// `(upstream, node id, drain?)` from `/__bext/upstreams/NAME/nodes/ID/drain|undrain`.
pub fn parse_node_action(path: &str) -> Option<(&str, &str, bool)> {
    let rest = path.strip_prefix("/__bext/upstreams/")?;
    let mut parts = rest.split('/');
    let (name, nodes, id, action) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || nodes != "nodes" || name.is_empty() || id.is_empty() {
        return None;
    }
    let drain = match action {
        "drain" => true,
        "undrain" => false,
        _ => return None,
    };
    Some((name, id, drain))
}

/// With `[cluster]` the drain is also handed to `shared` (every node drains
/// the node), and the answer says whether it reached them (`"cluster"`).
pub async fn node_action(
    session: &mut Session,
    upstreams: &Upstreams,
    shared: &dyn crate::cluster::SharedState,
    request_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let path = session.req_header().uri.path().to_string();
    let Some((name, id, drain)) = parse_node_action(&path) else {
        return respond_json(
            session,
            404,
            &error_body("no such admin endpoint"),
            request_id,
        )
        .await;
    };
    let Some(pool) = upstreams.by_name(name) else {
        let body = error_body(&format!("no upstream named {name:?}"));
        return respond_json(session, 404, &body, request_id).await;
    };
    let Some(changed) = pool.set_drained(id, drain) else {
        let body = error_body(&format!("upstream {name:?} has no node {id:?}"));
        return respond_json(session, 404, &body, request_id).await;
    };
    let node = pool.node_by_id(id).map(|n| n.snapshot());
    let change = crate::cluster::StateChange::Drain {
        upstream: name.to_string(),
        node: id.to_string(),
        drained: drain,
    };
    let mut body = json!({ "upstream": name, "changed": changed, "node": node });
    if let Some(p) = shared.publish(change).await {
        body["cluster"] = p.as_str().into();
    }
    respond_json(session, 200, &body, request_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_action_paths() {
        assert_eq!(
            parse_node_action("/__bext/upstreams/phoenix/nodes/a1/drain"),
            Some(("phoenix", "a1", true))
        );
        assert_eq!(
            parse_node_action("/__bext/upstreams/phoenix/nodes/a1/undrain"),
            Some(("phoenix", "a1", false))
        );
        assert_eq!(
            parse_node_action("/__bext/upstreams/phoenix/nodes/a1/stop"),
            None
        );
        assert_eq!(
            parse_node_action("/__bext/upstreams/phoenix/nodes//drain"),
            None
        );
        assert_eq!(
            parse_node_action("/__bext/upstreams/phoenix/nodes/a1/drain/x"),
            None
        );
    }
}
