//! Whether a signal reload may go to the process that was chosen, when that process may be a Go
//! program. Decided once per process (pid + start time), when the target is first looked up.
//!
//! ```text
//!  <proc_root>/<pid>/exe ──goexe──▶ NotGo | Go { module, version } | unreadable
//!  traefik profile only: argv, <pid>/environ, static config through <pid>/root ──▶ file provider?
//!        │
//!        ▼
//!  decide(policy, facts) ──▶ Allow | Withhold { reason }
//! ```
//!
//! `SigCgt` proves nothing for a Go program: the runtime installs a handler for every signal,
//! then exits on a SIGHUP, SIGINT or SIGTERM the program did not ask for (Go's documented
//! default) and ignores SIGUSR1/SIGUSR2. So a Go target is signalled only when the controller
//! entry opts in (`reload.goProgramHandlesSignal: true`), or — the `traefik` profile — when the
//! process is proven to be Traefik v3 with the file provider on, the one Traefik that re-applies
//! its configuration on SIGHUP.
//!
//! The agent reads another process's executable, environment and files only through the
//! ptrace access check (the kernel's rule for `/proc/<pid>/{exe,environ,root}`). Without that
//! access (the shipped DaemonSet has no `CAP_SYS_PTRACE`; a controller running as another uid is
//! out of reach) the executable cannot be read: a target whose `SigCgt` catches nearly every
//! signal, as the Go runtime does, is then treated as a Go program, and the `traefik` profile,
//! which needs a proof, withholds.
//!
//! Limits of the file-provider check (documented in docs/configuration.md): Traefik's own
//! precedence is followed (a static configuration file wins over flags, flags over
//! environment), but the file is read line by line, not parsed: a `providers:` mapping with a
//! `file:` key (YAML, block or flow style on one line) or a `[providers.file]` table,
//! `file.` dotted keys under `[providers]` (TOML). Anchors, merge keys and multi-line flow
//! mappings are not understood; what is not understood is "off", so the signal is withheld.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use zeroize::Zeroizing;

use super::goexe::{BuildInfo, ExeKind, read_exe};
use super::process::{MAX_SMALL_FILE_BYTES, ProcessInfo, read_text};
use crate::config::{GoSignalPolicy, ReloadSignal};
use crate::text::untrusted;

/// The main module of Traefik v3.
pub const TRAEFIK_V3_MODULE: &str = "github.com/traefik/traefik/v3";
/// Largest `/proc/<pid>/environ` read.
const MAX_ENVIRON_BYTES: u64 = 1 << 20;
/// Largest Traefik static configuration file read.
const MAX_STATIC_CONFIG_BYTES: u64 = 256 * 1024;
/// A process catching at least this many of the 29 catchable classic signals (1–31 but KILL
/// and STOP) behaves like the Go runtime (which catches 24 or 25; nginx and HAProxy 7 to 10).
const CATCH_ALL_THRESHOLD: u32 = 20;

/// May the signal be sent?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes; `proof` says what proved it, when something had to (logged once).
    Allow { proof: Option<String> },
    /// No: the reason, for the log, the Event and `/status`.
    Withhold { reason: String },
}

/// What was learnt about the chosen process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub pid: i32,
    pub comm: String,
    /// The executable, or why it could not be read.
    pub exe: Result<ExeKind, String>,
    /// `SigCgt` has nearly every signal caught, as the Go runtime's has.
    pub catches_everything: bool,
    /// For the Traefik proof only: is the file provider on (and why), or why that is unknown.
    pub file_provider: Option<Result<FileProvider, String>>,
}

/// Whether Traefik's file provider is configured, and where that was seen (a flag or variable
/// name or a file path, never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProvider {
    pub on: bool,
    pub evidence: String,
}

/// Traefik v3: main module `github.com/traefik/traefik/v3`, version `v3.x` or `(devel)` (a
/// build from a source tree, which is how Traefik's releases before Go 1.24 are stamped).
pub fn is_traefik_v3(info: &BuildInfo) -> bool {
    info.main.as_ref().is_some_and(|m| {
        m.path == TRAEFIK_V3_MODULE && (m.version == "(devel)" || m.version.starts_with("v3."))
    })
}

