//! `beamops dedupe`: duplicated shell scripts across a repository's folders and worktrees.
//!
//! Finding is three tiers over the same scan — identical bytes ([`exact`]), identical after
//! dropping comments and spacing ([`shell_tokens`]), and nearly identical ([`near`]) — and
//! consolidating ([`consolidate`]) only ever touches the first two, journaled so that
//! [`undo`] can put every byte and mode back, even after a kill -9.

pub mod consolidate;
pub mod exact;
pub mod manifest;
pub mod near;
pub mod report;
pub mod scan;
pub mod shell_tokens;
pub mod siblings;
pub mod undo;
pub mod worktrees;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;

use scan::{Filter, SymlinkEntry};
use worktrees::Worktree;

pub const DEFAULT_THRESHOLD: f64 = 0.85;

#[derive(Debug, Clone)]
pub struct Options {
    /// Extra roots; empty means the project root. Worktrees are always added.
    pub paths: Vec<PathBuf>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub all_files: bool,
    pub exact_only: bool,
    pub threshold: f64,
}

#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: PathBuf,
    /// Relative to the root (with `..` for worktrees that live outside it).
    pub display: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub backup: bool,
    pub worktree: Option<usize>,
    pub tracked: bool,
    /// xxh3-128 of the bytes at scan time; `--apply` re-checks it just before replacing.
    pub hash: Option<u128>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Exact,
    Normalized,
}

#[derive(Debug)]
pub struct Group {
    pub tier: Tier,
    pub canonical: usize,
    pub reason: &'static str,
    /// Every other file of the group and how it matches the canonical.
    pub copies: Vec<(usize, Tier)>,
}

#[derive(Debug)]
pub struct NearMember {
    pub file: usize,
    pub similarity: f64,
    pub differs: String,
}

#[derive(Debug)]
pub struct NearCluster {
    pub canonical: usize,
    pub reason: &'static str,
    pub members: Vec<NearMember>,
}

#[derive(Debug)]
pub struct Findings {
    pub root: PathBuf,
    pub worktrees: Vec<Worktree>,
    pub files: Vec<FileInfo>,
    pub groups: Vec<Group>,
    pub near: Vec<NearCluster>,
    pub symlinks: Vec<SymlinkEntry>,
    pub errors: Vec<String>,
    pub exact_groups: usize,
    pub normalized_groups: usize,
    pub unique_after: usize,
    pub wrappers: usize,
    pub exact_only: bool,
}

impl Findings {
    pub fn worktree_of(&self, file: &FileInfo) -> Option<&Worktree> {
        file.worktree.map(|w| &self.worktrees[w])
    }
}

pub fn find(root: &Path, opts: &Options) -> Result<Findings> {
    let root = root.canonicalize()?;
    let worktrees = worktrees::discover(&root);
    let mut paths = if opts.paths.is_empty() {
        vec![root.clone()]
    } else {
        opts.paths.clone()
    };
    paths.extend(worktrees.iter().map(|w| w.path.clone()));
    let roots = scan::disjoint_roots(&paths)?;
    let filter = Filter::new(&opts.include, &opts.exclude, opts.all_files)?;
    let walked = scan::walk(&roots, &root, &filter);
    let contents = exact::contents(&walked.candidates, !opts.exact_only);

    let mut files = Vec::new();
    let mut file_of_content: Vec<Vec<usize>> = Vec::new();
    let describe = |i: usize, hash: Option<u128>| {
        let c = &walked.candidates[i];
        let worktree = worktrees
            .iter()
            .enumerate()
            .filter(|(_, w)| c.path.starts_with(&w.path))
            .max_by_key(|(_, w)| w.path.as_os_str().len())
            .map(|(k, _)| k);
        let tracked = worktree.is_some_and(|k| {
            let w = &worktrees[k];
            c.path
                .strip_prefix(&w.path)
                .is_ok_and(|rel| w.tracked.contains(rel))
        });
        FileInfo {
            path: c.path.clone(),
            display: scan::relative_path(&root, &c.path).display().to_string(),
            size: c.size,
            mode: c.mode,
            mtime: c.mtime,
            backup: c.backup,
            worktree,
            tracked,
            hash,
        }
    };
    for content in &contents.contents {
        let mut ids = Vec::new();
        for &m in &content.members {
            ids.push(files.len());
            files.push(describe(m, Some(content.hash)));
        }
        file_of_content.push(ids);
    }
    for &i in &contents.unread_scripts {
        files.push(describe(i, None));
    }

    // The sets consolidation would merge: contents with the same normalized form (or, in
    // exact-only mode, each content on its own).
    let mut sets: Vec<Vec<usize>> = Vec::new();
    if opts.exact_only {
        sets = (0..contents.contents.len()).map(|c| vec![c]).collect();
    } else {
        let mut by_norm: HashMap<u128, usize> = HashMap::new();
        for (c, content) in contents.contents.iter().enumerate() {
            let key = content
                .fingerprint
                .as_ref()
                .expect("fingerprinted")
                .normalized_hash;
            match by_norm.get(&key) {
                Some(&s) => sets[s].push(c),
                None => {
                    by_norm.insert(key, sets.len());
                    sets.push(vec![c]);
                }
            }
        }
    }
    let content_of_file: HashMap<usize, usize> = file_of_content
        .iter()
        .enumerate()
        .flat_map(|(c, ids)| ids.iter().map(move |&f| (f, c)))
        .collect();

    let exact_groups = file_of_content.iter().filter(|ids| ids.len() > 1).count();
    let normalized_groups = sets.iter().filter(|s| s.len() > 1).count();
    let mut groups = Vec::new();
    let mut set_canonical = Vec::with_capacity(sets.len());
    let mut replaced = 0;
    for set in &sets {
        let members: Vec<usize> = set
            .iter()
            .flat_map(|&c| file_of_content[c].iter().copied())
            .collect();
        let (canonical, reason) = choose_canonical(&files, &worktrees, &members);
        set_canonical.push(canonical);
        if members.len() < 2 {
            continue;
        }
        replaced += members.len() - 1;
        let copies = members
            .iter()
            .filter(|&&f| f != canonical)
            .map(|&f| {
                let tier = if content_of_file[&f] == content_of_file[&canonical] {
                    Tier::Exact
                } else {
                    Tier::Normalized
                };
                (f, tier)
            })
            .collect();
        groups.push(Group {
            tier: if set.len() > 1 {
                Tier::Normalized
            } else {
                Tier::Exact
            },
            canonical,
            reason,
            copies,
        });
    }
    groups.sort_by(|a, b| files[a.canonical].display.cmp(&files[b.canonical].display));

    let near = if opts.exact_only {
        Vec::new()
    } else {
        near_clusters(
            &files,
            &worktrees,
            &contents,
            &sets,
            &set_canonical,
            opts.threshold,
        )
    };

    let symlinks = walked
        .symlinks
        .iter()
        .map(|(path, target)| SymlinkEntry {
            path: scan::relative_path(&root, path).display().to_string(),
            target: target.display().to_string(),
            inside: path
                .canonicalize()
                .is_ok_and(|real| roots.iter().any(|r| real.starts_with(r))),
        })
        .collect();
    let mut errors = walked.errors;
    errors.extend(contents.errors);
    Ok(Findings {
        unique_after: files.len() - replaced,
        root,
        worktrees,
        files,
        groups,
        near,
        symlinks,
        errors,
        exact_groups,
        normalized_groups,
        wrappers: contents.wrappers,
        exact_only: opts.exact_only,
    })
}

