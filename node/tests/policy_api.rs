//! The gateway's runtime API on a real node: reading and changing the resource policy (`/api/policy`), and single
//! byte ranges of a segment, as a viewer fetches one block from an origin.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use serde_json::{Value, json};
use streamrp2p_node::{Node, NodeConfig, NodeHandle, Policy, sample};

async fn node(policy: Policy) -> (NodeHandle, String) {
    let config = NodeConfig {
        policy,
        ..NodeConfig::loopback()
    };
    let node = Node::start(config).await.unwrap();
    let base = format!("http://{}", node.http_addr().expect("the gateway runs"));
    (node, base)
}

async fn post(client: &reqwest::Client, base: &str, body: &str) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/api/policy"))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_is_read_and_changed_over_http() {
    let start = Policy {
        max_upload_kbps: Some(4000.0),
        ..Policy::default()
    };
    let (node, base) = node(start).await;
    let client = reqwest::Client::new();

    let got: Value = serde_json::from_str(
        &client
            .get(format!("{base}/api/policy"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        got,
        json!({"max_upload_kbps": 4000.0, "metered": false, "background": false, "max_ratio": null})
    );

    // A partial update keeps what it leaves out.
    let (status, got) = post(&client, &base, r#"{"background": true, "max_ratio": 1.5}"#).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        got,
        json!({"max_upload_kbps": 4000.0, "metered": false, "background": true, "max_ratio": 1.5})
    );
    let expected = Policy {
        max_upload_kbps: Some(4000.0),
        metered: false,
        background: true,
        max_ratio: Some(1.5),
    };
    assert_eq!(node.policy(), expected);

    // `null` removes a limit.
    let (status, got) = post(&client, &base, r#"{"max_upload_kbps": null}"#).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["max_upload_kbps"], Value::Null);
    assert_eq!(got["max_ratio"], json!(1.5));
    assert_eq!(node.policy().max_upload_kbps, None);

    // Invalid values and invalid JSON: 400, a message naming what was wrong, and the policy in force unchanged.
    let before = node.policy();
    for (body, names) in [
        (r#"{"max_upload_kbps": 0}"#, "max_upload_kbps"),
        (r#"{"max_ratio": -2}"#, "max_ratio"),
        (r#"{"metered": "yes"}"#, "metered"),
        (r#"{"max_upload": 100}"#, "max_upload"),
        (r#"{"metered": tru"#, "JSON"),
    ] {
        let (status, got) = post(&client, &base, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {got}");
        let message = got["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: no error message in {got}"));
        assert!(message.contains(names), "{body}: {message}");
    }
    assert_eq!(node.policy(), before);

    // The handle and the API change the same policy.
    node.set_policy(Policy::phone()).unwrap();
    let (status, got) = post(&client, &base, "{}").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, serde_json::to_value(Policy::phone()).unwrap());
    assert!(
        node.set_policy(Policy {
            max_ratio: Some(f64::NAN),
            ..Policy::default()
        })
        .is_err()
    );
    assert_eq!(node.policy(), Policy::phone());

    // Still serving.
    let status = client.get(format!("{base}/api/status")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_served_by_byte_range() {
    let (node, base) = node(Policy::default()).await;
    let stream = node.broadcast("ranges", None).await.unwrap();
    let data = sample::segment(0);
    let seq = node
        .publish(stream, data.clone(), sample::SEGMENT_DURATION, false)
        .await
        .unwrap();
    let url = format!("{base}/streams/{stream}/{seq}.ts");
    let client = reqwest::Client::new();
    let len = data.len();

    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[ACCEPT_RANGES], "bytes");
    assert_eq!(whole.bytes().await.unwrap(), data);

    // One block, as a viewer asks an origin for it.
    let (a, b) = (1000, 1000 + 64 * 1024 - 1);
    assert!(b < len, "the sample segment is larger than a block");
    let part = client
        .get(&url)
        .header(RANGE, format!("bytes={a}-{b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()[CONTENT_RANGE], format!("bytes {a}-{b}/{len}").as_str());
    assert_eq!(part.headers()[ACCEPT_RANGES], "bytes");
    assert_eq!(part.bytes().await.unwrap(), data.slice(a..=b));

    // The last bytes; an end past the segment stops at its end.
    let tail = client
        .get(&url)
        .header(RANGE, format!("bytes={}-{}", len - 10, len + 100))
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.unwrap(), data.slice(len - 10..));

    let beyond = client
        .get(&url)
        .header(RANGE, format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()[CONTENT_RANGE], format!("bytes */{len}").as_str());
    assert_eq!(beyond.headers()[ACCEPT_RANGES], "bytes");

    // Several ranges: the whole segment.
    let multi = client.get(&url).header(RANGE, "bytes=0-9,20-29").send().await.unwrap();
    assert_eq!(multi.status(), StatusCode::OK);
    assert_eq!(multi.bytes().await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_with_an_invalid_policy() {
    let error = Node::start(NodeConfig {
        policy: Policy {
            max_ratio: Some(-1.0),
            ..Policy::default()
        },
        ..NodeConfig::loopback()
    })
    .await
    .err()
    .expect("an invalid policy is refused");
    assert!(matches!(error, streamrp2p_node::NodeError::Policy(_)), "{error}");
    assert!(
        error.to_string().contains("ratio"),
        "the message names what was wrong: {error}"
    );
}

/// `{"max_upload_kbps": 1e-300}` was once accepted (finite, above 0) and then panicked every upload writer on a
/// `Duration` overflow in the upload limiter. Absurd caps and ratios are refused with the range they must be in, and
/// the gateway goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_caps_and_ratios_are_refused_with_the_range() {
    let (node, base) = node(Policy::default()).await;
    let client = reqwest::Client::new();
    for (body, expected) in [
        (
            r#"{"max_upload_kbps": 1e-300}"#,
            "max_upload_kbps must be between 1 and 1000000000 kbit/s, not 1e-300;",
        ),
        (r#"{"max_upload_kbps": 1e300}"#, "not 1e300;"),
        (r#"{"max_upload_kbps": 5e-324}"#, "between 1 and 1000000000 kbit/s"),
        (r#"{"max_upload_kbps": 0.5}"#, "between 1 and 1000000000 kbit/s"),
        (r#"{"max_ratio": 1e-300}"#, "max_ratio must be between 0.01 and 1000000"),
        (r#"{"max_ratio": 1e7}"#, "max_ratio must be between 0.01 and 1000000"),
    ] {
        let (status, got) = post(&client, &base, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {got}");
        let message = got["error"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{body}: {got}");
    }
    assert_eq!(node.policy(), Policy::default());

    // Still answering, and the limits themselves are accepted.
    let got = client.get(format!("{base}/api/policy")).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&got.text().await.unwrap()).unwrap(),
        serde_json::to_value(Policy::default()).unwrap()
    );
    let (status, got) = post(&client, &base, r#"{"max_upload_kbps": 1, "max_ratio": 0.01}"#).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let (status, got) = post(&client, &base, r#"{"max_upload_kbps": 1e9, "max_ratio": 1e6}"#).await;
    assert_eq!(status, StatusCode::OK, "{got}");
}

/// Posts raw bytes, with a content type or none.
async fn post_raw(
    client: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> (StatusCode, String) {
    let mut request = client
        .post(format!("{base}/api/policy"))
        .body(body)
        .timeout(Duration::from_secs(10));
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Whatever the body of `POST /api/policy` — wrong types, numbers out of range, deep nesting, bytes that are not
/// UTF-8, nothing at all, no content type — the answer is a 4xx with a JSON `{"error": "..."}`, never a panic or a
/// 500, and the policy in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_bad_policy_body_gets_a_4xx_with_a_json_reason() {
    let (node, base) = node(Policy::phone()).await;
    let client = reqwest::Client::new();
    let json = Some("application/json");
    let nested = |depth: usize, open: &str, close: &str| format!("{}1{}", open.repeat(depth), close.repeat(depth));
    let mut bodies: Vec<(Vec<u8>, Option<&str>)> = [
        r#"{"max_upload_kbps": "fast"}"#,
        r#"{"max_upload_kbps": true}"#,
        r#"{"max_ratio": [1]}"#,
        r#"{"max_ratio": {"value": 1}}"#,
        r#"{"metered": 1}"#,
        r#"{"metered": true, "metered": false}"#,
        r#"{"metered": true} trailing"#,
        "[]",
        "[null, false]",
        r#""max_upload_kbps""#,
        "42",
        "null",
        "true",
        r#"{"max_upload_kbps": 1e400}"#,
        r#"{"max_upload_kbps": -1e400}"#,
        r#"{"max_upload_kbps": 1e-400}"#,
        r#"{"max_ratio": -0}"#,
        r#"{"max_upload_kbps": 18446744073709551616}"#,
        "",
        "   \n",
        "{",
        "\u{feff}{}",
    ]
    .into_iter()
    .map(|body| (body.as_bytes().to_vec(), json))
    .collect();
    bodies.push((
        format!(r#"{{"max_upload_kbps": 1{}}}"#, "0".repeat(400)).into_bytes(),
        json,
    ));
    bodies.push((
        format!(r#"{{"max_ratio": {}}}"#, nested(100_000, "[", "]")).into_bytes(),
        json,
    ));
    bodies.push((nested(100_000, "[", "]").into_bytes(), json));
    bodies.push((nested(100_000, r#"{"max_ratio":"#, "}").into_bytes(), json));
    bodies.push((b"{\"metered\": \"\xff\xfe\"}".to_vec(), json));
    bodies.push((vec![0xff, 0xfe, 0x00, 0x7b], json));
    bodies.push((br#"{"metered": false}"#.to_vec(), None));
    bodies.push((br#"{"metered": false}"#.to_vec(), Some("text/plain")));
    for (body, content_type) in bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, text) = post_raw(&client, &base, body, content_type).await;
        assert!(
            status.is_client_error(),
            "{shown:?} ({content_type:?}): {status} {text}"
        );
        let got: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown:?}: not JSON ({e}): {text}"));
        assert!(
            got["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{shown:?}: no error message in {got}"
        );
        assert_eq!(node.policy(), Policy::phone(), "{shown:?} changed the policy");
    }
    // A body over the gateway's limit is refused from its length alone, before a byte of it is read.
    let (status, text) = post_oversized(&base, 3 << 20).await;
    assert_eq!(status, 413, "{text}");
    let got: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("over the limit: not JSON ({e}): {text}"));
    assert!(got["error"].as_str().is_some_and(|m| !m.is_empty()), "{got}");
    assert_eq!(node.policy(), Policy::phone());
    let status = client.get(format!("{base}/api/policy")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
}

/// Announces a `POST /api/policy` body of `len` bytes with `Expect: 100-continue` over a raw connection, and returns
/// the answer's status and body. A gateway that refuses the body from its length answers at once, and the body is
/// never sent (sent regardless, the refusal could race the upload and end in a reset connection instead).
async fn post_oversized(base: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /api/policy HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answers an oversized body at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // The body may come chunked: the JSON object is what lies between its braces.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => body[a..=b].to_owned(),
        _ => body.to_owned(),
    };
    (status, json)
}
