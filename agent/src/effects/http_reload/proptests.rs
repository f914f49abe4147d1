//! Property tests of what the HTTP reload reads from the network: the admin API's config answer
//! and whatever a server (or something listening on its port) sends back.
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::proptest_cases::config;
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::text::needs_escape;

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:/._-]{0,12}",
        any::<String>(),
        "[\u{0}-\u{1f}\u{7f}-\u{9f}\u{202e}\u{2028}]{0,8}",
    ]
}

/// Any JSON value, strings included hostile ones.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// Only a JSON object is posted back; `null` (no config loaded) and every other value are
    /// refused for what they are, whatever blanks surround them.
    #[test]
    fn only_a_json_object_is_loaded_back(value in json(), pad in "[ \t\r\n]{0,3}") {
        let text = format!("{pad}{}{pad}", serde_json::to_string(&value).unwrap());
        let want = match &value {
            Value::Object(_) => Ok(()),
            Value::Null => Err("the admin API has no config loaded (null)"),
            _ => Err("the config is not a JSON object"),
        };
        prop_assert_eq!(check_config(text.as_bytes()), want);
    }

    /// An object cut short is not JSON, and is refused as such.
    #[test]
    fn a_cut_config_is_refused(
        value in prop::collection::btree_map("[a-z]{1,4}", json(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = serde_json::to_string(&value).unwrap();
        let cut = cut.index(text.len() - 1) + 1;
        let cut = (1..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap();
        prop_assert_eq!(
            check_config(&text.as_bytes()[..cut]),
            Err("the config is not valid JSON")
        );
    }

    /// Any bytes: an answer, never a panic; accepted only when they are a JSON object.
    #[test]
    fn any_bytes_are_refused_unless_a_json_object(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            prop::collection::vec(prop::sample::select(b"{}[]\":,0 nul".to_vec()), 0..64),
        ],
    ) {
        if check_config(&bytes).is_ok() {
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert!(value.is_object());
        }
    }
}

/// serde_json skips a value it does not keep without recursion: a config nested a hundred
/// thousand deep is valid JSON, checked in bounded stack and time, and posted back as it came.
#[test]
fn a_config_nested_a_hundred_thousand_deep_is_checked_without_deep_recursion() {
    let started = Instant::now();
    let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    assert_eq!(check_config(deep.as_bytes()), Ok(()));
    let unclosed = format!("{{\"a\":{}", "[".repeat(1_000_000));
    assert_eq!(
        check_config(unclosed.as_bytes()),
        Err("the config is not valid JSON")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// Whatever a server answers

/// A server that answers every connection with `answer` and closes it.
struct Server {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(answer: Vec<u8>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&answer);
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP/1.1 answer: any status, lying or broken headers, any body; or any bytes at all.
fn answer() -> impl Strategy<Value = (Option<u16>, Vec<u8>)> {
    let header = prop_oneof![
        Just("Content-Length: 0".to_string()),
        (0u64..100_000).prop_map(|n| format!("Content-Length: {n}")),
        Just("Content-Length: -1".to_string()),
        Just("Content-Length: 99999999999999999999999".to_string()),
        Just("Transfer-Encoding: chunked".to_string()),
        Just("Content-Type: application/json".to_string()),
        Just("Connection: keep-alive".to_string()),
        "[A-Za-z-]{1,12}: [ -~]{0,40}",
        "[^\r\n]{0,40}",
        Just(format!("X-Big: {}", "a".repeat(70_000))),
    ];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        hostile_string().prop_map(String::into_bytes),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"zz\r\nhello\r\n".to_vec()),
        (0usize..20_000).prop_map(|n| vec![0x1b; n]),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| (None, b)),
        4 => (
            prop_oneof![Just(200u16), Just(204), 100u16..600, 600u16..1000],
            "[ -~]{0,20}",
            prop::collection::vec(header, 0..5),
            body,
            prop::sample::select(vec!["\r\n", "\n"]),
        )
            .prop_map(|(code, reason, headers, body, eol)| {
                let mut head = format!("HTTP/1.1 {code} {reason}{eol}");
                for h in headers {
                    head.push_str(&h);
                    head.push_str(eol);
                }
                head.push_str(eol);
                let mut bytes = head.into_bytes();
                bytes.extend(body);
                (Some(code), bytes)
            }),
    ]
}

proptest! {
    #![proptest_config(config(48))]

    /// Whatever comes back: an answer within the timeout, never a panic; success only for a 2xx
    /// status; an error is one printable, bounded sentence quoting at most
    /// [`MAX_QUOTED_BYTES`] of the answer.
    #[test]
    fn any_answer_is_a_bounded_printable_outcome(
        (code, answer) in answer(),
        caddy in any::<bool>(),
    ) {
        let server = Server::start(answer);
        let path = if caddy { "/load" } else { "/-/reload" };
        let url = format!("http://{}{path}", server.addr);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let timeout = Duration::from_secs(2);
        let started = Instant::now();
        let result = runtime.block_on(http_reload(&url, timeout));
        prop_assert!(started.elapsed() < timeout + Duration::from_secs(2));
        match result {
            Ok(()) => {
                prop_assert!(code.is_some_and(|c| (200..300).contains(&c)), "{:?}", code);
            }
            Err(err) => {
                if let HttpReloadError::Status { body, status, .. } = &err {
                    prop_assert!(body.len() <= MAX_QUOTED_BYTES, "{}", body.len());
                    prop_assert!(!(200..300).contains(status));
                }
                let mut texts = vec![err.to_string()];
                let mut source = std::error::Error::source(&err);
                while let Some(s) = source {
                    texts.push(s.to_string());
                    source = s.source();
                }
                for text in texts {
                    prop_assert!(text.len() <= 1024, "{} bytes: {}", text.len(), text);
                    prop_assert!(!text.chars().any(needs_escape), "{:?}", text);
                }
            }
        }
    }
}
