//! A consistent snapshot of one AtomicWriter volume: one generation, never two mixed.
//!
//! ```text
//! readlink ..data ─▶ walk ..<ts>/ (openat, O_NOFOLLOW) ─▶ check root symlinks ─▶ readlink ..data
//!        ▲                 hash, parse PEM, drop bytes                                    │
//!        └──────────────────────────── moved? read again ◀─────────────────────────────────┘
//! ```
//!
//! Every file is opened relative to the directory it was listed in, without following symlinks,
//! so nothing in the volume can send the reader outside it. The volume directory itself is
//! opened the same way ([`open_volume_dir`]): relative to the directory of pod directories
//! (`<kubeletRoot>/pods`), with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel
//! has it (Linux ≥ 5.6) and one `openat(O_NOFOLLOW | O_DIRECTORY)` per component elsewhere, so a
//! pod, `volumes`, plugin or volume directory replaced by a symlink is refused, never followed.
//! Contents are hashed and certificates summarised while the bytes are in a zeroising buffer;
//! only digests and summaries are kept.
//!
//! Parsing a certificate and deriving a key's public half is most of the cost of a read, and
//! the agent usually parsed the same bytes already, when the Secret arrived from the API. The
//! agent's reads therefore go through [`snapshot_with`] and a [`SharedPemCache`]: a file whose
//! SHA-256 (of its whole content) has a verdict there reuses it, any other file is parsed and
//! its verdict kept. A changed byte is a different digest, so a swapped key or a renewed
//! certificate is always parsed afresh.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use zeroize::Zeroizing;

use mountlag_core::cert::{self, ContentDigest, PemContents, SharedPemCache};
use mountlag_core::text::untrusted;
pub use mountlag_core::volume::{
    FileSnapshot, Problem, ProblemKind, VolumeLocation, VolumeSnapshot, VolumeState,
};
pub use open::open_volume_dir;

/// The name of the symlink AtomicWriter swaps to publish a generation.
pub const DATA_LINK: &str = "..data";
/// Secrets and ConfigMaps are capped at 1 MiB by the API server; a larger file is not ours.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// How often a read is retried when `..data` moves under it before giving up.
pub const MAX_ATTEMPTS: usize = 8;
const MAX_DEPTH: usize = 16;
const MAX_ENTRIES: usize = 10_000;

/// Why a volume could not be read at all (as opposed to [`Problem`]s found inside it).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: cannot open volume directory: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path}: cannot read {what}: {source}")]
    Read {
        path: PathBuf,
        what: String,
        #[source]
        source: Errno,
    },
    #[error("{path}: ..data moved during each of {attempts} reads; the volume is being rewritten")]
    Unstable { path: PathBuf, attempts: usize },
    /// The volume directory, or a directory between it and `<kubeletRoot>/pods`, is a symlink
    /// (or `..` leads out): kubelet never makes one, so it is not followed and nothing is read.
    #[error(
        "{path}: {component} is a symlink to \"{target}\"; kubelet never makes a volume directory \
         or a directory above it a symlink, so it is not followed and nothing in it is read"
    )]
    Symlink {
        path: PathBuf,
        /// The first component that is a symlink, relative to the anchor.
        component: String,
        /// Its target, escaped and cut (it is shown, never followed).
        target: String,
    },
}

/// Reads one volume directory as a single AtomicWriter generation, parsing every PEM file.
pub fn snapshot(volume_dir: &Path) -> Result<VolumeSnapshot, SnapshotError> {
    snapshot_with(volume_dir, None)
}

