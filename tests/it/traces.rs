//! Traces over the wire (DESIGN.md, "Operations"): two `aurum serve`
//! processes export OTLP/HTTP to a test receiver, and a chat message sent
//! on node a and delivered on node b is one trace: the socket event, the
//! writer batch that stored it (linked), its query, the bus publish on a and
//! the bus receive on b. HTTP requests continue a caller's `traceparent`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;
use crate::helpers::node::ChildNode;
use crate::helpers::otlp::{OtlpReceiver, ReceivedSpan};
use crate::helpers::redis::TestRedis;
use crate::helpers::ws::RawClient;

/// The caller's span in the `traceparent` the test sends.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// OTLP's span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

async fn traced_node(app: &TestApp, redis: &TestRedis, receiver: &OtlpReceiver, node: &str) -> ChildNode {
    ChildNode::start(
        &app.db.url,
        &[
            ("REDIS_URL", redis.url()),
            ("REDIS_PREFIX", app.state.config.redis_prefix.clone()),
            ("NODE_ID", node.to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
            // Export within a tenth of a second, not the default five.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    )
    .await
}

/// `GET path` on `node` as `user` (an admin, who sees profiles awaiting
/// approval too), sent from inside the caller's span.
async fn traced_get(node: &ChildNode, app: &TestApp, user: i64, path: &str) -> serde_json::Value {
    let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let mut response = client
        .get(format!("{}{path}", node.base))
        .insert_header(("Authorization", format!("Bearer {}", app.admin_token(user))))
        .insert_header(("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn find(spans: &[ReceivedSpan], test: impl Fn(&ReceivedSpan) -> bool) -> Option<&ReceivedSpan> {
    spans.iter().find(|span| test(span))
}

#[actix_rt::test]
async fn a_message_sent_on_one_node_and_delivered_on_another_is_one_trace() {
    let app = TestApp::spawn().await;
    app.seed(1, 4, 21).await;
    let redis = TestRedis::start().await;
    let receiver = OtlpReceiver::start().await;
    let a = traced_node(&app, &redis, &receiver, "a").await;
    let b = traced_node(&app, &redis, &receiver, "b").await;

    let (mut alice, answer) = RawClient::connect(&a.ws_base, json!({ "token": app.token(1) })).await;
    assert!(answer.starts_with("40{"), "{answer}");
    let (mut bob, answer) = RawClient::connect(&b.ws_base, json!({ "token": app.token(2) })).await;
    assert!(answer.starts_with("40{"), "{answer}");
    // Until node a sees bob's lease, a message to him would not cross.
    let mut online = false;
    for _ in 0..100 {
        online = traced_get(&a, &app, 1, "/api/v1/profiles/2").await["online"] == true;
        if online {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(online, "node a never saw bob online");

    let ack = alice
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "traced" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let delivered = bob.expect_event("new_message").await;
    assert_eq!(delivered["id"], ack["id"]);
    let id = ack["id"].to_string();

    // The socket event on a is the trace's root.
    let event = receiver
        .wait_for("chat_message event on a", |spans| {
            find(spans, |s| {
                s.name == "socket.event"
                    && s.node() == "a"
                    && s.attribute("socket.event") == Some("chat_message")
            })
            .cloned()
        })
        .await;
    assert_eq!(event.parent_span_id, "", "the event starts its trace");
    assert_eq!(event.kind, SERVER);
    assert_eq!(event.attribute("user"), Some("1"));
    assert_eq!(
        event.resource.get("service.name").map(String::as_str),
        Some("aurum")
    );
    let trace = event.trace_id.clone();

    // Published on a for bob, as a child of the event...
    let publish = receiver
        .wait_for("bus.publish for bob on a", |spans| {
            find(spans, |s| {
                s.name == "bus.publish"
                    && s.node() == "a"
                    && s.attribute("user") == Some("2")
                    && s.trace_id == trace
            })
            .cloned()
        })
        .await;
    assert_eq!(publish.parent_span_id, event.span_id);
    assert_eq!(publish.kind, PRODUCER);
    assert_eq!(publish.attribute("message.id"), Some(id.as_str()));
    // ...received on b as a child of the publish, in the same trace.
    let receive = receiver
        .wait_for("bus.receive on b", |spans| {
            find(spans, |s| {
                s.name == "bus.receive" && s.node() == "b" && s.trace_id == trace
            })
            .cloned()
        })
        .await;
    assert_eq!(receive.parent_span_id, publish.span_id, "b continues a's span");
    assert_eq!(receive.kind, CONSUMER);
    assert_eq!(receive.attribute("origin"), Some("a"));
    assert_eq!(receive.attribute("message.id"), Some(id.as_str()));

    // The batch that stored it links to the event; its query is its child.
    let batch = receiver
        .wait_for("the writer batch linked to the event", |spans| {
            find(spans, |s| {
                s.name == "writer.batch" && s.links.contains(&(trace.clone(), event.span_id.clone()))
            })
            .cloned()
        })
        .await;
    assert_eq!(batch.node(), "a");
    assert_eq!(batch.attribute("batch.size"), Some("1"));
    let store = receiver
        .wait_for("the batch's store_batch query", |spans| {
            find(spans, |s| {
                s.name == "db.query" && s.parent_span_id == batch.span_id
            })
            .cloned()
        })
        .await;
    assert_eq!(store.attribute("db.operation.name"), Some("store_batch"));
    assert_eq!(store.kind, CLIENT);
    assert_eq!(store.attribute("db.response.returned_rows"), Some("1"));

    // HTTP: the caller's trace goes on, with the route and status, and the
    // handler's query under it.
    let request = receiver
        .wait_for("the profile request on a", |spans| {
            find(spans, |s| {
                s.name == "GET /api/v1/profiles/{id}" && s.node() == "a"
            })
            .cloned()
        })
        .await;
    assert_eq!(request.trace_id, CALLER_TRACE);
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.parent_span_id, CALLER_SPAN);
    assert_eq!(request.attribute("http.route"), Some("/api/v1/profiles/{id}"));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    assert_eq!(request.attribute("url.path"), Some("/api/v1/profiles/2"));
    let find_query = receiver
        .wait_for("the request's query", |spans| {
            find(spans, |s| {
                s.name == "db.query" && s.parent_span_id == request.span_id
            })
            .cloned()
        })
        .await;
    assert_eq!(find_query.attribute("db.operation.name"), Some("profiles_find"));
    assert_eq!(find_query.attribute("db.response.returned_rows"), Some("1"));
}

#[actix_rt::test]
async fn no_spans_leave_a_node_whose_export_is_turned_off() {
    let app = TestApp::spawn().await;
    app.seed(1, 2, 22).await;
    let receiver = OtlpReceiver::start().await;
    let on = ChildNode::start(
        &app.db.url,
        &[
            ("NODE_ID", "on".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    )
    .await;
    let off = ChildNode::start(
        &app.db.url,
        &[
            ("NODE_ID", "off".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
        ],
    )
    .await;
    traced_get(&off, &app, 1, "/api/v1/profiles/2").await;
    traced_get(&on, &app, 1, "/api/v1/profiles/2").await;
    // Once the exporting node's span has come, the other's would have too.
    receiver
        .wait_for("the exporting node's request", |spans| {
            find(spans, |s| s.name.starts_with("GET ") && s.node() == "on").cloned()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let strays: Vec<String> = receiver
        .spans()
        .iter()
        .filter(|span| span.node() != "on")
        .map(|span| span.name.clone())
        .collect();
    assert!(
        strays.is_empty(),
        "spans from the node with export off: {strays:?}"
    );
}
