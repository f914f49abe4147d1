//! Property tests of the Go build information reader: the executable of a process in any
//! container is the container image's, so every byte of it is hostile.
//!
//! `PROPTEST_CASES=N` runs N cases of every property instead of the bounded default.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::proptest_cases::config;
use proptest::prelude::*;

use super::*;

/// Go's `binary.PutUvarint`.
fn put_uvarint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// The closing sentinel of the module information (Go's `modinfo.go`).
const MODINFO_END: [u8; 16] = [
    0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
];

/// What the linker writes: header, version, module information in its sentinels.
#[derive(Debug, Clone)]
struct Written {
    version: String,
    path: String,
    module: String,
    module_version: String,
    deps: Vec<String>,
}

impl Written {
    fn modinfo(&self) -> Vec<u8> {
        let mut text = format!(
            "path\t{}\nmod\t{}\t{}\th1:abc=\n",
            self.path, self.module, self.module_version
        );
        for dep in &self.deps {
            text.push_str(&format!("dep\t{dep}\tv1.0.0\th1:x=\n"));
        }
        text.push_str("build\t-compiler=gc\n");
        [&MODINFO_START[..], text.as_bytes(), &MODINFO_END[..]].concat()
    }

    fn blob(&self) -> Vec<u8> {
        let mut b = BUILDINFO_MAGIC.to_vec();
        b.push(8);
        b.push(FLAG_INLINE);
        b.resize(32, 0);
        b.extend(put_uvarint(self.version.len() as u64));
        b.extend_from_slice(self.version.as_bytes());
        let modinfo = self.modinfo();
        b.extend(put_uvarint(modinfo.len() as u64));
        b.extend(modinfo);
        b
    }

    /// What the reader must make of it: each field escaped and cut for messages.
    fn info(&self) -> BuildInfo {
        let clean = |s: &str| crate::text::sanitize(s, MAX_FIELD_BYTES).into_owned();
        BuildInfo {
            go_version: clean(&self.version),
            path: Some(clean(&self.path)),
            main: Some(Module {
                path: clean(&self.module),
                version: clean(&self.module_version),
            }),
        }
    }
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9./()-]{1,40}",
        "[^\t\n\u{0}]{0,20}",
        "[a-z]{250,300}",
    ]
}

fn written() -> impl Strategy<Value = Written> {
    (
        "go1\\.[0-9]{1,2}(\\.[0-9]{1,2})?",
        field(),
        field(),
        field(),
        prop::collection::vec("[a-z./]{1,30}", 0..20),
    )
        .prop_map(|(version, path, module, module_version, deps)| Written {
            version,
            path,
            module,
            module_version,
            deps,
        })
}

// ---------------------------------------------------------------------------------------------
// A small ELF64 (little-endian) with chosen sections