/// [`snapshot`], taking PEM verdicts from `cache` for contents it knows and keeping those it
/// parses (the agent's reload path; one-off readers such as `inspect` pass `None`).
pub fn snapshot_with(
    volume_dir: &Path,
    cache: Option<&SharedPemCache>,
) -> Result<VolumeSnapshot, SnapshotError> {
    let volume = open_volume_dir(volume_dir)?;
    let reader = VolumeReader {
        path: volume_dir,
        fd: volume,
        cache,
    };
    for _ in 0..MAX_ATTEMPTS {
        let before = reader.data_link()?;
        let attempt = reader.read_once(&before)?;
        if reader.data_link()? == before
            && let Some(snapshot) = attempt
        {
            return Ok(snapshot);
        }
    }
    // Not a rewrite: `..data` stayed on a generation directory that is not there.
    if let Some(snapshot) = reader.dangling_data_link()? {
        return Ok(snapshot);
    }
    Err(SnapshotError::Unstable {
        path: volume_dir.to_path_buf(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Reads just the `..data` target: the cheap way to tell which generation is published. The
/// volume directory is opened as [`snapshot`] opens it: never through a symlink.
pub fn read_generation(volume_dir: &Path) -> Result<Option<OsString>, SnapshotError> {
    let volume = match open_volume_dir(volume_dir) {
        Ok(fd) => fd,
        // Gone (unmounted, pod removed): nothing published, as a missing `..data` says.
        Err(SnapshotError::Open {
            source: Errno::ENOENT,
            ..
        }) => return Ok(None),
        Err(err) => return Err(err),
    };
    match readlinkat(volume.as_fd(), DATA_LINK) {
        Ok(target) => Ok(Some(target)),
        Err(Errno::ENOENT) => Ok(None),
        Err(source) => Err(SnapshotError::Read {
            path: volume_dir.to_path_buf(),
            what: DATA_LINK.into(),
            source,
        }),
    }
}

/// The result of reading a link at the volume root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataLink {
    Missing,
    NotALink,
    Target(OsString),
}

struct VolumeReader<'a> {
    path: &'a Path,
    fd: OwnedFd,
    cache: Option<&'a SharedPemCache>,
}

/// A generation directory vanished or changed while it was being read: read again.
struct Moved;

impl VolumeReader<'_> {
    fn read_error(&self, what: &str, source: Errno) -> SnapshotError {
        SnapshotError::Read {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            source,
        }
    }

    fn data_link(&self) -> Result<DataLink, SnapshotError> {
        match readlinkat(self.fd.as_fd(), DATA_LINK) {
            Ok(target) => Ok(DataLink::Target(target)),
            Err(Errno::ENOENT) => Ok(DataLink::Missing),
            Err(Errno::EINVAL) => Ok(DataLink::NotALink),
            Err(source) => Err(self.read_error(DATA_LINK, source)),
        }
    }

    /// After every attempt found its generation gone: a snapshot with that problem when `..data`
    /// names one generation directory that does not exist, and still does after a second look.
    fn dangling_data_link(&self) -> Result<Option<VolumeSnapshot>, SnapshotError> {
        let link = self.data_link()?;
        let DataLink::Target(target) = &link else {
            return Ok(None);
        };
        let Some(name) = generation_name(target) else {
            return Ok(None);
        };
        let missing = matches!(
            fstatat(self.fd.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
            Err(Errno::ENOENT)
        );
        if !missing || self.data_link()? != link {
            return Ok(None);
        }
        Ok(Some(VolumeSnapshot {
            generation: None,
            files: Vec::new(),
            pairings: Vec::new(),
            problems: vec![Problem::new(
                DATA_LINK,
                ProblemKind::DanglingSymlink,
                format!(
                    "..data points to {}, which is not in the volume; kubelet publishes a \
                     generation only once it is written",
                    untrusted(&name)
                ),
            )],
        }))
    }

    /// One pass; `Ok(None)` when the generation moved and the caller should read again.
    fn read_once(&self, link: &DataLink) -> Result<Option<VolumeSnapshot>, SnapshotError> {
        let mut snap = VolumeSnapshot {
            generation: None,
            files: Vec::new(),
            pairings: Vec::new(),
            problems: Vec::new(),
        };
        let generation = match link {
            DataLink::Missing => None,
            DataLink::NotALink => {
                snap.problems.push(Problem::new(
                    DATA_LINK,
                    ProblemKind::UnexpectedEntry,
                    "..data is not a symlink; this is not an AtomicWriter volume",
                ));
                return Ok(Some(snap));
            }
            DataLink::Target(target) => match generation_name(target) {
                Some(name) => Some(name),
                None => {
                    snap.problems.push(Problem::new(
                        DATA_LINK,
                        ProblemKind::SymlinkEscapesVolume,
                        format!(
                            "..data points to \"{}\", not to a generation directory in the volume",
                            untrusted(&target.to_string_lossy())
                        ),
                    ));
                    return Ok(Some(snap));
                }
            },
        };

        let mut walk = Walk {
            cache: self.cache,
            ..Walk::default()
        };
        if let Some(name) = &generation {
            let dir = match openat(
                self.fd.as_fd(),
                name.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ENOTDIR | Errno::ELOOP) => {
                    snap.problems.push(Problem::new(
                        DATA_LINK,
                        ProblemKind::NotRegularFile,
                        format!(
                            "..data points to {}, which is not a directory",
                            untrusted(name)
                        ),
                    ));
                    return Ok(Some(snap));
                }
                Err(source) => return Err(self.read_error(name, source)),
            };
            if walk.directory(&dir, "", 0).is_err() {
                return Ok(None);
            }
        }
        let root_problems = match self.check_root(generation.as_deref(), &walk) {
            Ok(problems) => problems,
            Err(Moved) => return Ok(None),
        };

        let parsed: Vec<(&str, &PemContents)> = walk
            .files
            .iter()
            .filter_map(|f| f.pem.as_ref().map(|pem| (f.path.as_str(), pem)))
            .collect();
        let pairings = cert::pair_keys(&parsed);
        let mut problems = walk.problems;
        problems.extend(root_problems);
        for pairing in pairings.iter().filter(|p| !p.matches) {
            problems.push(Problem::new(
                &pairing.key_file,
                ProblemKind::KeyMismatch,
                format!(
                    "private key does not match the certificate in {}",
                    untrusted(&pairing.cert_file)
                ),
            ));
        }
        for (crt, key) in cert::swapped_pairs(&parsed) {
            problems.push(Problem::swapped(&crt, &key));
        }
        problems.sort_by(|a, b| (&a.file, a.kind).cmp(&(&b.file, b.kind)));
        snap.generation = generation;
        snap.files = walk.files;
        snap.pairings = pairings;
        snap.problems = problems;
        Ok(Some(snap))
    }

    /// The user-visible names at the volume root must be kubelet's `name -> ..data/name` links
    /// into the published generation; nothing there is ever followed.
    fn check_root(&self, generation: Option<&str>, walk: &Walk<'_>) -> Result<Vec<Problem>, Moved> {
        let mut problems = Vec::new();
        let mut dir = Dir::openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| Moved)?;
        let mut names: Vec<OsString> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|_| Moved)?;
            let name = entry.file_name().to_bytes();
            // `..data`, `..data_tmp` and `..<timestamp>` belong to AtomicWriter itself.
            if !name.starts_with(b"..") && name != b"." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        names.sort();
        // Every path of the generation, looked up once per root link (a linear search made
        // the check quadratic: 1.2 s for 5,000 keys in a debug build).
        let seen: std::collections::HashSet<&str> = walk
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(walk.dirs.iter().map(String::as_str))
            .collect();
        for name in names {
            let shown = name.to_string_lossy().into_owned();
            let target = match readlinkat(self.fd.as_fd(), name.as_os_str()) {
                Ok(target) => target,
                Err(Errno::ENOENT) => continue,
                Err(Errno::EINVAL) => {
                    problems.push(Problem::new(
                        &shown,
                        ProblemKind::UnexpectedEntry,
                        if generation.is_some() {
                            "not a symlink into ..data; kubelet publishes every name as one"
                        } else {
                            "file in a volume without ..data; this is not an AtomicWriter volume"
                        },
                    ));
                    continue;
                }
                Err(_) => return Err(Moved),
            };
            if let Some(problem) =
                judge_root_link(&shown, &target, generation, &seen, walk.truncated)
            {
                problems.push(problem);
            }
        }
        Ok(problems)
    }
}

