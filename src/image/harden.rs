//! `whittle harden`: stream the source layers once, keep what the reports and analysis say the
//! app needs, write it as one deterministic layer, and push it with the original config.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use whittle_sensor::codec::{self, GunzipError};
use whittle_sensor::report::{MAX_JSON_BYTES, Report};

use super::analysis::packs::{self, Pack, PackSummary};
use super::analysis::select::{Patterns, Selection, Wanted, select};
use super::analysis::surface;
use super::config;
use super::distribution::store::{Image, Location, Store};
use super::error::{ImageError, Result};
use super::limits::Exceeded;
use super::media::{self, Compression, LayerCompression, layer_compression};
use super::packages::Inventory;
use super::packages::database::Database;
use super::reading::scan::{LayerStats, Pass, Retain, read_ahead, scan_layer};
use super::reading::spool::Spool;
use super::reading::tree::{Tree, ancestors};
use super::reading::whole::decompressed;
use super::writing::write::write_layer;

/// How many targeted re-reads may follow the first pass before giving up (each fetches what
/// the previous analysis newly asked for; ELF chains are shallow).
const MAX_PASSES: usize = 4;

pub struct HardenOptions {
    pub reports: Vec<Report>,
    pub dst: Option<Location>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Named include packs (`--pack`), each reported with what it added.
    pub packs: Vec<Pack>,
    /// The hardened layer's codec; zstd writes the image with OCI media types.
    pub compression: LayerCompression,
    /// Advanced by the compressed bytes read, when given.
    pub progress: Option<ProgressBar>,
}

/// What a harden did; `--summary` writes it as JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The source, pinned to its digest.
    pub source_image: String,
    /// The hardened image, pinned to its digest: `registry/repo@sha256:...`.
    pub hardened_image: String,
    /// The size of its manifest (what an artifact naming it as subject states).
    #[serde(skip)]
    pub hardened_manifest_size: u64,
    /// Its name as pushed, with the digest: `registry/repo:tag@sha256:...`.
    #[serde(skip)]
    pub pushed: String,
    /// Sum of the source's compressed layer sizes.
    pub source_bytes: u64,
    /// The hardened layer, compressed.
    pub hardened_bytes: u64,
    /// Non-directory paths kept and removed.
    pub files_kept: u64,
    pub files_removed: u64,
    /// Paths kept because analysis found them needed (ELF dependencies, symlinks, includes).
    pub added_by_analysis: usize,
    /// Report paths that are not in the image (created at run time or on a volume).
    pub report_paths_not_in_image: usize,
    pub removed_shells: Vec<String>,
    pub removed_package_managers: Vec<String>,
    pub removed_setuid: Vec<String>,
    /// Times the source layers were read (1 unless analysis needed files no report named).
    pub passes: usize,
    pub reports: usize,
    /// The OS packages, `files` as the source holds them and `kept` as the hardened image does.
    pub packages: Inventory,
    /// Each pack asked for, with the files and bytes it added beyond what the reports and
    /// analysis kept.
    pub packs: Vec<PackSummary>,
}

