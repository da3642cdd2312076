//! Tier 3: scripts that are nearly the same, found without comparing every pair.
//!
//! Each script becomes a set of 5-token shingles; a one-permutation MinHash signature
//! (128 bins) is cut into 16 bands of 8 rows, and only scripts that share a band bucket are
//! compared — on the exact Jaccard similarity of their shingle sets, so the threshold is exact.
//! With 16×8 bands a pair at similarity 0.85 is a candidate with probability > 0.99.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

pub const SHINGLE_TOKENS: usize = 5;
const BINS: usize = 128;
const BANDS: usize = 16;
const ROWS: usize = BINS / BANDS;

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: spreads a combined hash over all 64 bits.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Sorted, distinct hashes of every run of `SHINGLE_TOKENS` consecutive tokens.
pub fn shingles(units: &[&[u8]]) -> Vec<u64> {
    let hashes: Vec<u64> = units.iter().map(|u| xxh3_64(u)).collect();
    let mut out: Vec<u64> = if hashes.len() <= SHINGLE_TOKENS {
        if hashes.is_empty() {
            Vec::new()
        } else {
            vec![hashes.iter().fold(0, |h, &t| mix(h ^ t))]
        }
    } else {
        hashes
            .windows(SHINGLE_TOKENS)
            .map(|w| w.iter().fold(0u64, |h, &t| mix(h.rotate_left(17) ^ t)))
            .collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// One-permutation MinHash: the top bits pick a bin, the rest compete for its minimum; empty
/// bins borrow from the next filled one so short scripts still get a full signature.
fn signature(shingles: &[u64]) -> [u64; BINS] {
    let mut sig = [u64::MAX; BINS];
    for &s in shingles {
        let h = mix(s ^ 0x5851_f42d_4c95_7f2d);
        let bin = (h >> 57) as usize;
        let value = h & ((1 << 57) - 1);
        if value < sig[bin] {
            sig[bin] = value;
        }
    }
    if shingles.is_empty() {
        return sig;
    }
    let filled = sig;
    for i in 0..BINS {
        if filled[i] == u64::MAX {
            let mut j = (i + 1) % BINS;
            let mut step = 1u64;
            while filled[j] == u64::MAX {
                j = (j + 1) % BINS;
                step += 1;
            }
            sig[i] = mix(filled[j] ^ step);
        }
    }
    sig
}

pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common as f64 / (a.len() + b.len() - common) as f64
}

/// Every pair (by index into `sets`) whose similarity is at least `threshold`.
pub fn similar_pairs(sets: &[&[u64]], threshold: f64) -> Vec<(usize, usize, f64)> {
    let signatures: Vec<[u64; BINS]> = sets.par_iter().map(|s| signature(s)).collect();
    let mut candidates: HashSet<(usize, usize)> = HashSet::new();
    for band in 0..BANDS {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, sig) in signatures.iter().enumerate() {
            if sets[i].is_empty() {
                continue;
            }
            let rows = &sig[band * ROWS..(band + 1) * ROWS];
            let key = rows.iter().fold(band as u64, |h, &r| mix(h ^ r));
            buckets.entry(key).or_default().push(i);
        }
        // A star and a chain per bucket: linear in its size, yet every member meets others.
        for members in buckets.values().filter(|m| m.len() > 1) {
            for k in 1..members.len() {
                candidates.insert((members[0], members[k]));
                candidates.insert((members[k - 1], members[k]));
            }
        }
    }
    let candidates: Vec<(usize, usize)> = candidates.into_iter().collect();
    let mut pairs: Vec<(usize, usize, f64)> = candidates
        .par_iter()
        .filter_map(|&(a, b)| {
            let (small, large) = (
                sets[a].len().min(sets[b].len()),
                sets[a].len().max(sets[b].len()),
            );
            if (small as f64) < threshold * large as f64 {
                return None; // Jaccard can never exceed |small| / |large|.
            }
            let s = jaccard(sets[a], sets[b]);
            (s >= threshold).then_some((a.min(b), a.max(b), s))
        })
        .collect();
    pairs.sort_by_key(|x| (x.0, x.1));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<u64> {
        let units: Vec<&[u8]> = text.split_whitespace().map(str::as_bytes).collect();
        shingles(&units)
    }

    #[test]
    fn a_small_edit_is_near_and_a_different_script_is_not() {
        let base: String = (0..200).map(|i| format!("echo line{i} ; ")).collect();
        let edited = base.replace("line100 ", "changed ");
        let other: String = (0..200).map(|i| format!("rm -f file{i} ; ")).collect();
        let sets = [words(&base), words(&edited), words(&other)];
        let refs: Vec<&[u64]> = sets.iter().map(Vec::as_slice).collect();
        let pairs = similar_pairs(&refs, 0.85);
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        assert_eq!((pairs[0].0, pairs[0].1), (0, 1));
        assert!(pairs[0].2 > 0.9 && pairs[0].2 < 1.0);
    }
}
