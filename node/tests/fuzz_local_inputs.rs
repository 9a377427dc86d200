//! Property tests ("fuzz targets", run by proptest) for what the node takes from its own side: the resource policy
//! as JSON (`POST /api/policy`, [`PolicyUpdate`]) and the HLS media playlists the ingest follows. Whatever an owner,
//! a script or an encoder writes there, the node must not panic: a value is taken when it is sensible and refused
//! with a reason when it is not.
//!
//! The upload limiter's own property test (any rate and byte count, in `reserve` and `set_rate`) is in
//! `src/throttle.rs`, since the limiter is private to the crate.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use streamrp2p_node::ingest::{EntryError, HlsSource, follow_hls, segment_duration, sequence_number};
use streamrp2p_node::{Node, NodeConfig, NodeHandle, Policy, PolicyUpdate, sample};

/// Cases per property: enough to hit every branch of the strategies below many times, few enough for a few seconds.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    }
}

/// A runner for a property run by hand, in a test that shares one node among its cases. Failures are not saved to
/// a file: proptest cannot tell which source file the property is in.
fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..config()
    })
}

// ---- The resource policy as JSON ----

/// Number literals as a JSON body may carry them: ordinary caps and ratios, the limits and just past them, the
/// extremes of `f64` (subnormals, 1e-300, 1e300, `f64::MAX`), literals beyond `f64` (1e400, 400-digit integers,
/// which serde_json refuses) and any finite `f64` at all.
fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "0.01",
            "0.0099",
            "1e9",
            "1000000001",
            "1e6",
            "1000001",
            "1.5",
            "2000",
            "-1",
            "1e-300",
            "1e300",
            "-1e300",
            "5e-324",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "1e308",
            "1e309",
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551616",
            "0.1e1",
            "1E3",
        ])
        .prop_map(str::to_owned),
        "-?[0-9]{1,400}",
        "-?[0-9]{1,4}\\.[0-9]{1,20}([eE][-+]?[0-9]{1,3})?",
        (0.0..2e9f64).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
    ]
}

/// A value of the wrong type for any field.
fn wrong_type() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["\"1000\"", "\"true\"", "[]", "[1]", "{}", "{\"a\": 1}"]).prop_map(str::to_owned)
}

/// `"field": value`: mostly a known field with a value of its type (or `null`), sometimes the wrong type or an
/// unknown field.
fn policy_field() -> impl Strategy<Value = String> {
    let limit = || prop::sample::select(vec!["max_upload_kbps", "max_ratio"]).prop_map(str::to_owned);
    let flag = || prop::sample::select(vec!["metered", "background"]).prop_map(str::to_owned);
    let boolean = || prop::sample::select(vec!["true", "false"]).prop_map(str::to_owned);
    let null = || Just("null".to_owned());
    prop_oneof![
        8 => (limit(), prop_oneof![8 => number_literal(), 1 => null()]),
        4 => (flag(), prop_oneof![4 => boolean(), 1 => null()]),
        1 => (limit(), prop_oneof![wrong_type(), boolean()]),
        1 => (flag(), prop_oneof![wrong_type(), number_literal()]),
        1 => ("[a-z_]{0,16}", number_literal()),
    ]
    .prop_map(|(key, value)| format!("\"{key}\": {value}"))
}

/// `{"field": value, ...}`, repeated fields included.
fn policy_object() -> impl Strategy<Value = String> {
    prop::collection::vec(policy_field(), 0..5).prop_map(|fields| format!("{{{}}}", fields.join(", ")))
}

/// What a byte of a body may become: another byte, nothing, or more bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, u8),
    Remove(usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    prop::collection::vec(mutation, 1..6)
}