/// A `..data` target is one path component naming a sibling directory.
fn generation_name(target: &OsStr) -> Option<String> {
    let name = target.to_str()?;
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if name.starts_with("..") && !name.contains('/') => {
            Some(name.to_string())
        }
        _ => None,
    }
}

fn judge_root_link(
    name: &str,
    target: &OsStr,
    generation: Option<&str>,
    seen: &std::collections::HashSet<&str>,
    truncated: bool,
) -> Option<Problem> {
    let target_text = target.to_string_lossy();
    let shown_target = untrusted(&target_text);
    let escapes = || {
        Problem::new(
            name,
            ProblemKind::SymlinkEscapesVolume,
            format!("symlink to {shown_target} leaves the volume; not followed"),
        )
    };
    let mut inside: Vec<String> = Vec::new();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => inside.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if inside.pop().is_none() {
                    return Some(escapes());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Some(escapes()),
        }
    }
    let Some((first, rest)) = inside.split_first() else {
        return Some(escapes());
    };
    let into_generation =
        first == DATA_LINK || generation.is_some_and(|generation| first == generation);
    if !into_generation {
        return Some(Problem::new(
            name,
            ProblemKind::UnexpectedEntry,
            format!("symlink to {shown_target}, not into ..data"),
        ));
    }
    let rel = rest.join("/");
    // Past the entry limit the generation was not read whole: a name not seen may be there.
    let unseen = !(truncated || seen.contains(rel.as_str()));
    if generation.is_none() || unseen {
        return Some(Problem::new(
            name,
            ProblemKind::DanglingSymlink,
            format!("symlink to {shown_target}, which does not exist in the published generation"),
        ));
    }
    None
}

/// Accumulates one generation directory tree.
#[derive(Default)]
struct Walk<'a> {
    /// Where PEM verdicts are looked up and kept; `None` parses every file.
    cache: Option<&'a SharedPemCache>,
    files: Vec<FileSnapshot>,
    dirs: Vec<String>,
    problems: Vec<Problem>,
    entries: usize,
    /// More than [`MAX_ENTRIES`] entries: the rest was not read.
    truncated: bool,
}

