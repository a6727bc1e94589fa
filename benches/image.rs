//! Benchmark (not a test): `whittle harden` of the nginx fixture and of a synthetic image of
//! more than 1 GiB, against a real registry on loopback.
//!
//! For each image, in the same run and alternating so the page cache treats both alike:
//! - the floor: resolve the image and read every layer blob once from the registry, gunzipped to
//!   a sink, through the same streaming path harden uses (`Store::layer_stream`, digest checked,
//!   `StreamReader` + `SyncIoBridge` + `MultiGzDecoder` on a blocking thread);
//! - `whittle harden` as a child process of the release binary: wall time and peak RSS (from
//!   `wait4`'s rusage).
//!
//! Then `whittle instrument` once per image, for the bytes it uploads. Writes
//! `$CARGO_TARGET_DIR/bench/image.json` (default `target/bench/image.json`) and prints a table.
//!
//! Targets (reported, not asserted; issue 14's): harden ≤ 1.4× the floor on nginx and ≤ 1.25×
//! on the synthetic image; peak RSS ≤ 128 MiB on the
//! synthetic image. `make bench-image` runs it; `WHITTLE_BENCH_RUNS` (default 3) sets the runs.

// wait4(2), for the child's peak RSS, has no safe wrapper in std.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Instant;

use flate2::read::MultiGzDecoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use whittle::image::distribution::credentials::Credentials;
use whittle::image::distribution::registry::RegistryOptions;
use whittle::image::distribution::store::{Location, Store};
use whittle_sensor::report::{Access, Executable, Loss, Mode, PathRecord, Report};
use whittle_testbed::images::fixtures::{self, Fixture};
use whittle_testbed::images::registry::Registry;
use whittle_testbed::{binaries, tools};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const WHITTLE: &str = env!("CARGO_BIN_EXE_whittle");
/// Harden over floor, per image (issue 14).
fn target_ratio(image: &str) -> f64 {
    if image == "nginx" { 1.4 } else { 1.25 }
}
const TARGET_RSS_MIB: f64 = 128.0;
const MIB: f64 = (1 << 20) as f64;

// ---------------------------------------------------------------------------------------------
// The synthetic image: a deterministic plan (paths, sizes, contents) from one seed.

const SYNTH_SEED: u64 = 0x7768_6974_746c_6501;
const SYNTH_LAYERS: usize = 6;
const SYNTH_LAYER_BYTES: u64 = 192 << 20;
/// Leaf directories per layer: `srv/l<L>/<a..p>/<0..7>/`.
const SYNTH_DIRS: (u8, u8) = (16, 8);
/// Share of files that are small (256 B - 64 KiB, log-uniform); the rest are 64 KiB - 16 MiB.
const SYNTH_SMALL: f64 = 0.9;
/// Share of files holding random bytes; the others are text from a 1024-word vocabulary.
const SYNTH_RANDOM: f64 = 0.6;
/// Files an upper layer replaces and deletes (whiteouts) in the layer below.
const SYNTH_REPLACED: usize = 8;
const SYNTH_DELETED: usize = 4;
/// Share of the files the synthetic report names.
const SYNTH_REPORTED: f64 = 0.03;

/// wyrand: fast, deterministic, good enough to make bytes gzip cannot shrink.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) ^ t) as u64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        (a + (b - a) * self.unit()).exp() as u64
    }
}

#[derive(Clone)]
struct SynthFile {
    path: String,
    size: u64,
    text: bool,
    seed: u64,
}

struct SynthLayer {
    files: Vec<SynthFile>,
    /// (path, target)
    symlinks: Vec<(String, String)>,
    /// Paths of the layer below this layer deletes.
    whiteouts: Vec<String>,
}

fn synth_recipe() -> String {
    format!(
        "synthetic v1: seed {SYNTH_SEED:#x}, {SYNTH_LAYERS} layers of {SYNTH_LAYER_BYTES} bytes, dirs {SYNTH_DIRS:?}, small {SYNTH_SMALL}, random {SYNTH_RANDOM}, replaced {SYNTH_REPLACED}, deleted {SYNTH_DELETED}; GNU tar + gzip -6 layers; cmd /srv/bin/app"
    )
}