/// `text` with the mutations applied; positions are taken modulo the length.
fn mutate(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Replace(at, byte) if len > 0 => bytes[at % len] = *byte,
            Mutation::Remove(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Mutation::Insert(at, new) => {
                let at = at % (len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Bodies of `POST /api/policy`: well-formed objects, the same with bytes mutated, and arbitrary bytes.
fn policy_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => policy_object().prop_map(String::into_bytes),
        2 => (policy_object(), mutations()).prop_map(|(text, mutations)| mutate(&text, &mutations)),
        1 => prop::collection::vec(any::<u8>(), 0..48),
    ]
}

/// `f64` values for a cap or a ratio given directly, not as JSON: every class of `f64`, the limits, and ordinary
/// values.
fn extreme_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![
            0.0,
            -0.0,
            1e-300,
            1e300,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            Policy::MIN_UPLOAD_KBPS,
            Policy::MAX_UPLOAD_KBPS,
            Policy::MIN_RATIO,
            Policy::MAX_RATIO,
        ]),
        proptest::num::f64::ANY,
        0.0..2e9f64,
    ]
}

fn policy_update() -> impl Strategy<Value = PolicyUpdate> {
    let limit = || proptest::option::of(proptest::option::of(extreme_f64()));
    (limit(), any::<Option<bool>>(), any::<Option<bool>>(), limit()).prop_map(
        |(max_upload_kbps, metered, background, max_ratio)| PolicyUpdate {
            max_upload_kbps,
            metered,
            background,
            max_ratio,
        },
    )
}

/// The rule, written independently of `Policy::validate`: a limit is absent or a number in its range.
fn in_range(value: Option<f64>, min: f64, max: f64) -> bool {
    value.is_none_or(|v| v.is_finite() && min <= v && v <= max)
}

/// Applies `update` to the policy in force and checks the outcome: a valid policy has sane limits (the upload
/// limiter's wait for a 64 KiB block is a short `Duration`) and goes in force through the public API, which feeds
/// the upload limiter; an invalid one is refused with the range it must be in and leaves the policy in force alone.
fn check_update(node: &NodeHandle, update: &PolicyUpdate) -> Result<(), TestCaseError> {
    let before = node.policy();
    let policy = before.apply(update);
    let valid = in_range(policy.max_upload_kbps, Policy::MIN_UPLOAD_KBPS, Policy::MAX_UPLOAD_KBPS)
        && in_range(policy.max_ratio, Policy::MIN_RATIO, Policy::MAX_RATIO);
    match policy.validate() {
        Ok(()) => {
            prop_assert!(valid, "{policy:?} accepted");
            if let Some(rate) = policy.upload_limit().filter(|&rate| rate > 0.0) {
                let wait = Duration::try_from_secs_f64(64.0 * 1024.0 / rate);
                prop_assert!(
                    wait.as_ref().is_ok_and(|wait| *wait < Duration::from_secs(3600)),
                    "{policy:?}: {wait:?}"
                );
            }
            prop_assert_eq!(node.set_policy(policy), Ok(()));
            prop_assert_eq!(node.policy(), policy);
        }
        Err(error) => {
            prop_assert!(!valid, "{policy:?} refused: {error}");
            prop_assert!(error.to_string().contains("must be between"), "{error}");
            // Compared as messages: a NaN in the error is not equal to itself.
            let refused = node.set_policy(policy).map_err(|e| e.to_string());
            prop_assert_eq!(refused, Err(error.to_string()));
            prop_assert_eq!(node.policy(), before);
        }
    }
    Ok(())
}

/// A node whose policy the properties change: its gateway and upload limiter are the real ones.
async fn policy_node() -> NodeHandle {
    Node::start(NodeConfig::loopback())
        .await
        .expect("a loopback node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_policy_body_is_refused_or_goes_in_force_without_panicking() {
    let node = policy_node().await;
    let mut runner = runner();
    runner
        .run(&policy_body(), |body| {
            let Ok(update) = serde_json::from_slice::<PolicyUpdate>(&body) else {
                // Refused by the parser, as the gateway refuses it: a 400 with serde_json's reason.
                return Ok(());
            };
            check_update(&node, &update)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_policy_update_is_refused_or_goes_in_force_without_panicking() {
    let node = policy_node().await;
    let mut runner = runner();
    runner
        .run(&policy_update(), |update| {
            check_update(&node, &update)?;
            // As JSON (non-finite numbers are written as null), it parses back, or is refused, without a panic.
            let json = serde_json::to_string(&update).expect("an update serializes");
            if let Ok(parsed) = serde_json::from_str::<PolicyUpdate>(&json) {
                check_update(&node, &parsed)?;
            }
            Ok(())
        })
        .unwrap();
}

// ---- HLS media playlists ----

/// What an `#EXTINF:` may say: the values that broke the ingest (`inf`, `nan`, `-1`, `1e40`, integers too large for
/// an `f32`), ordinary durations, and garbage.
fn extinf_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "inf",
            "-inf",
            "infinity",
            "nan",
            "NaN",
            "-1",
            "-0",
            "0",
            "0.0",
            "1e40",
            "1e-40",
            "60",
            "60.000",
            "60.001",
            "3600",
            "340282366920938463463374607431768211456",
            "18446744073709551616",
            "0.0001",
        ])
        .prop_map(str::to_owned),
        "[0-9]{1,60}",
        "[0-9]{1,2}\\.[0-9]{1,6}",
        any::<f32>().prop_map(|v| v.to_string()),
        "[ -~]{0,12}",
    ]
}

