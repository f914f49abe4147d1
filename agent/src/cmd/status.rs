//! `mountlag status [--endpoint URL] [--json] [--watch]`: reads a running agent's `/status`
//! and prints it as a table an operator reads at a glance, or unchanged as JSON.
//!
//! Exit status (also with `--json`): 0 when every mount is fine, 1 when any mount needs a human
//! (a [`NEEDS_ATTENTION`] state, a last reload in [`RELOAD_NEEDS_ATTENTION`], or a served
//! mismatch), 2 when the endpoint cannot be reached or does not answer a status document. With `--watch` the last refresh's status is returned on Ctrl-C.
//!
//! Rendering is tolerant: the document is read as untyped JSON, fields that this version does
//! not know are ignored and columns whose fields are absent show `-`, so an older client reads
//! a newer agent (and the other way round).

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use self::cluster::ClusterOptions;
use self::table::Tone;
use super::status_client::{ClientError, Endpoint};
use crate::text::{untrusted, untrusted_capped};

/// Where `mountlag status` looks without `--endpoint`, in this order: the node-local
/// `--status-listen` address of the shipped DaemonSet (there `/status` is not served on
/// `--listen`), then the default `--listen` port (an agent started without `--status-listen`).
/// Inside the agent's pod (`kubectl exec`) the first answers.
pub const DEFAULT_ENDPOINTS: [&str; 2] = [DEFAULT_STATUS_ENDPOINT, DEFAULT_ENDPOINT];
/// The shipped DaemonSet's `--status-listen`, as an endpoint.
pub const DEFAULT_STATUS_ENDPOINT: &str = "http://127.0.0.1:9978";
/// The default `--listen` port, as an endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9977";
/// Exit status when a mount needs attention.
pub const EXIT_ATTENTION: u8 = 1;
/// Exit status when the endpoint cannot be reached or answers something else than a status.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Mount states that make `mountlag status` exit 1. The agent reports `stuck` and `unreadable`
/// today; the reload outcomes are in `lastReload` (see [`RELOAD_NEEDS_ATTENTION`]).
pub const NEEDS_ATTENTION: [&str; 4] = [
    "stuck",
    "reload_unverified",
    "invalid_material",
    "unreadable",
];
/// Outcomes of a pod's last reload (`lastReload`) that make `mountlag status` exit 1: the new
/// certificate was not proven served, was withheld as invalid material, or the reload failed.
pub const RELOAD_NEEDS_ATTENTION: [&str; 3] = ["unverified", "withheld", "failed"];
/// States shown in green.
const HEALTHY: [&str; 1] = ["in_sync"];
/// Longest table cell: every string of the document came over the network and is escaped and
/// cut to this (a namespace/pod pair is at most 317 bytes).
const MAX_CELL_BYTES: usize = 512;
/// How much of a failed answer is quoted.
const MAX_QUOTED_BYTES: usize = 200;
/// Whole exchange with the agent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom `mountlag status` asks.
#[derive(Debug, Clone)]
pub enum Target {
    /// One agent at this endpoint, or without one at [`DEFAULT_ENDPOINTS`].
    Local(Option<String>),
    /// Every node's agent through the API server (`kubectl mountlag status`).
    Cluster(ClusterOptions),
}

/// Where the documents come from, once set up.
#[derive(Debug)]
enum Source {
    Endpoints(Vec<Endpoint>),
    Cluster(Box<cluster::Cluster>),
}

impl Source {
    async fn open(target: Target) -> Result<Self, String> {
        match target {
            Target::Local(endpoint) => endpoint
                .map_or_else(
                    || {
                        DEFAULT_ENDPOINTS
                            .iter()
                            .map(|e| Endpoint::parse(e))
                            .collect()
                    },
                    |endpoint| Endpoint::parse(&endpoint).map(|e| vec![e]),
                )
                .map(Source::Endpoints)
                .map_err(|e| e.to_string()),
            Target::Cluster(options) => cluster::Cluster::connect(&options)
                .await
                .map(|c| Source::Cluster(Box::new(c))),
        }
    }

    /// The text to print and the exit status, or why nothing could be asked.
    async fn report(
        &self,
        json: bool,
        now: OffsetDateTime,
        color: bool,
    ) -> Result<(String, u8), String> {
        match self {
            Source::Endpoints(endpoints) => {
                let fetched = fetch(endpoints).await?;
                let text = if json {
                    fetched.raw_text()
                } else {
                    render(&fetched.value, now, color)
                };
                Ok((text, exit_code(&fetched.value)))
            }
            Source::Cluster(cluster) => {
                let answers = cluster.collect().await?;
                let text = if json {
                    cluster::render_json(cluster.namespace(), &answers)
                } else {
                    cluster::render_text(&answers, now, color)
                };
                Ok((text, cluster::exit_code(&answers)))
            }
        }
    }