fn synth_plan() -> Vec<SynthLayer> {
    let mut rng = Rng(SYNTH_SEED);
    let mut layers: Vec<SynthLayer> = Vec::new();
    for l in 0..SYNTH_LAYERS {
        let dirs: Vec<String> = (0..SYNTH_DIRS.0)
            .flat_map(|a| {
                (0..SYNTH_DIRS.1).map(move |b| format!("srv/l{l}/{}/{b}", (b'a' + a) as char))
            })
            .collect();
        let mut files = Vec::new();
        let mut bytes = 0;
        // A README in every directory: one name many times over, as in real images.
        for dir in &dirs {
            let size = rng.log_uniform(512, 4096);
            bytes += size;
            files.push(SynthFile {
                path: format!("{dir}/README"),
                size,
                text: true,
                seed: rng.next(),
            });
        }
        let mut whiteouts = Vec::new();
        if let Some(below) = layers.last() {
            let candidates: Vec<&SynthFile> = below
                .files
                .iter()
                .filter(|f| !f.path.ends_with("/README"))
                .collect();
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < SYNTH_REPLACED + SYNTH_DELETED {
                picked.insert(rng.below(candidates.len() as u64) as usize);
            }
            for (i, idx) in picked.into_iter().enumerate() {
                let path = candidates[idx].path.clone();
                if i < SYNTH_REPLACED {
                    let size = rng.log_uniform(256, 1 << 20);
                    bytes += size;
                    files.push(SynthFile {
                        path,
                        size,
                        text: rng.unit() >= SYNTH_RANDOM,
                        seed: rng.next(),
                    });
                } else {
                    whiteouts.push(path);
                }
            }
        }
        let mut n = 0;
        while bytes < SYNTH_LAYER_BYTES {
            let size = if rng.unit() < SYNTH_SMALL {
                rng.log_uniform(256, 64 << 10)
            } else {
                rng.log_uniform(64 << 10, 16 << 20)
            };
            let text = rng.unit() >= SYNTH_RANDOM;
            let dir = &dirs[rng.below(dirs.len() as u64) as usize];
            let ext = if text { "txt" } else { "bin" };
            files.push(SynthFile {
                path: format!("{dir}/f{l}-{n:05}.{ext}"),
                size,
                text,
                seed: rng.next(),
            });
            bytes += size;
            n += 1;
        }
        // A directory symlink and a few file symlinks (relative, as packages ship them).
        let mut symlinks = vec![(format!("srv/l{l}/current"), "a".to_string())];
        let own: Vec<&SynthFile> = files
            .iter()
            .filter(|f| f.path.starts_with(&format!("srv/l{l}/")) && !f.path.ends_with("README"))
            .collect();
        for k in 0..6 {
            let f = own[rng.below(own.len() as u64) as usize];
            let rel = f.path.trim_start_matches(&format!("srv/l{l}/"));
            symlinks.push((format!("srv/l{l}/bin/tool{k}"), format!("../{rel}")));
        }
        layers.push(SynthLayer {
            files,
            symlinks,
            whiteouts,
        });
    }
    layers
}