impl Walk<'_> {
    fn directory(&mut self, dir: &OwnedFd, prefix: &str, depth: usize) -> Result<(), Moved> {
        let mut listing = Dir::openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| Moved)?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(|_| Moved)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            self.entries += 1;
            let shown = String::from_utf8_lossy(&name);
            let rel = if prefix.is_empty() {
                shown.into_owned()
            } else {
                format!("{prefix}/{shown}")
            };
            if self.entries > MAX_ENTRIES {
                self.truncated = true;
                self.problems.push(Problem {
                    file: None,
                    kind: ProblemKind::TooManyEntries,
                    detail: format!("more than {MAX_ENTRIES} entries; the rest was not read"),
                });
                return Ok(());
            }
            let name = OsStr::from_bytes(&name);
            let stat = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(_) => return Err(Moved),
            };
            match file_type(&stat) {
                SFlag::S_IFDIR if depth + 1 >= MAX_DEPTH => self.problems.push(Problem::new(
                    rel,
                    ProblemKind::TooManyEntries,
                    format!("directories nested deeper than {MAX_DEPTH}; not read"),
                )),
                SFlag::S_IFDIR => {
                    let child = openat(
                        dir.as_fd(),
                        name,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|_| Moved)?;
                    self.directory(&child, &rel, depth + 1)?;
                    self.dirs.push(rel);
                }
                SFlag::S_IFREG => self.file(dir, name, rel)?,
                SFlag::S_IFLNK => self.problems.push(Problem::new(
                    rel,
                    ProblemKind::NotRegularFile,
                    "symlink inside the generation directory; kubelet never writes one, not followed",
                )),
                other => self.problems.push(Problem::new(
                    rel,
                    ProblemKind::NotRegularFile,
                    format!("{}, not a regular file; not read", file_kind(other)),
                )),
            }
        }
        Ok(())
    }

    fn file(&mut self, dir: &OwnedFd, name: &OsStr, rel: String) -> Result<(), Moved> {
        // O_NONBLOCK: a FIFO swapped in after the fstatat must not hang the reader; O_NOCTTY: a
        // terminal swapped in must not become the agent's.
        let fd = match openat(
            dir.as_fd(),
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(Moved),
            Err(errno) => {
                self.problems.push(Problem::new(
                    rel,
                    ProblemKind::Unreadable,
                    format!("cannot open: {errno}"),
                ));
                return Ok(());
            }
        };
        let stat = fstat(&fd).map_err(|_| Moved)?;
        if file_type(&stat) != SFlag::S_IFREG {
            return Err(Moved);
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let mode = stat.st_mode & 0o7777;
        let mut entry = FileSnapshot {
            path: rel,
            size,
            mode,
            sha256: None,
            pem: None,
        };
        if size > MAX_FILE_BYTES {
            self.problems.push(too_large(&entry.path, size));
            self.files.push(entry);
            return Ok(());
        }
        let capacity = usize::try_from(size).unwrap_or(0);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        let mut reader = std::fs::File::from(fd).take(MAX_FILE_BYTES + 1);
        if let Err(err) = reader.read_to_end(&mut bytes) {
            self.problems.push(Problem::new(
                &entry.path,
                ProblemKind::Unreadable,
                format!("cannot read: {err}"),
            ));
            self.files.push(entry);
            return Ok(());
        }
        entry.size = bytes.len() as u64;
        if entry.size > MAX_FILE_BYTES {
            self.problems.push(too_large(&entry.path, entry.size));
            self.files.push(entry);
            return Ok(());
        }
        let digest = ContentDigest::of(&bytes);
        entry.sha256 = Some(digest.to_hex());
        let base_name = entry.path.rsplit('/').next().unwrap_or(&entry.path);
        if cert::is_pem_candidate(base_name, &bytes) {
            let parse = || cert::parse_pem(&bytes);
            let verdict = match self.cache {
                Some(cache) => cache.get_or_parse(digest, parse),
                None => parse(),
            };
            match verdict {
                Ok(contents) => entry.pem = Some(contents),
                Err(err) => self.problems.push(Problem::new(
                    &entry.path,
                    ProblemKind::UnparsablePem,
                    err.to_string(),
                )),
            }
        }
        self.files.push(entry);
        Ok(())
    }
}

fn too_large(path: &str, size: u64) -> Problem {
    Problem::new(
        path,
        ProblemKind::FileTooLarge,
        format!("{size} bytes, over the {MAX_FILE_BYTES}-byte limit of a Secret; not read"),
    )
}

/// What a directory entry that is neither a file, a directory nor a symlink is, for messages.
fn file_kind(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFIFO => "a named pipe (FIFO)",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "an unknown kind of file",
    }
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod hostile_tests;
mod open;
#[cfg(test)]
mod tests;
