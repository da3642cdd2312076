//! Tier 1 (identical bytes) and the per-content fingerprints tiers 2 and 3 need.
//!
//! Files are grouped by size first, so a file whose size is unique is never opened in
//! `--exact-only` mode; same-size files are hashed with xxh3 and then compared byte for byte,
//! so a hash collision can never merge two different files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rayon::prelude::*;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::near;
use super::scan::{Candidate, Kind, is_script, is_wrapper};
use super::shell_tokens;

/// Same-size groups larger than this are hashed and compared by streaming, not held in memory.
const IN_MEMORY_GROUP_BYTES: u64 = 256 << 20;
const CHUNK: usize = 256 << 10;

/// A file's xxh3-128 and its first 8 KiB.
type HashAndHead = (u128, Vec<u8>);

/// One distinct content: the candidates (by index) that hold exactly these bytes.
#[derive(Debug)]
pub struct Content {
    pub members: Vec<usize>,
    pub hash: u128,
    pub fingerprint: Option<Fingerprint>,
}

/// What the normalized and near tiers compare.
#[derive(Debug)]
pub struct Fingerprint {
    pub normalized_hash: u128,
    /// Sorted, distinct token-shingle hashes.
    pub shingles: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Contents {
    pub contents: Vec<Content>,
    /// Candidates known to be scripts by name whose size is unique: never read in exact mode.
    pub unread_scripts: Vec<usize>,
    /// Wrappers an earlier `--apply` wrote; not scripts of their own.
    pub wrappers: usize,
    pub errors: Vec<String>,
}

pub fn fingerprint(bytes: &[u8]) -> Fingerprint {
    let tokens = shell_tokens::tokenize(bytes);
    Fingerprint {
        normalized_hash: xxh3_128(&shell_tokens::render(&tokens)),
        shingles: near::shingles(&shell_tokens::shingle_units(&tokens)),
    }
}

/// Split candidates into distinct contents. With `fingerprints`, every script is read (the
/// later tiers need its tokens); without, only files that share their size with another.
pub fn contents(candidates: &[Candidate], fingerprints: bool) -> Contents {
    let mut by_size: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        by_size.entry(c.size).or_default().push(i);
    }
    let mut out = Contents::default();
    let mut groups = Vec::new();
    for (_, group) in by_size {
        if group.len() == 1 && !fingerprints {
            if candidates[group[0]].kind == Kind::ByName {
                out.unread_scripts.push(group[0]);
            }
        } else {
            groups.push(group);
        }
    }
    // Big groups first so the long tasks start early and the cores stay busy to the end.
    groups.sort_by_key(|g| std::cmp::Reverse(g.len() as u64 * candidates[g[0]].size));
    let parts: Vec<Contents> = groups
        .par_iter()
        .map(|group| same_size(candidates, group, fingerprints))
        .collect();
    for part in parts {
        out.contents.extend(part.contents);
        out.wrappers += part.wrappers;
        out.errors.extend(part.errors);
    }
    out
}

fn same_size(candidates: &[Candidate], group: &[usize], fingerprints: bool) -> Contents {
    let size = candidates[group[0]].size;
    if size.saturating_mul(group.len() as u64) > IN_MEMORY_GROUP_BYTES {
        return same_size_streaming(candidates, group, fingerprints);
    }
    let mut out = Contents::default();
    let read: Vec<(usize, io::Result<Vec<u8>>)> = group
        .par_iter()
        .map(|&i| (i, std::fs::read(&candidates[i].path)))
        .collect();
    let mut buckets: HashMap<u128, Vec<(usize, Vec<u8>)>> = HashMap::new();
    for (i, bytes) in read {
        match bytes {
            Err(e) => out
                .errors
                .push(format!("{}: {e}", candidates[i].path.display())),
            Ok(bytes) if is_wrapper(&bytes) => out.wrappers += 1,
            Ok(bytes) if is_script(candidates[i].kind, &bytes) => buckets
                .entry(xxh3_128(&bytes))
                .or_default()
                .push((i, bytes)),
            Ok(_) => {}
        }
    }
    for (hash, members) in buckets {
        // Byte for byte: a shared hash alone never makes two files the same.
        let mut classes: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
        for (i, bytes) in members {
            match classes.iter_mut().find(|(rep, _)| *rep == bytes) {
                Some((_, ids)) => ids.push(i),
                None => classes.push((bytes, vec![i])),
            }
        }
        for (bytes, ids) in classes {
            out.contents.push(Content {
                members: ids,
                hash,
                fingerprint: fingerprints.then(|| fingerprint(&bytes)),
            });
        }
    }
    out
}

fn same_size_streaming(candidates: &[Candidate], group: &[usize], fingerprints: bool) -> Contents {
    let mut out = Contents::default();
    let hashed: Vec<(usize, io::Result<HashAndHead>)> = group
        .par_iter()
        .map(|&i| (i, stream_hash(&candidates[i].path)))
        .collect();
    let mut buckets: HashMap<u128, Vec<usize>> = HashMap::new();
    for (i, result) in hashed {
        match result {
            Err(e) => out
                .errors
                .push(format!("{}: {e}", candidates[i].path.display())),
            Ok((_, head)) if is_wrapper(&head) => out.wrappers += 1,
            Ok((hash, head)) if is_script(candidates[i].kind, &head) => {
                buckets.entry(hash).or_default().push(i)
            }
            Ok(_) => {}
        }
    }
    for (hash, members) in buckets {
        let mut classes: Vec<Vec<usize>> = Vec::new();
        for i in members {
            let path = &candidates[i].path;
            let home = classes
                .iter_mut()
                .find(|ids| same_bytes(&candidates[ids[0]].path, path).unwrap_or(false));
            match home {
                Some(ids) => ids.push(i),
                None => classes.push(vec![i]),
            }
        }
        for ids in classes {
            let fingerprint = if fingerprints {
                match std::fs::read(&candidates[ids[0]].path) {
                    Ok(bytes) => Some(fingerprint(&bytes)),
                    Err(e) => {
                        out.errors
                            .push(format!("{}: {e}", candidates[ids[0]].path.display()));
                        continue;
                    }
                }
            } else {
                None
            };
            out.contents.push(Content {
                members: ids,
                hash,
                fingerprint,
            });
        }
    }
    out
}

/// The xxh3 of a whole file read in chunks, and its first 8 KiB (to tell scripts and text).
pub fn stream_hash(path: &Path) -> io::Result<HashAndHead> {
    let mut file = File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 8192 {
            head.extend_from_slice(&buf[..n.min(8192 - head.len())]);
        }
        hasher.update(&buf[..n]);
    }
    Ok((hasher.digest128(), head))
}

pub fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