/// The 1024-word vocabulary text files are made of.
fn vocabulary() -> Vec<Vec<u8>> {
    let mut rng = Rng(SYNTH_SEED ^ 0x0076_6f63_6162);
    (0..1024)
        .map(|_| {
            let len = 2 + rng.below(9) as usize;
            (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect()
}

fn write_content(path: &Path, f: &SynthFile, words: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rng = Rng(f.seed);
    let mut left = f.size as usize;
    let mut buf = Vec::with_capacity(1 << 16);
    while left > 0 {
        buf.clear();
        if f.text {
            let mut col = 0;
            while buf.len() < (1 << 16) {
                let w = &words[rng.below(words.len() as u64) as usize];
                buf.extend_from_slice(w);
                col += 1;
                buf.push(if col % 12 == 0 { b'\n' } else { b' ' });
            }
        } else {
            while buf.len() < (1 << 16) {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
        let n = left.min(buf.len());
        out.write_all(&buf[..n])?;
        left -= n;
    }
    out.flush()
}

/// The synthetic image as an OCI layout, cached under the test bed's fixture cache by a hash
/// of its recipe (about a minute to build on 2 cores; instant afterwards).
fn synthetic() -> Result<Fixture> {
    let dir = tools::cache_root().join("fixtures");
    fs::create_dir_all(&dir)?;
    let hash = format!("{:x}", Sha256::digest(synth_recipe().as_bytes()));
    let layout = dir.join(format!("synthetic-{}", &hash[..16]));
    let fixture = Fixture {
        name: "synthetic".into(),
        layout: layout.clone(),
        tag: "latest".into(),
    };
    if layout.join("index.json").is_file() {
        return Ok(fixture);
    }
    eprintln!(
        "building the synthetic image into {} (once per machine)...",
        layout.display()
    );
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("whittle-fixture-synthetic-")
        .tempdir_in(&dir)?;
    let staged = work.path().join("layout");
    let image = format!("{}:latest", staged.display());
    tools::run(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&staged),
    )?;
    tools::run(Command::new("umoci").args(["new", "--image", &image]))?;
    let words = vocabulary();
    for (l, layer) in synth_plan().iter().enumerate() {
        let root = work.path().join(format!("l{l}"));
        for f in &layer.files {
            let p = root.join(&f.path);
            fs::create_dir_all(p.parent().expect("a file path has a parent"))?;
            write_content(&p, f, &words)?;
        }
        for (path, target) in &layer.symlinks {
            let p = root.join(path);
            fs::create_dir_all(p.parent().expect("a symlink path has a parent"))?;
            std::os::unix::fs::symlink(target, &p)?;
        }
        for path in &layer.whiteouts {
            let (parent, name) = path.rsplit_once('/').expect("whiteouts are below srv/");
            let p = root.join(parent).join(format!(".wh.{name}"));
            fs::create_dir_all(p.parent().expect("a whiteout has a parent"))?;
            File::create(&p)?;
        }
        whittle_testbed::images::oci_layout::append_layer(
            &staged,
            "latest",
            &root,
            &format!("synthetic layer {l}"),
        )?;
        fs::remove_dir_all(&root)?;
    }
    tools::run(
        Command::new("umoci")
            .args(["config", "--image", &image])
            .arg("--config.cmd=/srv/bin/app"),
    )?;
    tools::run(Command::new("umoci").args(["gc", "--layout"]).arg(&staged))?;
    if let Err(e) = fs::rename(&staged, &layout) {
        // Another run finished first.
        if !layout.join("index.json").is_file() {
            return Err(e.into());
        }
    }
    eprintln!(
        "built the synthetic image in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(fixture)
}

// ---------------------------------------------------------------------------------------------
// Reports.

fn report(argv: &[&str], paths: &[String], executables: &[&str]) -> Report {
    let record = PathRecord {
        access: vec![Access::Open, Access::Read],
        exists: true,
        first_seen_ms: 0,
        count: 1,
    };
    Report {
        schema_version: whittle_sensor::report::SCHEMA_VERSION,
        sensor_version: "bench".into(),
        mode: Mode::Fanotify,
        identity: Default::default(),
        started_at_ms: 0,
        stopped_at_ms: 0,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        exit_status: 0,
        paths: paths.iter().map(|p| (p.clone(), record.clone())).collect(),
        executables: executables
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Executable {
                        argv0: p.to_string(),
                        count: 1,
                    },
                )
            })
            .collect(),
        created_files: Vec::new(),
        loss: Loss::default(),
    }
}

fn nginx_report() -> Report {
    let paths = [
        "/usr/sbin/nginx",
        "/etc/nginx/nginx.conf",
        "/etc/nginx/mime.types",
        "/var/www/html/index.nginx-debian.html",
        "/etc/passwd",
    ]
    .map(String::from);
    report(
        &["/usr/sbin/nginx", "-g", "daemon off;"],
        &paths,
        &["/usr/sbin/nginx"],
    )
}

/// About 3% of the synthetic image's files (as the top layer leaves them), a README (a name
/// that occurs in every directory) and two paths through symlinks.
fn synthetic_report() -> Report {
    let mut top: BTreeMap<String, ()> = BTreeMap::new();
    for layer in synth_plan() {
        for w in &layer.whiteouts {
            top.remove(w);
        }
        for f in layer.files {
            top.insert(f.path, ());
        }
    }
    let mut rng = Rng(SYNTH_SEED ^ 0x7265_706f_7274);
    let mut paths: Vec<String> = top
        .keys()
        .filter(|p| !p.ends_with("/README") && rng.unit() < SYNTH_REPORTED)
        .map(|p| format!("/{p}"))
        .collect();
    paths.push("/srv/l0/a/0/README".into());
    paths.push("/srv/l1/bin/tool0".into());
    paths.push("/srv/l2/current/3/README".into());
    report(&["/srv/bin/app"], &paths, &[])
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// A store that talks plain HTTP to the loopback registry `location` names.
fn plain_http_store(location: &Location) -> Store {
    Store::new(
        Credentials::anonymous(),
        RegistryOptions {
            insecure_registries: location
                .registry_host()
                .map(str::to_string)
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
}

/// Resolves `reference` and reads every layer once, gunzipped to a sink: what any harden must
/// at least do. Returns (seconds, uncompressed bytes).
async fn floor(reference: &str) -> Result<(f64, u64)> {
    let started = Instant::now();
    let location = Location::parse(reference)?;
    let store = plain_http_store(&location);
    let image = store.resolve(&location).await?;
    let mut total = 0;
    for desc in &image.layers {
        let stream = store.layer_stream(&image, desc).await?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        total += tokio::task::spawn_blocking(move || {
            let reader = BufReader::with_capacity(1 << 20, reader);
            std::io::copy(&mut MultiGzDecoder::new(reader), &mut std::io::sink())
        })
        .await??;
    }
    Ok((started.elapsed().as_secs_f64(), total))
}

#[repr(C)]
struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

struct Child {
    seconds: f64,
    /// Peak resident set, KiB.
    max_rss_kib: u64,
    /// User + system CPU seconds.
    cpu_seconds: f64,
    stdout: String,
    stderr: String,
}

/// argv[1] that makes this binary the launcher: `--measure-child OUT PROGRAM ARGS...`.
const LAUNCH: &str = "--measure-child";

/// Runs `program args` as a child, waits for it with `wait4` and writes its wall seconds, peak
/// RSS (KiB) and CPU seconds to `out`; exits with its status.
///
/// Why a launcher: Linux carries a process's `ru_maxrss` across `execve`, and a child spawned
/// by `posix_spawn` (vfork) starts from its parent's address space, so a child of this
/// benchmark would report the benchmark's own peak (hundreds of MiB while it builds the
/// synthetic image). The launcher is freshly exec'ed and small; its child's peak is its own.
fn launch(out: &Path, program: &str, args: &[String]) -> ExitCode {
    let started = Instant::now();
    let child = match Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench image: starting {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let mut status = 0;
    let mut usage = Rusage {
        utime: [0; 2],
        stime: [0; 2],
        maxrss: 0,
        rest: [0; 13],
    };
    loop {
        // SAFETY: `status` and `usage` are valid for writes; the pid is our unreaped child.
        let r = unsafe { wait4(child.id() as i32, &mut status, 0, &mut usage) };
        if r >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("bench image: waiting for {program}: {e}");
            return ExitCode::from(127);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let tv = |t: [i64; 2]| t[0] as f64 + t[1] as f64 / 1e6;
    let line = format!(
        "{seconds} {} {}",
        usage.maxrss.max(0),
        tv(usage.utime) + tv(usage.stime)
    );
    if let Err(e) = fs::write(out, line) {
        eprintln!("bench image: writing {}: {e}", out.display());
        return ExitCode::from(127);
    }
    let status = ExitStatus::from_raw(status);
    match status.code() {
        Some(c) => ExitCode::from(c as u8),
        None => ExitCode::from(128 + status.signal().unwrap_or(0) as u8),
    }
}

/// Runs `program args` to completion through the launcher: wall time, peak RSS, CPU time.
fn measure(program: &str, args: &[&OsStr], scratch: &Path) -> Result<Child> {
    let out_path = scratch.join("child.out");
    let err_path = scratch.join("child.err");
    let usage_path = scratch.join("child.usage");
    let _ = fs::remove_file(&usage_path);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(LAUNCH).arg(&usage_path).arg(program).args(args);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .status()?;
    let stdout = fs::read_to_string(&out_path)?;
    let stderr = fs::read_to_string(&err_path)?;
    if !status.success() {
        return Err(format!("{} {status}:\n{stderr}", tools::describe(&cmd)).into());
    }
    let usage = fs::read_to_string(&usage_path)?;
    let mut fields = usage.split_whitespace().map(str::parse::<f64>);
    let mut next = || -> Result<f64> {
        Ok(fields
            .next()
            .ok_or_else(|| format!("short usage line: {usage}"))??)
    };
    Ok(Child {
        seconds: next()?,
        max_rss_kib: next()? as u64,
        cpu_seconds: next()?,
        stdout,
        stderr,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Input<'a> {
    name: &'a str,
    fixture: Fixture,
    report: Report,
}

fn bench_image(
    runtime: &tokio::runtime::Runtime,
    registry: &Registry,
    sensor: &Path,
    scratch: &Path,
    runs: usize,
    input: Input<'_>,
) -> Result<Value> {
    let name = input.name;
    eprintln!("{name}: pushing with skopeo...");
    let src = input
        .fixture
        .push(registry, &format!("bench/{name}:latest"))?;
    // Kept next to the results, so a run can be repeated or profiled by hand.
    let report_path = bench_dir().join(format!("image-{name}-report.json"));
    fs::write(&report_path, serde_json::to_vec_pretty(&input.report)?)?;

    let location = Location::parse(&src)?;
    let store = plain_http_store(&location);
    let image = runtime.block_on(store.resolve(&location))?;
    let compressed = image.compressed_size();

    eprintln!("{name}: warming the registry's files...");
    let (_, uncompressed) = runtime.block_on(floor(&src))?;

    let (mut floors, mut hardens, mut rss, mut cpu) = (vec![], vec![], vec![], vec![]);
    let mut summary = Value::Null;
    for run in 0..runs {
        let (f, _) = runtime.block_on(floor(&src))?;
        floors.push(f);
        // A fresh repository each run, so every run uploads its layer.
        let dst = format!("{}/bench/{name}-hardened-{run}:latest", registry.host());
        let summary_path = scratch.join(format!("{name}-summary-{run}.json"));
        let h = measure(
            WHITTLE,
            &[
                "harden".as_ref(),
                src.as_ref(),
                "--report".as_ref(),
                report_path.as_ref(),
                "--insecure".as_ref(),
                "--hardened-image".as_ref(),
                dst.as_ref(),
                "--summary".as_ref(),
                summary_path.as_ref(),
            ],
            scratch,
        )?;
        eprintln!(
            "{name}: run {}: floor {f:.2} s, harden {:.2} s ({:.2} CPU s), peak RSS {:.1} MiB",
            run + 1,
            h.seconds,
            h.cpu_seconds,
            h.max_rss_kib as f64 / 1024.0
        );
        hardens.push(h.seconds);
        rss.push(h.max_rss_kib as f64 / 1024.0);
        cpu.push(h.cpu_seconds);
        summary = serde_json::from_slice(&fs::read(&summary_path)?)?;
    }

    let ins = measure(
        WHITTLE,
        &[
            "instrument".as_ref(),
            src.as_ref(),
            "--insecure".as_ref(),
            "--sensor".as_ref(),
            sensor.as_ref(),
        ],
        scratch,
    )?;
    let instrument_bytes: u64 = ins
        .stderr
        .lines()
        .find_map(|l| {
            l.strip_suffix(" bytes written")?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("whittle instrument printed no byte count:\n{}", ins.stderr))?;
    eprintln!(
        "{name}: instrument {:.2} s, {instrument_bytes} bytes written ({})",
        ins.seconds,
        ins.stdout.trim()
    );

    let floor_s = median(&floors);
    let harden_s = median(&hardens);
    let files_kept = summary["filesKept"].as_u64().unwrap_or(0);
    let files_removed = summary["filesRemoved"].as_u64().unwrap_or(0);
    Ok(json!({
        "image": name,
        "layers": image.layers.len(),
        "files": files_kept + files_removed,
        "sourceCompressedBytes": compressed,
        "sourceUncompressedBytes": uncompressed,
        "hardenedBytes": summary["hardenedBytes"],
        "filesKept": files_kept,
        "passes": summary["passes"],
        "floorSeconds": floor_s,
        "hardenSeconds": harden_s,
        "ratio": harden_s / floor_s,
        "hardenPeakRssMiB": rss.iter().cloned().fold(0.0, f64::max),
        "hardenCpuSeconds": median(&cpu),
        "runs": {
            "floorSeconds": floors,
            "hardenSeconds": hardens,
            "hardenPeakRssMiB": rss,
            "hardenCpuSeconds": cpu,
        },
        "instrumentBytesWritten": instrument_bytes,
        "instrumentSeconds": ins.seconds,
    }))
}

/// `$CARGO_TARGET_DIR/bench`, else `target/bench` of the workspace.
fn bench_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

fn yes(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn run() -> Result<()> {
    let runs: usize = match std::env::var("WHITTLE_BENCH_RUNS") {
        Ok(v) => v.parse().map_err(|_| format!("WHITTLE_BENCH_RUNS={v}"))?,
        Err(_) => 3,
    }
    .max(1);
    whittle::init_tls();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sensor = binaries::sensor_binary()?;
    let nginx = fixtures::nginx()?;
    let synthetic = synthetic()?;
    let scratch = tempfile::Builder::new()
        .prefix("whittle-bench-")
        .tempdir()?;
    fs::create_dir_all(bench_dir())?;
    let registry = Registry::start()?;

    let inputs = [
        Input {
            name: "nginx",
            fixture: nginx,
            report: nginx_report(),
        },
        Input {
            name: "synthetic",
            fixture: synthetic,
            report: synthetic_report(),
        },
    ];
    let mut results = Vec::new();
    for input in inputs {
        results.push(bench_image(
            &runtime,
            &registry,
            &sensor,
            scratch.path(),
            runs,
            input,
        )?);
    }
    drop(registry);

    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / MIB;
    println!();
    println!(
        "{:<10} {:>7} {:>11} {:>13} {:>11} {:>8} {:>9} {:>7} {:>9} {:>11}",
        "image",
        "layers",
        "source MiB",
        "uncompr. MiB",
        "hardened",
        "floor s",
        "harden s",
        "ratio",
        "peak RSS",
        "instrument"
    );
    for r in &results {
        println!(
            "{:<10} {:>7} {:>11.1} {:>13.1} {:>7.1} MiB {:>8.2} {:>9.2} {:>6.2}x {:>5.1} MiB {:>9} B",
            r["image"].as_str().unwrap_or("?"),
            r["layers"],
            mib(&r["sourceCompressedBytes"]),
            mib(&r["sourceUncompressedBytes"]),
            mib(&r["hardenedBytes"]),
            r["floorSeconds"].as_f64().unwrap_or(0.0),
            r["hardenSeconds"].as_f64().unwrap_or(0.0),
            r["ratio"].as_f64().unwrap_or(0.0),
            r["hardenPeakRssMiB"].as_f64().unwrap_or(0.0),
            r["instrumentBytesWritten"],
        );
    }
    println!(
        "(medians of {runs} runs; peak RSS is the largest of the runs; instrument: bytes uploaded)"
    );
    let mut targets = serde_json::Map::new();
    println!("targets:");
    for r in &results {
        let name = r["image"].as_str().unwrap_or("?");
        let ratio = r["ratio"].as_f64().unwrap_or(f64::INFINITY);
        let target = target_ratio(name);
        let met = ratio <= target;
        println!(
            "  {name}: harden <= {target}x the floor: {ratio:.2}x, {}",
            yes(met)
        );
        targets.insert(format!("{name}RatioMet"), json!(met));
    }
    let synth = &results[1];
    let rss = synth["hardenPeakRssMiB"].as_f64().unwrap_or(f64::INFINITY);
    let rss_met = rss <= TARGET_RSS_MIB;
    println!(
        "  synthetic: harden peak RSS <= {TARGET_RSS_MIB} MiB: {rss:.1} MiB, {}",
        yes(rss_met)
    );
    targets.insert("syntheticRssMet".into(), json!(rss_met));

    let out = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        },
        "runs": runs,
        "targets": {
            "hardenToFloorRatioMax": {"nginx": target_ratio("nginx"), "synthetic": target_ratio("synthetic")},
            "syntheticPeakRssMiBMax": TARGET_RSS_MIB,
            "met": targets,
        },
        "syntheticRecipe": synth_recipe(),
        "images": results,
    });
    let dir = bench_dir();
    fs::create_dir_all(&dir)?;
    let path = dir.join("image.json");
    fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!("written to {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 4 && args[1] == LAUNCH {
        return launch(Path::new(&args[2]), &args[3], &args[4..]);
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a benchmark is not a test: say so and leave.
    if !args.iter().any(|a| a == "--bench") {
        println!("bench image: skipped (a benchmark, not a test: run `make bench-image`)");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench image: {e}");
            ExitCode::FAILURE
        }
    }
}