/// A line of a playlist: an entry (`#EXTINF` and a URI), a tag, or garbage.
fn playlist_line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (extinf_value(), "[a-z0-9]{1,8}\\.ts").prop_map(|(value, uri)| format!("#EXTINF:{value},\n{uri}")),
        1 => Just("#EXT-X-DISCONTINUITY".to_owned()),
        1 => "#EXT-X-[A-Z-]{1,20}(:[ -~]{0,20})?",
        1 => "[ -~]{0,40}",
    ]
}

/// `#EXT-X-MEDIA-SEQUENCE` values: anything up to `u64::MAX`, often close to it.
fn media_sequence() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), (0..16u64).prop_map(|below| u64::MAX - below), 0..1000u64,]
}

/// A media playlist with random entries, tags and garbage lines, random target duration and media sequence.
fn playlist_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![any::<u64>().prop_map(|v| v.to_string()), "[0-9]{1,30}"],
        media_sequence(),
        prop::collection::vec(playlist_line(), 0..12),
        any::<bool>(),
    )
        .prop_map(|(target, sequence, lines, ended)| {
            let mut text = format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n"
            );
            for line in lines {
                text.push_str(&line);
                text.push('\n');
            }
            if ended {
                text.push_str("#EXT-X-ENDLIST\n");
            }
            text
        })
}

