//! Abuse and load (issue 14): per-address socket caps and handshake rates on
//! the socket listener, `X-Forwarded-For` believed only from trusted
//! proxies, the bound on handshakes in flight, limits turned off with 0,
//! and the per-user REST rate limit on scroll and batch.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::app::TestApp;
use crate::helpers::db::TestDb;
use crate::helpers::report;
use crate::helpers::ws::RawClient;

const AREA: &str = "abuse";

/// A WebSocket upgrade with `headers` added; the connection and the
/// response head (or what came before the server closed, or 3 s passed).
async fn upgrade(ws_base: &str, headers: &str) -> (TcpStream, String) {
    let address = ws_base.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream, Duration::from_secs(3)).await;
    (stream, head)
}

/// Bytes up to the end of a response head (and its body, for a refusal
/// that closes), within `wait`.
async fn read_head(stream: &mut TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0_u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&answer);
        if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
            break;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => answer.extend_from_slice(&chunk[..read]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn error_code(head: &str) -> String {
    let body = head.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

async fn refused_count(app: &TestApp, reason: &str) -> u64 {
    let metrics = app.metrics().await;
    let series = format!("connections_refused_total{{reason=\"{reason}\"}}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn an_address_over_its_socket_cap_gets_429_until_one_closes() {
    let app = TestApp::spawn_on(
        TestDb::migrated(),
        &["--ws-max-sockets-per-ip=3", "--ws-handshake-rate=0"],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawClient::open(&app.ws_base).await);
    }
    let (_, head) = upgrade(&app.ws_base, "").await;
    assert_eq!(status(&head), 429, "{head}");
    assert_eq!(error_code(&head), "too_many_connections", "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    // A long-polling handshake from the address is a socket too.
    let address = app.ws_base.trim_start_matches("ws://");
    let polling = awc::Client::default()
        .get(format!("http://{address}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(polling.status(), 429);
    assert!(refused_count(&app, "per_address").await >= 2);

    // A closed socket frees its slot.
    drop(held.pop());
    let started = Instant::now();
    let freed = loop {
        let (_, head) = upgrade(&app.ws_base, "").await;
        if status(&head) == 101 {
            break true;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(freed, "the slot of a closed socket came back");
    report::record(
        AREA,
        "4th socket from one address over WS_MAX_SOCKETS_PER_IP=3 (WebSocket and long-polling)",
        "429 too_many_connections with Retry-After before the upgrade; counted in connections_refused_total{reason=\"per_address\"}; admitted again once one closed",
        &[("freed after", format!("{} ms", started.elapsed().as_millis()))],
    );
}

#[actix_rt::test]
async fn handshakes_over_an_addresss_rate_get_429_then_pass_after_the_wait() {
    let app = TestApp::spawn_on(
        TestDb::migrated(),
        &[
            "--ws-max-sockets-per-ip=0",
            "--ws-handshake-rate=1",
            "--ws-handshake-burst=2",
        ],
    )
    .await;
    let _first = RawClient::open(&app.ws_base).await;
    let _second = RawClient::open(&app.ws_base).await;
    let (_, head) = upgrade(&app.ws_base, "").await;
    assert_eq!(status(&head), 429, "{head}");
    assert_eq!(error_code(&head), "rate_limited", "{head}");
    let retry: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{head}");
    assert!(refused_count(&app, "handshake_rate").await >= 1);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (_, head) = upgrade(&app.ws_base, "").await;
    assert_eq!(status(&head), 101, "admitted after Retry-After: {head}");
    report::record(
        AREA,
        "3rd handshake from one address at WS_HANDSHAKE_RATE=1, WS_HANDSHAKE_BURST=2",
        "429 rate_limited with Retry-After; admitted once the wait had passed",
        &[("Retry-After", format!("{retry} s"))],
    );
}

#[actix_rt::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let behind = TestApp::spawn_on(
        TestDb::migrated(),
        &[
            "--ws-max-sockets-per-ip=1",
            "--ws-handshake-rate=0",
            "--trusted-proxies=10.0.0.0/8,127.0.0.1",
        ],
    )
    .await;
    let xff = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    let (_a, head) = upgrade(&behind.ws_base, &xff("203.0.113.1")).await;
    assert_eq!(status(&head), 101, "{head}");
    let (_b, head) = upgrade(&behind.ws_base, &xff("203.0.113.2, 10.1.2.3")).await;
    assert_eq!(status(&head), 101, "another client through two proxies: {head}");
    let (_, head) = upgrade(&behind.ws_base, &xff("203.0.113.1")).await;
    assert_eq!(status(&head), 429, "the first client again: {head}");
    // A client forging an entry in front of its own is counted as itself.
    let (_, head) = upgrade(&behind.ws_base, &xff("198.51.100.7, 203.0.113.2")).await;
    assert_eq!(status(&head), 429, "forged left entry ignored: {head}");

    let exposed = TestApp::spawn_on(
        TestDb::migrated(),
        &[
            "--ws-max-sockets-per-ip=1",
            "--ws-handshake-rate=0",
            "--trusted-proxies=10.0.0.0/8",
        ],
    )
    .await;
    let (_c, head) = upgrade(&exposed.ws_base, &xff("203.0.113.1")).await;
    assert_eq!(status(&head), 101, "{head}");
    let (_, head) = upgrade(&exposed.ws_base, &xff("203.0.113.9")).await;
    assert_eq!(
        status(&head),
        429,
        "an untrusted peer's X-Forwarded-For is not believed: {head}"
    );
    report::record(
        AREA,
        "X-Forwarded-For with WS_MAX_SOCKETS_PER_IP=1, from a trusted proxy and from an untrusted peer",
        "behind TRUSTED_PROXIES each named client has its own cap (forged entries left of the first untrusted hop ignored); from an untrusted peer the header is ignored and the peer is capped",
        &[],
    );
}

#[actix_rt::test]
async fn handshakes_beyond_the_in_flight_bound_wait_for_room() {
    let app = TestApp::spawn_on(
        TestDb::migrated(),
        &[
            "--ws-max-sockets-per-ip=0",
            "--ws-handshake-rate=0",
            "--ws-max-handshakes=2",
        ],
    )
    .await;
    // Two upgrades that have not sent CONNECT fill the bound.
    let mut first = RawClient::open(&app.ws_base).await;
    let _second = RawClient::open(&app.ws_base).await;
    let address = app.ws_base.trim_start_matches("ws://").to_owned();
    let mut third = TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    third.write_all(request.as_bytes()).await.unwrap();
    let early = read_head(&mut third, Duration::from_secs(1)).await;
    assert_eq!(early, "", "the third handshake waits while two are in flight");
    // One CONNECT decided frees room; the waiting upgrade goes through.
    let token = app.token(1);
    first.send(&format!("40{}", json!({ "token": token }))).await;
    let answer = first.next_text().await.unwrap();
    assert!(answer.starts_with("40{"), "{answer}");
    let freed = Instant::now();
    let head = read_head(&mut third, Duration::from_secs(3)).await;
    assert_eq!(status(&head), 101, "{head}");
    report::record(
        AREA,
        "3rd handshake with WS_MAX_HANDSHAKES=2 and two sockets not yet CONNECTed",
        "waited (no answer for 1 s), then upgraded once one CONNECT was decided",
        &[(
            "admitted after the CONNECT",
            format!("{} ms", freed.elapsed().as_millis()),
        )],
    );
}

#[actix_rt::test]
async fn socket_limits_set_to_zero_are_off() {
    let app = TestApp::spawn_on(
        TestDb::migrated(),
        &[
            "--ws-max-sockets-per-ip=0",
            "--ws-handshake-rate=0",
            "--ws-max-handshakes=0",
        ],
    )
    .await;
    // More than the defaults' cap (500) and burst (500) from one address, at once.
    let upgrades = (0..600).map(|_| upgrade(&app.ws_base, ""));
    let answers = futures_util::future::join_all(upgrades).await;
    let admitted = answers.iter().filter(|(_, head)| status(head) == 101).count();
    assert_eq!(admitted, 600);
    report::record(
        AREA,
        "600 upgrades at once from one address with WS_MAX_SOCKETS_PER_IP, WS_HANDSHAKE_RATE and WS_MAX_HANDSHAKES at 0",
        "all admitted: each limit is off at 0",
        &[("admitted", admitted.to_string())],
    );
}

/// `GET path` as `token`: the status, the Retry-After header, the JSON body.
async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Option<String>, Value) {
    let mut response = awc::Client::default()
        .get(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json::<Value>().limit(1 << 22).await.unwrap();
    (response.status().as_u16(), retry, body)
}

#[actix_rt::test]
async fn scroll_and_batch_over_a_users_rate_get_429_then_recover() {
    let app = TestApp::spawn_on(
        TestDb::migrated(),
        &[
            "--scroll-rate=1",
            "--scroll-burst=3",
            "--batch-rate=1",
            "--batch-burst=2",
        ],
    )
    .await;
    app.seed(1, 30, 7).await;
    let (alice, bob) = (app.token(1), app.token(2));
    let scroll = "/api/v1/matching/profiles/scroll?limit=5";
    for _ in 0..3 {
        assert_eq!(get(&app, scroll, &alice).await.0, 200);
    }
    let (status, retry, body) = get(&app, scroll, &alice).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(
        get(&app, scroll, &bob).await.0,
        200,
        "another user has a budget of their own"
    );
    let batch = "/api/v1/matching/profiles/batch?profile_ids=3,4";
    assert_eq!(
        get(&app, batch, &alice).await.0,
        200,
        "batch has a budget apart from scroll's"
    );
    assert_eq!(get(&app, batch, &alice).await.0, 200);
    let (status, retry_batch, _) = get(&app, batch, &alice).await;
    assert_eq!(status, 429);
    assert!(retry_batch.is_some());
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        get(&app, scroll, &alice).await.0,
        200,
        "served again after Retry-After"
    );

    let unlimited = TestApp::spawn_on(TestDb::migrated(), &["--scroll-rate=0", "--batch-rate=0"]).await;
    let token = unlimited.token(1);
    for _ in 0..100 {
        assert_eq!(get(&unlimited, scroll, &token).await.0, 200);
    }
    report::record(
        "rest input",
        "scroll past SCROLL_RATE=1/SCROLL_BURST=3 and batch past BATCH_BURST=2 for one user",
        "429 rate_limited with Retry-After; other users and the other endpoint unaffected; served again after the wait; 100 in a row with the rates at 0",
        &[("Retry-After", format!("{retry} s"))],
    );
}