/// Reads a report file (JSON, or gzip-compressed JSON as the sensor posts it), within the
/// limit the operator's intake keeps too ([`codec::read_report`]).
pub fn load_report(path: &Path) -> Result<Report> {
    let io = ImageError::io(format!("reading report {}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file that is too large from one that just fits.
    file.take(MAX_JSON_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ImageError::io(format!("reading report {}", path.display())))?;
    let read = if bytes.len() > MAX_JSON_BYTES {
        Err(GunzipError::TooLarge {
            limit: MAX_JSON_BYTES,
        }
        .into())
    } else {
        codec::read_report(&bytes)
    };
    read.map_err(|source| ImageError::Report {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every report, so a bad one fails the command before anything is fetched or pushed.
pub fn load_reports(paths: &[PathBuf]) -> Result<Vec<Report>> {
    paths.iter().map(|p| load_report(p)).collect()
}

/// What the reports, the patterns and the image's environment ask for.
fn wanted(image: &Image, opts: &HardenOptions) -> Result<Wanted> {
    let mut seen = BTreeSet::new();
    let mut touched = BTreeSet::new();
    for report in &opts.reports {
        seen.extend(report.existing_paths().map(str::to_string));
        seen.extend(report.executables.keys().cloned());
        touched.extend(report.paths.keys().cloned());
        touched.extend(report.created_files.iter().cloned());
    }
    Ok(Wanted {
        seen,
        touched,
        patterns: Patterns::new(
            &packs::with_packs(&opts.include, &opts.packs),
            &opts.exclude,
        )?,
        ld_library_path: ld_library_path(&image.config),
    })
}

/// `LD_LIBRARY_PATH` of the image's environment: where its loader looks first.
pub fn ld_library_path(config: &serde_json::Value) -> Vec<String> {
    config::strings(config, "Env")
        .iter()
        .filter_map(|e| e.strip_prefix("LD_LIBRARY_PATH="))
        .flat_map(|v| v.split(':'))
        .filter(|d| d.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// The tree of `image` and the spool filled with what `retain` asks for: one read of every
/// layer, in order. With `early`, the gzip blocks of what [`Retain::early`] picks are
/// compressed on the way.
pub async fn read_image(
    store: &Store,
    image: &Image,
    retain: impl Retain + Send + Sync + Clone + 'static,
    early: bool,
    progress: Option<&ProgressBar>,
) -> Result<(Tree, Spool, Vec<LayerStats>)> {
    let limits = store.limits();
    let mut tree = Tree::with_max_entries(limits.tree_entries);
    let spool = if early {
        Spool::with_early()
    } else {
        Spool::new()
    };
    let mut spool = spool.map_err(ImageError::io("creating the spool file"))?;
    spool.set_limit(limits.spool_bytes);
    let mut stats = Vec::new();
    if let Some(bar) = progress {
        bar.set_length(image.compressed_size());
    }
    for layer in 0..image.layers.len() {
        let (t, s, st) = scan(
            store,
            image,
            layer,
            tree,
            true,
            spool,
            retain.clone(),
            progress,
        )
        .await?;
        tree = t;
        spool = s;
        stats.push(st);
    }
    spool
        .flush()
        .map_err(ImageError::io("writing the spool file"))?;
    Ok((tree, spool, stats))
}

/// Streams layer `layer` of `image` through [`scan_layer`] on a blocking thread, handing the
/// tree and spool over and back.
#[allow(clippy::too_many_arguments)]
async fn scan(
    store: &Store,
    image: &Image,
    layer: usize,
    mut tree: Tree,
    build: bool,
    mut spool: Spool,
    retain: impl Retain + Send + 'static,
    progress: Option<&ProgressBar>,
) -> Result<(Tree, Spool, LayerStats)> {
    let desc = &image.layers[layer];
    let compression = layer_compression(&desc.media_type).unwrap_or(Compression::Gzip);
    let stream = store.layer_stream(image, desc).await?;
    let bar = progress.cloned();
    let stream = stream.inspect(move |chunk| {
        if let (Some(bar), Ok(c)) = (&bar, chunk) {
            bar.inc(c.len() as u64);
        }
    });
    // Fused: the rest of the blob is read after the decompressor may have seen its end.
    let reader =
        tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream.fuse()));
    let digest = desc.digest.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let (tar, rest) = match decompressed(compression, reader) {
            Ok(split) => split,
            Err(e) => return (tree, spool, Err(e)),
        };
        let tar = read_ahead(tar);
        let pass = if build {
            Pass::Build(&mut tree)
        } else {
            Pass::Refill(&tree)
        };
        let stats = scan_layer(layer, tar, pass, &mut spool, &retain);
        // A budget refused is the answer; the rest of the blob is not worth fetching.
        if let Err(e) = &stats
            && Exceeded::from_io(e).is_some()
        {
            return (tree, spool, stats);
        }
        // The digest is compared at the end of the blob, which the tar's end-of-archive may
        // come well before; a mismatch there also explains whatever the tar reader made of it.
        let stats = match (stats, rest.finish()) {
            (_, Err(e)) => Err(e),
            (stats, Ok(_)) => stats,
        };
        (tree, spool, stats)
    })
    .await
    .map_err(|e| ImageError::layer(&digest, format!("reading it stopped: {e}")))?;
    let (tree, spool, stats) = joined;
    let stats = stats.map_err(|e| match Exceeded::from_io(&e) {
        Some(exceeded) => ImageError::Limit(exceeded),
        None => ImageError::layer(&digest, e),
    })?;
    Ok((tree, spool, stats))
}

/// Hardens `src` with `opts`; returns the summary (the image is pushed when this returns).
pub async fn harden(store: &Store, src: &Location, opts: HardenOptions) -> Result<Summary> {
    let image = store.resolve(src).await?;
    let dst = match &opts.dst {
        Some(d) => d.clone(),
        None => src.derived("whittle-hardened"),
    };
    let wanted = wanted(&image, &opts)?;
    let first = wanted.first_pass();
    // zstd's frame is one stream from libzstd's workers, with no blocks to make ahead.
    let early = opts.compression == LayerCompression::Gzip;
    let (tree, spool, _) = read_image(store, &image, first, early, opts.progress.as_ref()).await?;
    let (tree, spool, selection, passes) = complete(store, &image, tree, spool, &wanted).await?;
    let pack_summaries = packs::account(
        &tree,
        &spool,
        &wanted,
        &opts.include,
        &opts.exclude,
        &opts.packs,
    )?;
    let database = Database::read(&tree, &spool);
    let (keep, rewritten) = with_database(&database, &selection.keep, &wanted.patterns);

    let compression = opts.compression;
    let (layer, tree, spool) = {
        tokio::task::spawn_blocking(move || {
            let layer = write_layer(&tree, &spool, &keep, &rewritten, compression);
            (layer, tree, spool)
        })
        .await
        .map_err(|e| ImageError::layer("hardened", format!("writing it stopped: {e}")))?
    };
    drop(spool);
    let layer = layer.map_err(ImageError::io("writing the hardened layer"))?;

    let files = |keep: bool| {
        tree.iter()
            .filter(|(p, n)| !n.is_dir() && selection.keep.contains(p.as_str()) == keep)
            .count() as u64
    };
    let (files_kept, files_removed) = (files(true), files(false));
    let removed_shells = surface::list(&tree, |p, n| {
        surface::is_shell(p, n) && !selection.keep.contains(p)
    });
    let removed_package_managers = surface::list(&tree, |p, n| {
        surface::is_package_manager(p, n) && !selection.keep.contains(p)
    });
    let removed_setuid = surface::list(&tree, |p, n| {
        surface::is_setuid(n) && !selection.keep.contains(p)
    });

    let comment = format!(
        "whittle {}: kept {files_kept} of {} files",
        crate::VERSION,
        files_kept + files_removed
    );
    let cfg = config::hardened(&image, &layer.diff_id, comment);
    let (flavor, layer_type) = compression.media(image.flavor);
    let (_, config_desc) = futures::try_join!(
        store.put_blob_file(&dst, &layer.file, &layer.digest, layer.size),
        store.put_config(&dst, flavor, &cfg),
    )?;
    let layers = [media::descriptor(layer_type, &layer.digest, layer.size)];
    let (digest, manifest_size) = store
        .put_image_manifest(&dst, flavor, &config_desc, &layers)
        .await?;
    Ok(Summary {
        source_image: image.pinned.to_string(),
        hardened_image: dst.at_digest(&digest).to_string(),
        hardened_manifest_size: manifest_size,
        pushed: dst.pushed(&digest),
        source_bytes: image.compressed_size(),
        hardened_bytes: layer.size,
        files_kept,
        files_removed,
        added_by_analysis: selection.added_by_analysis,
        report_paths_not_in_image: selection.not_in_image,
        removed_shells,
        removed_package_managers,
        removed_setuid,
        passes,
        reports: opts.reports.len(),
        packages: database.inventory(Some(&selection.keep)),
        packs: pack_summaries,
    })
}

/// The kept set and rewritten files with what scanners need added: os-release, and the package
/// database pruned to what `keep` leaves (unless `--exclude` drops them).
fn with_database(
    database: &Database,
    keep: &BTreeSet<String>,
    patterns: &Patterns,
) -> (BTreeSet<String>, BTreeMap<String, Vec<u8>>) {
    let pruned = database.pruned(keep);
    let mut rewritten = pruned.files;
    rewritten.retain(|p, _| !patterns.excluded(p));
    let mut keep = keep.clone();
    for path in pruned.keep.iter().chain(rewritten.keys()) {
        if patterns.excluded(path) {
            continue;
        }
        keep.extend(ancestors(path).map(str::to_string));
        keep.insert(path.clone());
    }
    (keep, rewritten)
}

/// Selects the kept set, re-reading only the layers that hold contents analysis asked for and
/// the first pass did not set aside, until nothing is missing.
pub async fn complete(
    store: &Store,
    image: &Image,
    mut tree: Tree,
    mut owned: Spool,
    wanted: &Wanted,
) -> Result<(Tree, Spool, Selection, usize)> {
    let mut passes = 1;
    loop {
        let selection = select(&tree, &owned, wanted);
        if selection.missing.is_empty() {
            return Ok((tree, owned, selection, passes));
        }
        if passes >= MAX_PASSES {
            let (layer, path) = selection.missing.iter().next().cloned().unwrap_or_default();
            return Err(ImageError::layer(
                image.layers.get(layer).map_or("?", |l| l.digest.as_str()),
                format!("the content of /{path} was not found in it"),
            ));
        }
        tracing::debug!(missing = ?selection.missing, "contents to fetch");
        tracing::info!(
            files = selection.missing.len(),
            "analysis needs files no report named; re-reading the layers that hold them"
        );
        (tree, owned) = refill(store, image, tree, owned, selection.missing).await?;
        passes += 1;
    }
}

/// Sets aside the `(layer, path)` contents of `missing`, re-reading only the layers that hold
/// them (the tree is not rebuilt).
pub async fn refill(
    store: &Store,
    image: &Image,
    mut tree: Tree,
    mut owned: Spool,
    missing: BTreeSet<(usize, String)>,
) -> Result<(Tree, Spool)> {
    let layers: BTreeSet<usize> = missing.iter().map(|(l, _)| *l).collect();
    let missing = std::sync::Arc::new(missing);
    for layer in layers {
        let want = missing.clone();
        let retain = move |l: usize, p: &str| want.contains(&(l, p.to_string()));
        let (t, s, _) = scan(store, image, layer, tree, false, owned, retain, None).await?;
        tree = t;
        owned = s;
    }
    owned
        .flush()
        .map_err(ImageError::io("writing the spool file"))?;
    Ok((tree, owned))
}
