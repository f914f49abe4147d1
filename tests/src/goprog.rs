//! Small stdlib-only Go programs built at test time with the machine's `go` (Debian's
//! `golang-go`), for tests about signalling Go programs: their build information (module path)
//! is what the agent reads from `/proc/<pid>/exe`.
//!
//! Builds are hermetic and offline: `GOCACHE`, `GOPATH` and `HOME` point below the test's temp
//! dir (`CARGO_TARGET_TMPDIR`), `GOFLAGS=-mod=mod`, `GOTOOLCHAIN=local` (never download a
//! toolchain), `GOPROXY=off`, `CGO_ENABLED=0`. Each (module path, source) is built once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, ensure};

/// A stand-in for Traefik: serves TLS on `--addr=` with `<dir>/tls.crt` + `<dir>/tls.key`,
/// where `<dir>` comes from `--providers.file.directory=` or `--certdir=`. With a
/// `--providers.file.*` flag it re-reads the files on SIGHUP, as Traefik v3's file provider
/// re-applies its configuration; without one it never asks for SIGHUP, so the Go runtime's
/// default makes it exit on one (while `/proc/<pid>/status` shows SIGHUP as caught, as for
/// every Go program). Prints `ready` once it listens, `reloaded` after each reload.
pub const TLS_SERVER: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

func main() {
	dir, addr, fileProvider := "", "", false
	for _, a := range os.Args[1:] {
		switch {
		case strings.HasPrefix(a, "--providers.file.directory="):
			dir = strings.TrimPrefix(a, "--providers.file.directory=")
			fileProvider = true
		case strings.HasPrefix(a, "--providers.file."):
			fileProvider = true
		case strings.HasPrefix(a, "--certdir="):
			dir = strings.TrimPrefix(a, "--certdir=")
		case strings.HasPrefix(a, "--addr="):
			addr = strings.TrimPrefix(a, "--addr=")
		}
	}
	var current atomic.Value
	load := func() error {
		c, err := tls.LoadX509KeyPair(dir+"/tls.crt", dir+"/tls.key")
		if err == nil {
			current.Store(&c)
		}
		return err
	}
	if err := load(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	if fileProvider {
		hups := make(chan os.Signal, 1)
		signal.Notify(hups, syscall.SIGHUP)
		go func() {
			for range hups {
				if err := load(); err != nil {
					fmt.Fprintln(os.Stderr, "reload:", err)
				} else {
					fmt.Println("reloaded")
				}
			}
		}()
	}
	config := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return current.Load().(*tls.Certificate), nil
	}}
	ln, err := tls.Listen("tcp", addr, config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			if t, ok := c.(*tls.Conn); ok && t.Handshake() == nil {
				c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"))
			}
		}(conn)
	}
}
"#;

/// `Ok` when `go version` runs (Debian package `golang-go`).
pub fn available() -> Result<(), String> {
    let out = Command::new("go")
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run go (Debian package golang-go): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Serialises builds within the test process (parallel tests ask for the same binary).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds `source` (one `main.go`) as module `module` below `root` (a test's
/// `CARGO_TARGET_TMPDIR`), unless that exact module and source were built there before (by this
/// run or an earlier one); returns the binary's path, named after the module's last element.
pub fn build(root: &Path, module: &str, source: &str) -> anyhow::Result<PathBuf> {
    use sha2::Digest as _;
    let _guard = BUILD_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = root.join("mountlag-go");
    let digest = sha2::Sha256::digest(format!("{module}\n{source}"));
    let dir = root.join(hex::encode(&digest[..8]));
    let name = module.rsplit('/').next().unwrap_or("prog");
    let binary = dir.join(name);
    if binary.exists() {
        return Ok(binary);
    }
    let src = dir.join("src");
    std::fs::create_dir_all(&src).with_context(|| format!("mkdir {}", src.display()))?;
    std::fs::write(src.join("go.mod"), format!("module {module}\n\ngo 1.19\n"))?;
    std::fs::write(src.join("main.go"), source)?;
    // Built under another name and renamed: a build interrupted half-way is never reused.
    let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
    go(
        &root,
        &src,
        &[
            "build",
            "-trimpath",
            "-o",
            partial.to_str().context("path")?,
            ".",
        ],
    )?;
    std::fs::rename(&partial, &binary)?;
    Ok(binary)
}

/// `go version -m BINARY`: the build information as Go itself reads it.
pub fn version_m(root: &Path, binary: &Path) -> anyhow::Result<String> {
    let root = root.join("mountlag-go");
    go(
        &root,
        &root,
        &["version", "-m", binary.to_str().context("path")?],
    )
}

fn go(root: &Path, cwd: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("go")
        .args(args)
        .current_dir(cwd)
        .env("HOME", root.join("home"))
        .env("GOCACHE", root.join("cache"))
        .env("GOPATH", root.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running go {args:?}"))?;
    ensure!(
        out.status.success(),
        "go {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