fn near_clusters(
    files: &[FileInfo],
    worktrees: &[Worktree],
    contents: &exact::Contents,
    sets: &[Vec<usize>],
    set_canonical: &[usize],
    threshold: f64,
) -> Vec<NearCluster> {
    let shingles: Vec<&[u64]> = sets
        .iter()
        .map(|set| {
            let fp = contents.contents[set[0]]
                .fingerprint
                .as_ref()
                .expect("fingerprinted");
            fp.shingles.as_slice()
        })
        .collect();
    let pairs = near::similar_pairs(&shingles, threshold);
    let mut parent: Vec<usize> = (0..sets.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(a, b, _) in &pairs {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut clusters: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(a, b, _) in &pairs {
        for s in [a, b] {
            let r = find(&mut parent, s);
            let members = clusters.entry(r).or_default();
            if !members.contains(&s) {
                members.push(s);
            }
        }
    }
    let mut out: Vec<NearCluster> = clusters
        .into_values()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|set_ids| {
            let canon_files: Vec<usize> = set_ids.iter().map(|&s| set_canonical[s]).collect();
            let (canonical, reason) = choose_canonical(files, worktrees, &canon_files);
            let canonical_set = set_ids[canon_files.iter().position(|&f| f == canonical).unwrap()];
            let mut members: Vec<NearMember> = set_ids
                .iter()
                .filter(|&&s| s != canonical_set)
                .map(|&s| NearMember {
                    file: set_canonical[s],
                    similarity: near::jaccard(shingles[canonical_set], shingles[s]),
                    differs: report::diff_summary(
                        &files[canonical].path,
                        &files[set_canonical[s]].path,
                    ),
                })
                .collect();
            members.sort_by(|a, b| files[a.file].display.cmp(&files[b.file].display));
            NearCluster {
                canonical,
                reason,
                members,
            }
        })
        .collect();
    out.sort_by(|a, b| files[a.canonical].display.cmp(&files[b.canonical].display));
    out
}

/// The copy the others will point to. Consolidation must never make one worktree depend on
/// another that may be removed, so: the main worktree first, then tracked by git, then a name
/// that does not look like a backup, then the shortest path, then the oldest.
pub fn choose_canonical(
    files: &[FileInfo],
    worktrees: &[Worktree],
    members: &[usize],
) -> (usize, &'static str) {
    let key = |f: usize| {
        let file = &files[f];
        let main = file.worktree.is_some_and(|w| worktrees[w].main);
        (
            !main,
            !file.tracked,
            file.backup,
            file.display.len(),
            file.mtime,
            file.display.clone(),
        )
    };
    let mut ranked: Vec<usize> = members.to_vec();
    ranked.sort_by_key(|&f| key(f));
    let best = ranked[0];
    let Some(&second) = ranked.get(1) else {
        return (best, "the only one");
    };
    let (a, b) = (key(best), key(second));
    let reason = if a.0 != b.0 {
        "in the main worktree"
    } else if a.1 != b.1 {
        "tracked by git"
    } else if a.2 != b.2 {
        "not a backup-looking name"
    } else if a.3 != b.3 {
        "shortest path"
    } else if a.4 != b.4 {
        "oldest"
    } else {
        "first by name"
    };
    (best, reason)
}