fn elf(sections: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut file = vec![0u8; 64];
    file[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    file[16..18].copy_from_slice(&3u16.to_le_bytes()); // e_type: ET_DYN
    file[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    file[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    file[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    let mut names = vec![0u8];
    let mut headers = vec![[0u8; 64]];
    for (name, data) in sections {
        let mut sh = [0u8; 64];
        sh[0..4].copy_from_slice(&(names.len() as u32).to_le_bytes());
        sh[4..8].copy_from_slice(&1u32.to_le_bytes()); // SHT_PROGBITS
        sh[24..32].copy_from_slice(&(file.len() as u64).to_le_bytes());
        sh[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        names.extend_from_slice(name.as_bytes());
        names.push(0);
        file.extend_from_slice(data);
        headers.push(sh);
    }
    let mut strtab = [0u8; 64];
    strtab[0..4].copy_from_slice(&(names.len() as u32).to_le_bytes());
    names.extend_from_slice(b".shstrtab\0");
    strtab[4..8].copy_from_slice(&3u32.to_le_bytes()); // SHT_STRTAB
    strtab[24..32].copy_from_slice(&(file.len() as u64).to_le_bytes());
    strtab[32..40].copy_from_slice(&(names.len() as u64).to_le_bytes());
    file.extend_from_slice(&names);
    headers.push(strtab);
    let shoff = file.len() as u64;
    for header in &headers {
        file.extend_from_slice(header);
    }
    file[40..48].copy_from_slice(&shoff.to_le_bytes()); // e_shoff
    file[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    file[60..62].copy_from_slice(&(headers.len() as u16).to_le_bytes()); // e_shnum
    file[62..64].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes()); // e_shstrndx
    file
}

fn other_section() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        prop_oneof![
            prop::sample::select(vec![".text", ".data", ".rodata", ".go.buildinfox", ".bss"])
                .prop_map(String::from),
            "[^\u{0}]{0,12}",
        ],
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_filter("not a Go section", |(name, _)| {
            ![".go.buildinfo", ".note.go.buildid", ".gopclntab"].contains(&name.as_str())
        })
}

fn read(bytes: &[u8]) -> Result<ExeKind, GoExeError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exe");
    std::fs::write(&path, bytes).unwrap();
    read_exe(&path)
}

proptest! {
    #![proptest_config(config(512))]

    /// Go's uvarint: every value reads back from its encoding, whatever follows it.
    #[test]
    fn a_uvarint_reads_back(n in any::<u64>(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
        let encoded = put_uvarint(n);
        let used = encoded.len();
        prop_assert_eq!(uvarint(&[encoded, tail].concat()), Some((n, used)));
    }

    /// Any bytes: at most ten are read, and an answer is never a panic.
    #[test]
    fn any_bytes_are_a_uvarint_or_none(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        if let Some((_, used)) = uvarint(&bytes) {
            prop_assert!((1..=10).contains(&used) && used <= bytes.len());
        }
    }

    /// Build information as the linker writes it, at any 16-byte boundary of the data: the Go
    /// version, main package and main module come back (escaped and cut for messages).
    #[test]
    fn written_build_information_reads_back(
        written in written(),
        blocks_before in 0usize..8,
        filler in any::<u8>(),
        tail in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let blob = written.blob();
        prop_assert_eq!(parse_buildinfo(&blob), Ok(written.info()));
        let mut data = vec![filler; blocks_before * 16];
        data.extend_from_slice(&blob);
        data.extend(tail);
        prop_assert_eq!(find_buildinfo(&data), Ok(written.info()));
        // One byte off the boundary, the magic is not build information.
        let mut shifted = vec![filler; blocks_before * 16 + 1];
        shifted.extend_from_slice(&blob);
        prop_assert_eq!(find_buildinfo(&shifted), Err(BuildInfoError::NoMagic));
    }

    /// Build information cut anywhere (a capped read): never a panic, and never a field that was
    /// not written: each is the written one or absent.
    #[test]
    fn cut_build_information_keeps_only_what_was_written(
        written in written(),
        cut in any::<prop::sample::Index>(),
    ) {
        let blob = written.blob();
        let cut = cut.index(blob.len() + 1);
        let full = written.info();
        match parse_buildinfo(&blob[..cut]) {
            Ok(info) => {
                prop_assert_eq!(&info.go_version, &full.go_version);
                prop_assert!(info.path.is_none() || info.path == full.path, "{:?}", info);
                prop_assert!(info.main.is_none() || info.main == full.main, "{:?}", info);
            }
            Err(err) => prop_assert!(matches!(
                err,
                BuildInfoError::Truncated | BuildInfoError::BadLength | BuildInfoError::NoMagic
            )),
        }
    }

    /// Module information with any bytes: fields are escaped and cut for messages.
    #[test]
    fn any_module_information_gives_printable_bounded_fields(
        raw in prop::collection::vec(any::<u16>(), 0..300).prop_map(|words| {
            words
                .into_iter()
                .map(|w| match w % 8 {
                    0 => b'\t',
                    1 => b'\n',
                    2 => 0x1b,
                    _ => (w >> 8) as u8,
                })
                .collect::<Vec<u8>>()
        }),
        prefix in prop::sample::select(vec!["", "path\t", "mod\t", "mod\tm\t"]),
        sentinel in any::<bool>(),
        truncated in any::<bool>(),
    ) {
        let mut bytes = if sentinel { MODINFO_START.to_vec() } else { Vec::new() };
        bytes.extend_from_slice(prefix.as_bytes());
        bytes.extend(raw);
        let info = parse_modinfo(&bytes, truncated);
        let fields = [info.path.clone(), info.main.as_ref().map(|m| m.path.clone()),
            info.main.as_ref().map(|m| m.version.clone())];
        for field in fields.into_iter().flatten() {
            prop_assert!(field.len() <= MAX_FIELD_BYTES, "{}", field.len());
            prop_assert!(!field.chars().any(crate::text::needs_escape), "{:?}", field);
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// An ELF file with build information in `.go.buildinfo` among any other sections is a Go
    /// program with that information; with only a Go marker section, a Go program without; with
    /// neither, not Go.
    #[test]
    fn an_elf_file_is_judged_by_its_go_sections(
        written in written(),
        others in prop::collection::vec(other_section(), 0..6),
        go in prop::sample::select(vec!["buildinfo", "marker", "none"]),
        at in any::<prop::sample::Index>(),
    ) {
        let mut sections = others;
        let at = at.index(sections.len() + 1);
        match go {
            "buildinfo" => sections.insert(at, (".go.buildinfo".to_string(), written.blob())),
            "marker" => sections.insert(at, (".gopclntab".to_string(), vec![1, 2, 3])),
            _ => {}
        }
        let named: Vec<(&str, Vec<u8>)> =
            sections.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let want = match go {
            "buildinfo" => ExeKind::Go { info: Some(written.info()) },
            "marker" => ExeKind::Go { info: None },
            _ => ExeKind::NotGo,
        };
        prop_assert_eq!(read(&elf(&named)).unwrap(), want);
    }

    /// The same file with any bytes changed, inserted or cut (lying offsets, counts and sizes):
    /// an answer or an error, quickly, never a panic.
    #[test]
    fn a_damaged_elf_file_is_judged_or_refused_quickly(
        written in written(),
        others in prop::collection::vec(other_section(), 0..3),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..4, any::<u8>(), any::<u64>()),
            1..8,
        ),
    ) {
        let mut sections = others;
        sections.push((".go.buildinfo".to_string(), written.blob()));
        let named: Vec<(&str, Vec<u8>)> =
            sections.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let mut bytes = elf(&named);
        for (at, op, byte, word) in edits {
            let pos = at.index(bytes.len());
            match op {
                0 => bytes[pos] = byte,
                // A lying 64-bit field (offset, size) wherever it lands.
                1 => {
                    let end = (pos + 8).min(bytes.len());
                    let word = word.to_le_bytes();
                    bytes[pos..end].copy_from_slice(&word[..end - pos]);
                }
                2 => bytes.insert(pos, byte),
                _ => bytes.truncate(pos.max(1)),
            }
        }
        let started = Instant::now();
        let _ = read(&bytes);
        prop_assert!(started.elapsed() < Duration::from_secs(5));
    }
}