/// Parses `bytes` as the ingest does and runs every entry through its per-entry checks: nothing panics, an entry is
/// taken exactly when its duration is above 0 and at most 60 s and its number fits a `u64`, and a duration taken is
/// the one written (below a millisecond: 1 ms).
fn check_playlist(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(playlist) = m3u8_rs::parse_media_playlist_res(bytes) else {
        return Ok(());
    };
    let first = playlist.media_sequence;
    for (index, segment) in playlist.segments.iter().enumerate() {
        let fits = u128::from(first) + index as u128 <= u128::from(u64::MAX);
        match sequence_number(first, index) {
            Ok(msn) => prop_assert!(fits && u128::from(msn) == u128::from(first) + index as u128),
            Err(error) => {
                prop_assert!(!fits);
                prop_assert_eq!(error, EntryError::Sequence { first, index });
            }
        }
        let seconds = segment.duration;
        let acceptable = seconds.is_finite() && seconds > 0.0 && seconds <= 60.0;
        match segment_duration(seconds) {
            Ok(duration) => {
                prop_assert!(acceptable, "{seconds} taken");
                prop_assert!(
                    duration >= Duration::from_millis(1) && duration <= Duration::from_secs(60),
                    "{duration:?}"
                );
                if seconds >= 0.001 {
                    prop_assert_eq!(duration, Duration::from_secs_f32(seconds));
                }
            }
            Err(error) => {
                prop_assert!(!acceptable, "{seconds} refused: {error}");
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_playlist_is_checked_entry_by_entry_without_panicking(text in playlist_text()) {
        check_playlist(text.as_bytes())?;
    }

    #[test]
    fn any_mutated_playlist_is_checked_without_panicking(text in playlist_text(), mutations in mutations()) {
        check_playlist(&mutate(&text, &mutations))?;
    }

    /// A well-formed playlist of ordinary entries: every entry is taken, with the duration written, numbered from
    /// the media sequence up (as far as `u64` goes).
    #[test]
    fn valid_entries_keep_their_duration(
        sequence in media_sequence(),
        millis in prop::collection::vec(1..=60_000u32, 1..10),
    ) {
        let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n");
        for (i, ms) in millis.iter().enumerate() {
            text.push_str(&format!("#EXTINF:{}.{:03},\n{i}.ts\n", ms / 1000, ms % 1000));
        }
        let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("a well-formed playlist");
        prop_assert_eq!(playlist.media_sequence, sequence);
        prop_assert_eq!(playlist.segments.len(), millis.len());
        for (index, (segment, &ms)) in playlist.segments.iter().zip(&millis).enumerate() {
            let duration = segment_duration(segment.duration).expect("an ordinary duration is taken");
            // Within the precision of the `f32` m3u8-rs reads it into.
            let written = Duration::from_millis(ms.into());
            prop_assert!(duration.abs_diff(written) < Duration::from_micros(5), "{duration:?} for {written:?}");
            prop_assert_eq!(sequence_number(sequence, index).ok(), sequence.checked_add(index as u64));
        }
    }
}

// ---- Following a playlist with bad entries ----

/// Writes `text` as `live.m3u8` in `dir`, and the sample segments as `a0.ts`…`a2.ts`.
fn write_source(dir: &std::path::Path, text: &str) -> HlsSource {
    for (i, data) in sample::SEGMENTS.iter().enumerate() {
        std::fs::write(dir.join(format!("a{i}.ts")), data).unwrap();
    }
    std::fs::write(dir.join("live.m3u8"), text).unwrap();
    HlsSource::Path(dir.join("live.m3u8"))
}

/// `#EXTINF` values that once panicked the ingest (`Duration::from_secs_f32` of infinity) or make no segment a viewer
/// accepts are skipped with a warning, the entries around them are published, and the gap is a discontinuity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_skips_bad_entries_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_source(
        dir.path(),
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:0.100,\na0.ts\n\
         #EXTINF:1000000000000000000000000000000000000000,\na1.ts\n\
         #EXTINF:inf,\na1.ts\n\
         #EXTINF:-1,\na1.ts\n\
         #EXTINF:90,\na1.ts\n\
         #EXTINF:0.100,\na2.ts\n\
         #EXT-X-ENDLIST\n",
    );
    let node = Node::start(NodeConfig::loopback()).await.unwrap();
    let stream = node.broadcast("bad-entries", None).await.unwrap();
    let published = tokio::time::timeout(Duration::from_secs(20), follow_hls(node.clone(), stream, source))
        .await
        .expect("following ends with the playlist")
        .expect("bad entries do not stop following");
    assert_eq!(published, 2, "a0 and a2; the four bad entries skipped");
    assert_eq!(node.segment(stream, 0).unwrap(), sample::SEGMENTS[0]);
    assert_eq!(node.segment(stream, 1).unwrap(), sample::SEGMENTS[2]);
    let url = format!("http://{}/streams/{stream}/index.m3u8", node.http_addr().unwrap());
    let playlist = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(
        playlist.contains("#EXT-X-DISCONTINUITY\n#EXTINF:0.100,\n1.ts"),
        "{playlist}"
    );
}

/// A media sequence at the end of `u64`: the entries that can be numbered are published, the rest skipped, and
/// `first + count` (which overflowed) is not computed in `u64`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_playlist_numbered_up_to_u64_max() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_source(
        dir.path(),
        &format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:18446744073709551615\n#EXT-X-MEDIA-SEQUENCE:{}\n\
             #EXTINF:0.100,\na0.ts\n#EXTINF:0.100,\na1.ts\n#EXTINF:0.100,\na2.ts\n#EXT-X-ENDLIST\n",
            u64::MAX - 1
        ),
    );
    let node = Node::start(NodeConfig::loopback()).await.unwrap();
    let stream = node.broadcast("last-numbers", None).await.unwrap();
    let published = tokio::time::timeout(Duration::from_secs(20), follow_hls(node.clone(), stream, source))
        .await
        .expect("following ends with the playlist")
        .expect("numbering past u64::MAX does not stop following");
    assert_eq!(published, 2, "u64::MAX - 1 and u64::MAX; the third has no number");
    assert_eq!(node.segment(stream, 1).unwrap(), sample::SEGMENTS[1]);
    assert!(node.segment(stream, 2).is_none());
}
