//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn modinfo(lines: &str) -> Vec<u8> {
    let mut m = MODINFO_START.to_vec();
    m.extend_from_slice(lines.as_bytes());
    m.extend_from_slice(&[
        0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8,
        0xf2,
    ]);
    m
}

fn blob(version: &str, modinfo: &[u8]) -> Vec<u8> {
    let mut b = BUILDINFO_MAGIC.to_vec();
    b.push(8);
    b.push(FLAG_INLINE);
    b.resize(32, 0);
    b.extend(varint(version.len() as u64));
    b.extend_from_slice(version.as_bytes());
    b.extend(varint(modinfo.len() as u64));
    b.extend_from_slice(modinfo);
    b
}

const TRAEFIK: &str = "path\tgithub.com/traefik/traefik/v3/cmd/traefik\nmod\tgithub.com/traefik/traefik/v3\t(devel)\t\ndep\tgithub.com/x/y\tv1.0.0\th1:abc=\nbuild\t-compiler=gc\n";

#[test]
fn inline_build_information_is_decoded() {
    let info = parse_buildinfo(&blob("go1.22.5", &modinfo(TRAEFIK))).unwrap();
    assert_eq!(info.go_version, "go1.22.5");
    assert_eq!(
        info.path.as_deref(),
        Some("github.com/traefik/traefik/v3/cmd/traefik")
    );
    assert_eq!(
        info.main,
        Some(Module {
            path: "github.com/traefik/traefik/v3".into(),
            version: "(devel)".into()
        })
    );
    assert!(
        info.describe()
            .contains("github.com/traefik/traefik/v3 (devel)")
    );
}

#[test]
fn the_magic_is_found_only_on_a_16_byte_boundary() {
    let mut data = vec![0u8; 48];
    data.extend(blob("go1.19.8", &modinfo(TRAEFIK)));
    assert_eq!(find_buildinfo(&data).unwrap().go_version, "go1.19.8");
    let mut off = vec![0u8; 5];
    off.extend(blob("go1.19.8", &modinfo(TRAEFIK)));
    assert_eq!(find_buildinfo(&off), Err(BuildInfoError::NoMagic));
    assert_eq!(find_buildinfo(b""), Err(BuildInfoError::NoMagic));
}

#[test]
fn a_cut_module_section_keeps_its_complete_lines() {
    let full = blob("go1.22.5", &modinfo(TRAEFIK));
    // Cut in the middle of the dep line: path and mod survive.
    let cut_at = full.len() - 40;
    let info = parse_buildinfo(&full[..cut_at]).unwrap();
    assert_eq!(info.main.unwrap().path, "github.com/traefik/traefik/v3");
    // Cut inside the mod line: the partial line is not trusted.
    let mod_at = full.windows(4).position(|w| w == b"mod\t").unwrap();
    let info = parse_buildinfo(&full[..mod_at + 20]).unwrap();
    assert_eq!(info.main, None);
    assert!(info.path.is_some());
}

#[test]
fn garbage_never_panics() {
    assert_eq!(parse_buildinfo(b"nope"), Err(BuildInfoError::NoMagic));
    assert_eq!(
        parse_buildinfo(&BUILDINFO_MAGIC[..]),
        Err(BuildInfoError::Truncated)
    );
    // Pointer layout (Go < 1.18).
    let mut old = BUILDINFO_MAGIC.to_vec();
    old.extend([8, 0]);
    old.resize(32, 0);
    assert_eq!(parse_buildinfo(&old), Err(BuildInfoError::PointerLayout));
    // A version length far past the data.
    let mut huge = BUILDINFO_MAGIC.to_vec();
    huge.extend([8, FLAG_INLINE]);
    huge.resize(32, 0);
    huge.extend(varint(u64::MAX));
    assert_eq!(parse_buildinfo(&huge), Err(BuildInfoError::Truncated));
    // An unterminated / overflowing varint.
    let mut bad = BUILDINFO_MAGIC.to_vec();
    bad.extend([8, FLAG_INLINE]);
    bad.resize(32, 0);
    bad.extend([0xff; 11]);
    assert_eq!(parse_buildinfo(&bad), Err(BuildInfoError::BadLength));
    // Every prefix of a valid blob, and noise after the header.
    let good = blob("go1.22.5", &modinfo(TRAEFIK));
    for end in 0..good.len() {
        let _ = parse_buildinfo(&good[..end]);
    }
    let mut noisy = good[..32].to_vec();
    noisy.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let _ = parse_buildinfo(&noisy);
}