    /// The command the watch header shows.
    fn describe(&self) -> String {
        match self {
            Source::Endpoints(endpoints) => format!(
                "{} status --endpoint {}",
                super::program(),
                endpoints
                    .iter()
                    .map(Endpoint::authority)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Source::Cluster(cluster) => cluster.describe(),
        }
    }
}

/// Runs the subcommand against `target`; returns the exit status.
pub fn run(target: Target, json: bool, watch: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!(
                "{} status: cannot start the runtime: {err}",
                super::program()
            );
            return EXIT_UNREACHABLE;
        }
    };
    let terminal = std::io::stdout().is_terminal();
    let color = terminal
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    runtime.block_on(async {
        let source = match Source::open(target).await {
            Ok(source) => source,
            Err(message) => {
                eprintln!("{} status: {message}", super::program());
                return EXIT_UNREACHABLE;
            }
        };
        if watch {
            watch_loop(&source, json, terminal, color).await
        } else {
            match source.report(json, OffsetDateTime::now_utc(), color).await {
                Ok((text, code)) => {
                    print(&text);
                    code
                }
                Err(message) => {
                    eprintln!("{} status: {message}", super::program());
                    EXIT_UNREACHABLE
                }
            }
        }
    })
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not a failure of the status query.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

async fn watch_loop(source: &Source, json: bool, terminal: bool, color: bool) -> u8 {
    let shown = source.describe();
    let mut last;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let now = OffsetDateTime::now_utc();
        let mut frame = String::new();
        if terminal {
            // Home + clear: redraw in place.
            frame.push_str("\x1b[H\x1b[2J");
        }
        if !json {
            frame.push_str(&format!(
                "Every 1s: {shown}    {}\n\n",
                now.replace_nanosecond(0)
                    .unwrap_or(now)
                    .format(&Rfc3339)
                    .unwrap_or_default()
            ));
        }
        match source.report(json, now, color).await {
            Ok((text, code)) => {
                last = code;
                frame.push_str(&text);
            }
            Err(message) => {
                last = EXIT_UNREACHABLE;
                frame.push_str(&format!("{} status: {message}\n", super::program()));
            }
        }
        if !terminal && !json {
            frame.push('\n');
        }
        print(&frame);
        tokio::select! {
            _ = &mut ctrl_c => return last,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A fetched status document: the bytes as served and their parse.
#[derive(Debug)]
struct Fetched {
    raw: Vec<u8>,
    value: Value,
}

impl Fetched {
    /// The body as served, ending with a newline. The only changes: DEL, C1, bidi and separator
    /// characters, which JSON allows raw inside strings, are written as `\uXXXX` escapes, the
    /// same JSON value that a terminal cannot take as a control sequence; and carriage returns,
    /// which can only be whitespace between tokens, are left out (one would let the answer
    /// overwrite what the terminal line showed). Raw C0 characters other than whitespace
    /// between tokens cannot be in a document that parsed.
    fn raw_text(&self) -> String {
        terminal_safe(&String::from_utf8_lossy(&self.raw))
    }
}

/// JSON text made safe for a terminal, as [`Fetched::raw_text`] says, ending with a newline.
pub(crate) fn terminal_safe(raw: &str) -> String {
    let mut text = String::with_capacity(raw.len() + 1);
    for c in raw.chars() {
        if c == '\r' {
            continue;
        }
        if crate::text::needs_escape(c) && !matches!(c, '\n' | '\t') {
            // Every such character is in the Basic Multilingual Plane: one \u escape.
            text.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            text.push(c);
        }
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The status from the first of `endpoints` that can be connected to (an agent there that
/// answers something else is an error, not a reason to try the next).
async fn fetch(endpoints: &[Endpoint]) -> Result<Fetched, String> {
    let mut refused = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        match endpoint.get("/status", REQUEST_TIMEOUT).await {
            Err(err) if try_next(&err) && i + 1 < endpoints.len() => {
                refused.push(endpoint.authority());
            }
            Err(err) => return Err(unreachable_message(endpoint, &err, &refused)),
            Ok((code, body)) => return parse_status(endpoint.authority(), code, &body),
        }
    }
    Err("mountlag status: no endpoint to ask".to_owned())
}

/// Whether a failed request means "nobody listens here" (try the next default) rather than
/// "somebody answered badly".
fn try_next(err: &ClientError) -> bool {
    matches!(err, ClientError::Connect { .. })
}

/// The document `source` answered (an agent's address, or the pod a port-forward reached).
fn parse_status(source: &str, code: hyper::StatusCode, body: &[u8]) -> Result<Fetched, String> {
    if !code.is_success() {
        let text = String::from_utf8_lossy(body);
        return Err(format!(
            "{} answered /status with {code}: {}",
            source,
            untrusted_capped(text.trim(), MAX_QUOTED_BYTES)
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        format!(
            "{} answered /status with something that is not JSON ({err}); is it a mountlag agent?",
            source
        )
    })?;
    if !value.is_object() || !value["mounts"].is_array() {
        return Err(format!(
            "{} answered /status with JSON that is not a mountlag status (no \"mounts\" list)",
            source
        ));
    }
    Ok(Fetched {
        raw: body.to_vec(),
        value,
    })
}

fn unreachable_message(endpoint: &Endpoint, err: &ClientError, refused: &[&str]) -> String {
    match err {
        ClientError::Connect { source, .. } => {
            let mut tried = refused.to_vec();
            tried.push(endpoint.authority());
            format!(
                "cannot reach the agent at {} ({source}); is `mountlag agent` running there \
                 (its --status-listen or --listen address)? Use --endpoint to point elsewhere",
                tried.join(" or ")
            )
        }
        other => format!("cannot read the agent's status: {other}"),
    }
}

mod certmanager;
pub mod cluster;
mod hosts;
#[cfg(test)]
mod proptests;
mod table;
#[cfg(test)]
mod tests;

pub use table::{exit_code, render};