/// The pure decision.
pub fn decide(policy: GoSignalPolicy, signal: ReloadSignal, facts: &Facts) -> Verdict {
    let who = format!("pid {} ({})", facts.pid, untrusted(&facts.comm));
    let sig = signal.name();
    let go_default = if signal == ReloadSignal::Hup {
        format!("exits on a {sig} it did not ask for (Go's default)")
    } else {
        format!("ignores a {sig} it did not ask for (Go's default), so nothing would reload")
    };
    let opt_in = format!(
        "if the program handles {sig} as a reload, set reload.goProgramHandlesSignal: true in its controller entry"
    );
    match policy {
        GoSignalPolicy::OptIn => Verdict::Allow { proof: None },
        GoSignalPolicy::Refuse => match &facts.exe {
            Ok(ExeKind::NotGo) => Verdict::Allow { proof: None },
            Ok(ExeKind::Go { info }) => Verdict::Withhold {
                reason: format!(
                    "{who} is a Go program ({}): the Go runtime marks every signal as caught, but a Go program {go_default}; {sig} withheld, verify only; {opt_in}",
                    describe(info.as_ref())
                ),
            },
            Err(why) if facts.catches_everything => Verdict::Withhold {
                reason: format!(
                    "cannot read the executable of {who} ({why}) and it catches nearly every signal, as the Go runtime does; a Go program {go_default}; {sig} withheld, verify only; {opt_in}"
                ),
            },
            Err(_) => Verdict::Allow { proof: None },
        },
        GoSignalPolicy::TraefikV3FileProvider => {
            let remedy = "verify only; the traefik profile signals only Traefik v3 with the file provider (Traefik's Kubernetes providers read Secrets from the API: use profile traefik-crd)";
            let info = match &facts.exe {
                Ok(ExeKind::Go { info: Some(info) }) => info,
                Ok(ExeKind::Go { info: None }) => {
                    return Verdict::Withhold {
                        reason: format!(
                            "{who} is a Go program whose build information cannot be decoded (Go < 1.18, or damaged), so it is not proven to be Traefik v3; {sig} withheld, {remedy}"
                        ),
                    };
                }
                Ok(ExeKind::NotGo) => {
                    return Verdict::Withhold {
                        reason: format!(
                            "{who} is not a Go program, so not Traefik; {sig} withheld, {remedy}"
                        ),
                    };
                }
                Err(why) => {
                    return Verdict::Withhold {
                        reason: format!(
                            "cannot read the executable of {who} ({why}), so it is not proven to be Traefik v3 with the file provider; {sig} withheld, verify only; the agent needs ptrace access to the process for the proof (docs/security.md), or set reload.goProgramHandlesSignal: true to vouch for it"
                        ),
                    };
                }
            };
            if !is_traefik_v3(info) {
                return Verdict::Withhold {
                    reason: format!(
                        "{who} is not Traefik v3 ({}): Traefik v2 and other Go programs {go_default}; {sig} withheld, {remedy}",
                        info.describe()
                    ),
                };
            }
            match &facts.file_provider {
                Some(Ok(FileProvider { on: true, evidence })) => Verdict::Allow {
                    proof: Some(format!(
                        "{who} is Traefik v3 ({}) with the file provider on ({evidence})",
                        info.describe()
                    )),
                },
                Some(Ok(FileProvider {
                    on: false,
                    evidence,
                })) => Verdict::Withhold {
                    reason: format!(
                        "{who} is Traefik v3 ({}) without the file provider ({evidence}): only the file provider reloads on {sig}, Traefik otherwise {go_default}; {sig} withheld, {remedy}",
                        info.describe()
                    ),
                },
                Some(Err(why)) => Verdict::Withhold {
                    reason: format!(
                        "cannot tell whether Traefik v3 {who} has the file provider on ({why}); {sig} withheld, verify only"
                    ),
                },
                None => Verdict::Withhold {
                    reason: format!(
                        "the file provider of Traefik v3 {who} was not checked; {sig} withheld, verify only"
                    ),
                },
            }
        }
    }
}

