//! Is an executable a Go program, and which module is it? Read from the build information the Go
//! linker embeds in every binary (`go version -m` shows the same), with capped reads only.
//!
//! ```text
//!  ELF header (64 bytes) ──▶ section headers (≤ MAX_SECTIONS) ──▶ .shstrtab (≤ 64 KiB)
//!        │                        └─ ".go.buildinfo" ──▶ its first MAX_BUILDINFO_BYTES
//!        └─ no section table: first writable, non-executable PT_LOAD ──▶ its first 64 KiB
//!  data ──▶ "\xff Go buildinf:" at a 16-byte boundary ──▶ parse_buildinfo
//! ```
//!
//! Why it matters: the Go runtime installs a handler for every signal, so `/proc/<pid>/status`
//! shows SIGHUP as caught, yet a Go program that did not ask for SIGHUP exits on it. Whether a
//! process is a Go program, and which one, must come from its executable.
//!
//! Build information layout (Go's `debug/buildinfo`): a 32-byte header, 16-byte aligned: the
//! 14-byte magic, the pointer size, a flags byte. Since Go 1.18 flag bit 0x2 says the Go version
//! and the module information follow inline at offset 32, each a uvarint length and the bytes.
//! The module information is wrapped in two 16-byte sentinels and holds lines such as
//! `path\t<main package>` and `mod\t<module path>\t<version>\t<sum>`. Go 1.13–1.17 stored
//! pointers instead; such a binary is still recognised as a Go program, without a module.
//!
//! The ELF structures come from the `object` crate (layout, endianness, 32/64-bit); this module
//! only decides which bytes to read and never reads more than a few hundred KiB of a binary that
//! may be 150 MB. Nothing read here is trusted: every length is checked, nothing panics.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use object::Endianness;
use object::elf::{FileHeader32, FileHeader64, PF_W, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader as _, SectionHeader as _};

/// The build information magic.
pub const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Flag bit: version and module information are stored inline (Go ≥ 1.18).
const FLAG_INLINE: u8 = 0x2;
/// Bytes read from the start of `.go.buildinfo`: the header, the version and the module
/// information of even very large programs (the lines that matter come first anyway).
pub const MAX_BUILDINFO_BYTES: u64 = 256 * 1024;
/// Bytes of the data segment searched for the magic when there is no section table (Go's own
/// reader searches the same 64 KiB).
const MAX_SEGMENT_SEARCH_BYTES: u64 = 64 * 1024;
/// More section or program headers than this is not a program mountlag needs to understand.
const MAX_HEADERS: u64 = 4096;
const MAX_SHSTRTAB_BYTES: u64 = 64 * 1024;
/// Longest module path or version kept (longer ones are cut: they only name things in messages).
const MAX_FIELD_BYTES: usize = 256;
/// The sentinel that opens the module information (Go's `modinfo.go`).
const MODINFO_START: [u8; 16] = [
    0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
];

/// What an executable is, as far as signals are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExeKind {
    /// No Go build information, no Go sections: not a Go program.
    NotGo,
    /// A Go program; `info` is `None` when its build information could not be decoded
    /// (Go < 1.18 layout, or damaged).
    Go { info: Option<BuildInfo> },
}

/// The parts of Go build information mountlag uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// `go1.22.5`.
    pub go_version: String,
    /// The main package (`path` line), e.g. `github.com/traefik/traefik/v3/cmd/traefik`.
    pub path: Option<String>,
    /// The main module (`mod` line).
    pub main: Option<Module>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// e.g. `github.com/traefik/traefik/v3`.
    pub path: String,
    /// e.g. `v3.1.2`, or `(devel)` for a build from a source tree.
    pub version: String,
}

impl BuildInfo {
    /// `module M version V (go1.x)` for messages.
    pub fn describe(&self) -> String {
        let module = match &self.main {
            Some(m) => format!("module {} {}", m.path, m.version),
            None => match &self.path {
                Some(p) => format!("package {p}"),
                None => "no module information".to_string(),
            },
        };
        if self.go_version.is_empty() {
            module
        } else {
            format!("{module}, built with {}", self.go_version)
        }
    }
}

/// Why an executable could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum GoExeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an ELF executable mountlag can read: {reason}")]
    NotElf { path: String, reason: String },
}

/// Why build information bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildInfoError {
    #[error("no build information magic")]
    NoMagic,
    #[error("build information truncated")]
    Truncated,
    #[error("build information has a malformed length")]
    BadLength,
    #[error("build information uses the pre-Go-1.18 pointer layout")]
    PointerLayout,
}