#[test]
fn uvarint_follows_go() {
    assert_eq!(uvarint(&[0x00]), Some((0, 1)));
    assert_eq!(uvarint(&[0x7f]), Some((127, 1)));
    assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
    assert_eq!(uvarint(&[0x80]), None);
    assert_eq!(uvarint(&[]), None);
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
    let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(uvarint(&over), None);
}

#[test]
fn module_text_is_cleaned_for_messages() {
    let evil = "path\tx\nmod\tgithub.com/\x1b[31mevil\tv1\t\n";
    let info = parse_modinfo(&modinfo(evil), false);
    assert_eq!(info.main.unwrap().path, "github.com/\\u{1b}[31mevil");
    let long = format!("mod\t{}\tv1\t\n", "a".repeat(10_000));
    let info = parse_modinfo(long.as_bytes(), false);
    assert!(info.main.unwrap().path.len() <= MAX_FIELD_BYTES);
}

#[test]
fn executables_on_this_machine_are_told_apart() {
    // This test binary is Rust: not Go. A file that is not ELF is an error, not a panic.
    let me = std::env::current_exe().unwrap();
    assert_eq!(read_exe(&me).unwrap(), ExeKind::NotGo);
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("script");
    std::fs::write(&text, "#!/bin/sh\necho hi\n").unwrap();
    assert!(matches!(read_exe(&text), Err(GoExeError::NotElf { .. })));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    assert!(read_exe(&empty).is_err());
    assert!(matches!(
        read_exe(&dir.path().join("missing")),
        Err(GoExeError::Read { .. })
    ));
}

#[test]
fn a_truncated_or_lying_elf_is_refused_or_judged_without_panic() {
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The header alone: section table offsets point past the end.
    let head = dir.path().join("head");
    std::fs::write(&head, &me[..64]).unwrap();
    assert!(matches!(read_exe(&head), Ok(ExeKind::NotGo) | Err(_)));
    // A header claiming 65535 sections far away.
    let mut lying = me[..64].to_vec();
    lying[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes()); // e_shoff
    lying[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes()); // e_shnum
    let path = dir.path().join("lying");
    std::fs::write(&path, &lying).unwrap();
    assert!(matches!(read_exe(&path), Ok(ExeKind::NotGo) | Err(_)));
    // Go build information in a writable segment of a file without sections.
    let mut fake = me[..64].to_vec();
    fake[0x28..0x30].copy_from_slice(&0u64.to_le_bytes()); // no section table
    fake[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    fake[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    fake[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let mut ph = vec![0u8; 56];
    ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
    ph[4..8].copy_from_slice(&(object::elf::PF_R | PF_W).to_le_bytes());
    ph[8..16].copy_from_slice(&128u64.to_le_bytes()); // p_offset
    ph[32..40].copy_from_slice(&4096u64.to_le_bytes()); // p_filesz
    fake.extend(ph);
    fake.resize(128, 0);
    fake.extend(blob("go1.21.0", &modinfo(TRAEFIK)));
    let path = dir.path().join("segment");
    std::fs::write(&path, &fake).unwrap();
    match read_exe(&path).unwrap() {
        ExeKind::Go { info: Some(info) } => assert_eq!(info.go_version, "go1.21.0"),
        other => panic!("{other:?}"),
    }
}