fn describe(info: Option<&BuildInfo>) -> String {
    info.map_or_else(
        || "build information not decoded".to_string(),
        BuildInfo::describe,
    )
}

/// Whether `SigCgt` in a `/proc/<pid>/status` catches at least [`CATCH_ALL_THRESHOLD`] of the
/// classic signals, as the Go runtime does.
pub fn catches_everything(status: &str) -> bool {
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let caught = (1..=31u32)
        .filter(|s| *s != 9 && *s != 19)
        .filter(|s| mask >> (s - 1) & 1 == 1)
        .count();
    u32::try_from(caught).unwrap_or(0) >= CATCH_ALL_THRESHOLD
}

// ---------------------------------------------------------------------------------------------
// Traefik's file provider
// ---------------------------------------------------------------------------------------------

/// The parts of a process environment the file-provider check uses. Values of other variables
/// are dropped as soon as they are read (they may be credentials).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvFacts {
    /// Names of `TRAEFIK_*` variables, upper-cased.
    pub traefik_names: Vec<String>,
    /// The value of `TRAEFIK_PROVIDERS_FILE`, if set.
    pub providers_file: Option<String>,
    pub home: Option<String>,
    pub xdg_config_home: Option<String>,
}

/// Parses `/proc/<pid>/environ` (NUL-separated `NAME=value`).
pub fn parse_environ(bytes: &[u8]) -> EnvFacts {
    let mut facts = EnvFacts::default();
    for entry in bytes.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let name = String::from_utf8_lossy(&entry[..eq]);
        let value = || Some(String::from_utf8_lossy(&entry[eq + 1..]).into_owned());
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("TRAEFIK_") {
            if upper == "TRAEFIK_PROVIDERS_FILE" {
                facts.providers_file = value();
            }
            facts.traefik_names.push(upper);
        } else if name == "HOME" {
            facts.home = value();
        } else if name == "XDG_CONFIG_HOME" {
            facts.xdg_config_home = value();
        }
    }
    facts
}

/// A flag of Traefik's command line: its lower-cased name and its value when written `=value`.
fn flag(arg: &str) -> Option<(String, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    (!name.is_empty()).then(|| (name.to_ascii_lowercase(), value))
}

/// `--configFile` / `--configfile` (Traefik's FileLoader accepts exactly these two spellings),
/// written `=path` or followed by the path.
fn config_file_flag(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| {
        let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, args.get(i + 1).cloned()),
        };
        matches!(name, "configFile" | "configfile")
            .then_some(value)
            .flatten()
            .filter(|v| !v.trim().is_empty())
    })
}

/// The file provider as Traefik's flags set it: any `--providers.file.*` flag, or
/// `--providers.file` not `=false`.
fn file_provider_from_flags(args: &[String]) -> FileProvider {
    for arg in args {
        let Some((name, value)) = flag(arg) else {
            continue;
        };
        if name.starts_with("providers.file.") {
            return FileProvider {
                on: true,
                evidence: format!("flag --{}", untrusted(&name)),
            };
        }
        if name == "providers.file" && !value.is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            return FileProvider {
                on: true,
                evidence: "flag --providers.file".to_string(),
            };
        }
    }
    FileProvider {
        on: false,
        evidence: "the command-line flags configure no file provider".to_string(),
    }
}

fn file_provider_from_env(env: &EnvFacts) -> FileProvider {
    if let Some(name) = env
        .traefik_names
        .iter()
        .find(|n| n.starts_with("TRAEFIK_PROVIDERS_FILE_"))
    {
        return FileProvider {
            on: true,
            evidence: format!("environment variable {}", untrusted(name)),
        };
    }
    if env
        .providers_file
        .as_deref()
        .is_some_and(|v| !v.eq_ignore_ascii_case("false"))
    {
        return FileProvider {
            on: true,
            evidence: "environment variable TRAEFIK_PROVIDERS_FILE".to_string(),
        };
    }
    FileProvider {
        on: false,
        evidence:
            "no static configuration file, no flags, and no TRAEFIK_PROVIDERS_FILE_* variable"
                .to_string(),
    }
}