/// Reads `path` (normally `<proc_root>/<pid>/exe`) and says whether it is a Go program and which.
/// Reads only the ELF header, the section (or program) headers, the section name table and the
/// first [`MAX_BUILDINFO_BYTES`] of `.go.buildinfo`.
pub fn read_exe(path: &Path) -> Result<ExeKind, GoExeError> {
    let name = path.display().to_string();
    let read_err = |source| GoExeError::Read {
        path: name.clone(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let head = read_at(&file, 0, 64).map_err(read_err)?;
    let not_elf = |reason: String| GoExeError::NotElf {
        path: name.clone(),
        reason,
    };
    match head.get(4) {
        Some(1) => elf_kind::<FileHeader32<Endianness>>(&file, &head)
            .map_err(|e| e.into_error(&name, not_elf)),
        Some(2) => elf_kind::<FileHeader64<Endianness>>(&file, &head)
            .map_err(|e| e.into_error(&name, not_elf)),
        _ => Err(not_elf("no ELF class byte".to_string())),
    }
}

/// An I/O error or a structural one, before it is given the file's name.
enum ElfFailure {
    Io(io::Error),
    Format(String),
}

impl ElfFailure {
    fn into_error(self, path: &str, not_elf: impl FnOnce(String) -> GoExeError) -> GoExeError {
        match self {
            ElfFailure::Io(source) => GoExeError::Read {
                path: path.to_string(),
                source,
            },
            ElfFailure::Format(reason) => not_elf(reason),
        }
    }
}

impl From<io::Error> for ElfFailure {
    fn from(err: io::Error) -> Self {
        ElfFailure::Io(err)
    }
}

fn elf_kind<H: FileHeader<Endian = Endianness>>(
    file: &File,
    head: &[u8],
) -> Result<ExeKind, ElfFailure> {
    let header = H::parse(head).map_err(|e| ElfFailure::Format(e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| ElfFailure::Format(e.to_string()))?;

    let sections = section_table(file, header, endian)?;
    if !sections.is_empty() {
        let mut go_markers = false;
        for (name, offset, size) in &sections {
            match name.as_slice() {
                b".go.buildinfo" => {
                    let data = read_at(file, *offset, (*size).min(MAX_BUILDINFO_BYTES))?;
                    return Ok(ExeKind::Go {
                        info: find_buildinfo(&data).ok(),
                    });
                }
                b".note.go.buildid" | b".gopclntab" => go_markers = true,
                _ => {}
            }
        }
        if go_markers {
            return Ok(ExeKind::Go { info: None });
        }
    }
    // No section table (stripped with sstrip, or none had the name): Go's own reader falls back
    // to the first writable, non-executable segment, where the linker puts the build info.
    if let Some((offset, size)) = data_segment(file, header, endian)? {
        let data = read_at(file, offset, size.min(MAX_SEGMENT_SEARCH_BYTES))?;
        match find_buildinfo(&data) {
            Ok(info) => return Ok(ExeKind::Go { info: Some(info) }),
            Err(BuildInfoError::NoMagic) => {}
            Err(_) => return Ok(ExeKind::Go { info: None }),
        }
    }
    Ok(ExeKind::NotGo)
}

/// `(name, file offset, size)` of every section; empty when the file has no section table (or
/// an extended one, which no Go binary needs).
fn section_table<H: FileHeader<Endian = Endianness>>(
    file: &File,
    header: &H,
    endian: Endianness,
) -> Result<Vec<(Vec<u8>, u64, u64)>, ElfFailure> {
    let shoff: u64 = header.e_shoff(endian).into();
    let count = u64::from(header.e_shnum(endian));
    let entsize = u64::from(header.e_shentsize(endian));
    let strndx = u64::from(header.e_shstrndx(endian));
    let wanted = std::mem::size_of::<H::SectionHeader>() as u64;
    if shoff == 0 || count == 0 || count > MAX_HEADERS || entsize != wanted || strndx >= count {
        return Ok(Vec::new());
    }
    let bytes = read_at(file, shoff, count * entsize)?;
    let Ok((headers, _)) = object::pod::slice_from_bytes::<H::SectionHeader>(
        &bytes,
        usize::try_from(count).unwrap_or(0),
    ) else {
        return Ok(Vec::new());
    };
    let Some(strtab) = usize::try_from(strndx).ok().and_then(|i| headers.get(i)) else {
        return Ok(Vec::new());
    };
    let names = read_at(
        file,
        strtab.sh_offset(endian).into(),
        Into::<u64>::into(strtab.sh_size(endian)).min(MAX_SHSTRTAB_BYTES),
    )?;
    Ok(headers
        .iter()
        .map(|sh| {
            let start = usize::try_from(sh.sh_name(endian)).unwrap_or(usize::MAX);
            let name = names
                .get(start..)
                .map(|rest| rest.split(|b| *b == 0).next().unwrap_or_default().to_vec())
                .unwrap_or_default();
            (name, sh.sh_offset(endian).into(), sh.sh_size(endian).into())
        })
        .collect())
}

/// The file range of the first loadable segment that is writable and not executable.
fn data_segment<H: FileHeader<Endian = Endianness>>(
    file: &File,
    header: &H,
    endian: Endianness,
) -> Result<Option<(u64, u64)>, ElfFailure> {
    let phoff: u64 = header.e_phoff(endian).into();
    let count = u64::from(header.e_phnum(endian));
    let entsize = u64::from(header.e_phentsize(endian));
    let wanted = std::mem::size_of::<H::ProgramHeader>() as u64;
    if phoff == 0 || count == 0 || count > MAX_HEADERS || entsize != wanted {
        return Ok(None);
    }
    let bytes = read_at(file, phoff, count * entsize)?;
    let Ok((headers, _)) = object::pod::slice_from_bytes::<H::ProgramHeader>(
        &bytes,
        usize::try_from(count).unwrap_or(0),
    ) else {
        return Ok(None);
    };
    Ok(headers
        .iter()
        .find(|ph| ph.p_type(endian) == PT_LOAD && ph.p_flags(endian) & (PF_X | PF_W) == PF_W)
        .map(|ph| (ph.p_offset(endian).into(), ph.p_filesz(endian).into())))
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file). `len` is always one of
/// this module's caps, never a size taken from the file unchecked.
fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len.min(MAX_BUILDINFO_BYTES.max(MAX_HEADERS * 64)))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let at = offset
            .checked_add(filled as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match file.read_at(&mut buf[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Finds the build information magic at a 16-byte boundary of `data` and decodes what follows.
pub fn find_buildinfo(data: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    let at = (0..data.len())
        .step_by(16)
        .find(|i| data[*i..].starts_with(BUILDINFO_MAGIC))
        .ok_or(BuildInfoError::NoMagic)?;
    parse_buildinfo(&data[at..])
}

/// Decodes build information that starts with the magic. The module information may be cut
/// short (a capped read): complete lines are still used.
pub fn parse_buildinfo(data: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    if !data.starts_with(BUILDINFO_MAGIC) {
        return Err(BuildInfoError::NoMagic);
    }
    let flags = *data.get(15).ok_or(BuildInfoError::Truncated)?;
    let rest = data.get(32..).ok_or(BuildInfoError::Truncated)?;
    if flags & FLAG_INLINE == 0 {
        return Err(BuildInfoError::PointerLayout);
    }
    let (version, rest) = inline_string(rest, false)?;
    // A capped read may end anywhere in the module information, even inside its length.
    let (modinfo, truncated) = match inline_string(rest, true) {
        Ok((m, _)) => (m, modinfo_cut(rest)),
        Err(_) => (&[][..], true),
    };
    let mut info = parse_modinfo(modinfo, truncated);
    info.go_version = clean(version);
    Ok(info)
}

/// Whether the module information's declared length runs past the bytes read.
fn modinfo_cut(rest: &[u8]) -> bool {
    match uvarint(rest) {
        Some((len, used)) => (rest.len() - used) < usize::try_from(len).unwrap_or(usize::MAX),
        None => true,
    }
}

/// A uvarint-length-prefixed string. With `partial`, a string longer than the data gives what
/// there is.
fn inline_string(data: &[u8], partial: bool) -> Result<(&[u8], &[u8]), BuildInfoError> {
    let (len, used) = uvarint(data).ok_or(BuildInfoError::BadLength)?;
    let body = &data[used..];
    match usize::try_from(len) {
        Ok(len) if len <= body.len() => Ok((&body[..len], &body[len..])),
        _ if partial => Ok((body, &[])),
        _ => Err(BuildInfoError::Truncated),
    }
}

/// Go's `binary.Uvarint`: at most 10 bytes, no overflow past 64 bits. `None` for an empty,
/// unterminated or overflowing varint.
pub fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in data.iter().take(10).enumerate() {
        let low = u64::from(byte & 0x7f);
        if i == 9 && *byte > 1 {
            return None;
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Parses the module information (`path`, `mod` lines), with or without its sentinels. When
/// `truncated`, the last (possibly partial) line is dropped.
pub fn parse_modinfo(raw: &[u8], truncated: bool) -> BuildInfo {
    let mut text = raw;
    if text.starts_with(&MODINFO_START) {
        text = &text[16..];
        // The closing sentinel follows the last newline (Go: `mod[len(mod)-17] == '\n'`).
        if !truncated && text.len() >= 17 && text[text.len() - 17] == b'\n' {
            text = &text[..text.len() - 16];
        }
    }
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if truncated || !text.ends_with('\n') {
        lines.pop();
    }
    let mut info = BuildInfo::default();
    for line in lines {
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("path"), Some(path), _) if info.path.is_none() => {
                info.path = Some(clean(path.as_bytes()))
            }
            (Some("mod"), Some(path), Some(version)) if info.main.is_none() => {
                info.main = Some(Module {
                    path: clean(path.as_bytes()),
                    version: clean(version.as_bytes()),
                });
            }
            _ => {}
        }
    }
    info
}

/// Text from a binary, fit for a message: escaped and cut (`crate::text`).
fn clean(bytes: &[u8]) -> String {
    crate::text::sanitize(&String::from_utf8_lossy(bytes), MAX_FIELD_BYTES).into_owned()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