/// Where Traefik looks for its static configuration when no `--configFile` is given, in its
/// order (`/etc/traefik`, `$XDG_CONFIG_HOME`, `$HOME/.config`, the working directory; an unset
/// variable expands to nothing, as Go's `os.ExpandEnv` does).
pub fn default_config_candidates(env: &EnvFacts) -> Vec<String> {
    let xdg = env.xdg_config_home.as_deref().unwrap_or("");
    let home = env.home.as_deref().unwrap_or("");
    let bases = [
        "/etc/traefik/traefik".to_string(),
        format!("{xdg}/traefik"),
        format!("{home}/.config/traefik"),
        "./traefik".to_string(),
    ];
    bases
        .iter()
        .flat_map(|base| ["toml", "yaml", "yml"].map(|ext| format!("{base}.{ext}")))
        .collect()
}

/// Decides whether Traefik's file provider is on, following Traefik's loaders: the first static
/// configuration file found (`--configFile`, else the default places) is the whole
/// configuration; else any flag makes the flags the configuration; else the environment.
/// `read` returns a file's text, `None` when it does not exist, or why it cannot be read.
pub fn file_provider(
    args: &[String],
    env: Option<&EnvFacts>,
    read: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<FileProvider, String> {
    let from_file = |path: &str, text: &str| {
        let on = if path.to_ascii_lowercase().ends_with(".toml") {
            toml_has_file_provider(text)
        } else {
            yaml_has_file_provider(text)
        };
        FileProvider {
            on,
            evidence: if on {
                format!("static configuration {}", untrusted(path))
            } else {
                format!(
                    "static configuration {} has no providers.file section",
                    untrusted(path)
                )
            },
        }
    };
    if let Some(path) = config_file_flag(args) {
        return match read(&path)? {
            Some(text) => Ok(from_file(&path, &text)),
            None => Err(format!(
                "the --configFile {} cannot be found",
                untrusted(&path)
            )),
        };
    }
    // The default places depend on HOME and XDG_CONFIG_HOME.
    let Some(env) = env else {
        return Err("its environment cannot be read".to_string());
    };
    for path in default_config_candidates(env) {
        if let Some(text) = read(&path)? {
            return Ok(from_file(&path, &text));
        }
    }
    if !args.is_empty() {
        return Ok(file_provider_from_flags(args));
    }
    Ok(file_provider_from_env(env))
}

/// Strips a `#` comment that starts a line or follows whitespace (good enough for keys; a `#`
/// inside a quoted value after whitespace is cut too, which only loses a value).
fn uncomment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let cut = (0..bytes.len())
        .find(|i| bytes[*i] == b'#' && (*i == 0 || bytes[i - 1].is_ascii_whitespace()))
        .unwrap_or(bytes.len());
    line[..cut].trim_end()
}

fn unquote(key: &str) -> String {
    key.trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase()
}

/// YAML: a top-level `providers:` whose block has a `file:` key at its first indentation, or
/// `providers: {file: ...}` on one line. Keys compare case-insensitively, as Traefik's decoder
/// does.
pub fn yaml_has_file_provider(text: &str) -> bool {
    let mut in_providers = false;
    let mut child_indent: Option<usize> = None;
    for raw in text.lines() {
        let line = uncomment(raw);
        if line.trim().is_empty() || line.trim_start().starts_with("---") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent == 0 {
            in_providers = false;
            child_indent = None;
            if let Some((key, rest)) = trimmed.split_once(':')
                && unquote(key) == "providers"
            {
                let rest = rest.trim();
                if rest.starts_with('{') {
                    let inner = rest.trim_start_matches('{');
                    if inner
                        .split(',')
                        .filter_map(|kv| kv.split_once(':'))
                        .any(|(k, _)| unquote(k) == "file")
                    {
                        return true;
                    }
                } else if rest.is_empty() {
                    in_providers = true;
                }
            }
            continue;
        }
        if !in_providers {
            continue;
        }
        let first = *child_indent.get_or_insert(indent);
        if indent == first
            && let Some((key, _)) = trimmed.split_once(':')
            && unquote(key) == "file"
        {
            return true;
        }
    }
    false
}

/// TOML: a `[providers.file]` table (or a sub-table of it), `file...` keys under
/// `[providers]`, or a root-level `providers.file...` dotted key.
pub fn toml_has_file_provider(text: &str) -> bool {
    let mut table = String::new();
    for raw in text.lines() {
        let line = uncomment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .split('.')
                .map(unquote)
                .collect::<Vec<_>>()
                .join(".");
            if table == "providers.file" || table.starts_with("providers.file.") {
                return true;
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key: Vec<String> = key.split('.').map(unquote).collect();
        let full = if table.is_empty() {
            key.join(".")
        } else {
            format!("{table}.{}", key.join("."))
        };
        if full == "providers.file" || full.starts_with("providers.file.") {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Reading the process
// ---------------------------------------------------------------------------------------------

/// Gathers the facts about `target` that `policy` needs and decides. Runs once per process (the
/// caller caches the verdict with the process identity); reads are capped.
pub fn judge(
    proc_root: &Path,
    target: &ProcessInfo,
    policy: GoSignalPolicy,
    signal: ReloadSignal,
) -> Verdict {
    if policy == GoSignalPolicy::OptIn {
        return Verdict::Allow { proof: None };
    }
    let dir = proc_root.join(target.pid.to_string());
    let exe = read_exe(&dir.join("exe")).map_err(|e| e.to_string());
    let catches = exe.is_err()
        && read_text(&dir.join("status"), MAX_SMALL_FILE_BYTES)
            .is_ok_and(|s| catches_everything(&s));
    let traefik = policy == GoSignalPolicy::TraefikV3FileProvider
        && matches!(&exe, Ok(ExeKind::Go { info: Some(info) }) if is_traefik_v3(info));
    let file_provider = traefik.then(|| {
        let env = read_environ(&dir).ok();
        let args = target.cmdline.get(1..).unwrap_or_default();
        file_provider(args, env.as_ref(), &mut |path| read_in_root(&dir, path))
    });
    decide(
        policy,
        signal,
        &Facts {
            pid: target.pid,
            comm: target.comm.clone(),
            exe,
            catches_everything: catches,
            file_provider,
        },
    )
}

fn read_environ(dir: &Path) -> io::Result<EnvFacts> {
    let mut bytes = Zeroizing::new(Vec::new());
    File::open(dir.join("environ"))?
        .take(MAX_ENVIRON_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(parse_environ(&bytes))
}

/// Reads `path` as the process sees it: an absolute path below `<pid>/root`, a relative one below
/// `<pid>/cwd`, resolved with `openat2(RESOLVE_IN_ROOT)` so that `..` and absolute symlinks stay
/// inside that directory (the container's root) instead of reaching the agent's filesystem.
fn read_in_root(dir: &Path, path: &str) -> Result<Option<String>, String> {
    let (base, rel) = match path.strip_prefix('/') {
        Some(rel) => (dir.join("root"), rel.trim_start_matches('/')),
        None => (dir.join("cwd"), path),
    };
    let base_fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags(OFlag::O_PATH | OFlag::O_DIRECTORY))
        .open(&base)
        .map_err(|e| format!("cannot open the process's {}: {e}", base_name(&base)))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(&base_fd, rel, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(Errno::ENOSYS) => {
            return Err("the kernel lacks openat2 (Linux ≥ 5.6 is needed)".to_string());
        }
        Err(err) => return Err(format!("cannot open {}: {}", untrusted(path), err)),
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {}", untrusted(path), e))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", untrusted(path)));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATIC_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {}", untrusted(path), e))?;
    if bytes.len() as u64 > MAX_STATIC_CONFIG_BYTES {
        return Err(format!(
            "{} is larger than {MAX_STATIC_CONFIG_BYTES} bytes",
            untrusted(path)
        ));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn libc_flags(flags: OFlag) -> i32 {
    flags.bits()
}

fn base_name(base: &Path) -> String {
    base.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
